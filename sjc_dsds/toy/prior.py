"""The biased captioned image prior: renders of a ground-truth scene from front-heavy cameras.

The world is fixed by `--toy.*` and by the constants below; it never depends on the run's seed,
so every run of a benchmark sees the same prior. Cameras follow SJC's training distribution
(spec A.8); a `front_bias` share of them is redrawn until it lands in the front quadrant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjc_dsds.cameras import TrainView, sample_train_views
from sjc_dsds.config import SJCConfig
from sjc_dsds.runtime import make_generator
from sjc_dsds.toy.captions import Caption, view_words_from_config
from sjc_dsds.toy.scenes import SCENE_BUILDERS, Scene, build_scene
from sjc_dsds.toy.world import WORLD_SEED


@dataclass(frozen=True)
class PriorPlan:
    """Everything about the prior except its pixels: per image a camera, a scene and a caption."""

    views: list[TrainView]
    scenes: list[str]
    captions: list[Caption]


@dataclass(frozen=True)
class Prior:
    """The rendered prior: images [n, 3, h, w] in [-1, 1] with their captions."""

    images: torch.Tensor
    captions: list[Caption]
    plan: PriorPlan
    view_words: dict[str, str]


def sample_prior_views(
    n_images: int, front_bias: float, cfg: SJCConfig, generator: torch.Generator
) -> list[TrainView]:
    """Cameras of the prior: SJC's distribution, with a `front_bias` share forced to be front.

    Each image is biased with probability `front_bias`; a biased image takes the next front view
    of a stream of SJC cameras, an unbiased one the next camera whatever its label.
    """
    biased = (torch.rand(n_images, generator=generator) < front_bias).tolist()
    chosen: list[TrainView] = []
    stream: list[TrainView] = []
    while len(chosen) < n_images:
        if not stream:
            stream = sample_train_views(4 * n_images, cfg.pose, generator)[::-1]
        view = stream.pop()
        if biased[len(chosen)] and view.label != "front":
            continue
        chosen.append(view)
    return chosen


def caption_for(view_label: str, scene: Scene, name_view: bool) -> Caption:
    """The caption of one render: the scene's front word if its front is seen, then its noun.

    The front word ('smiling' for faces) is written exactly when the view label is front, which
    is what makes it carry view information, as 'smiling' does for a text-to-image prior.
    """
    words = (scene.front_word, scene.noun) if view_label == "front" else (scene.noun,)
    return Caption(words, view_label if name_view else None)


def plan_prior(cfg: SJCConfig) -> PriorPlan:
    """Cameras, scenes and captions of the prior of `cfg.toy` (no rendering; deterministic)."""
    toy = cfg.toy
    generator = make_generator(WORLD_SEED)
    views = sample_prior_views(toy.n_images, toy.front_bias, cfg, generator)
    name_view = (torch.rand(toy.n_images, generator=generator) < toy.view_caption_frac).tolist()
    distractor = (torch.rand(toy.n_images, generator=generator) < toy.distractor_frac).tolist()
    others = [name for name in SCENE_BUILDERS if name != toy.scene]
    picks = torch.randint(len(others), (toy.n_images,), generator=generator).tolist()
    scenes = [others[pick] if is_other else toy.scene for is_other, pick in zip(distractor, picks)]
    built = {name: build_scene(name) for name in set(scenes)}
    captions = [
        caption_for(view.label, built[scene], named)
        for view, scene, named in zip(views, scenes, name_view)
    ]
    return PriorPlan(views, scenes, captions)


def build_captions_from_config(cfg: SJCConfig) -> list[Caption]:
    """Captions of the prior of `cfg.toy`, without rendering it (for the caption probe)."""
    return plan_prior(cfg).captions


def build_prior_from_config(cfg: SJCConfig, device: torch.device) -> Prior:
    """Plan and render the prior image set of `cfg.toy` at the run's render size."""
    from sjc_dsds.toy.ground_truth import render_scene_views

    plan = plan_prior(cfg)
    images = torch.empty(len(plan.views), 3, cfg.pose.rend_hw, cfg.pose.rend_hw)
    for scene_name in sorted(set(plan.scenes)):
        indices = [index for index, name in enumerate(plan.scenes) if name == scene_name]
        cameras = [plan.views[index].camera for index in indices]
        images[indices] = render_scene_views(scene_name, cameras, cfg, device).image
    return Prior(images.to(device), plan.captions, plan, view_words_from_config(cfg))
