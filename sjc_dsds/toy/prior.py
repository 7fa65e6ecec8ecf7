"""The biased captioned image prior: renders of a ground-truth scene from front-heavy cameras.

The world is fixed by `--toy.*` and by the constants below; it never depends on the run's seed,
so every run of a benchmark sees the same prior. Cameras follow SJC's training distribution
(docs/method.md A.8); a `front_bias` share of them is redrawn until it lands in the front quadrant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sjc_dsds.cameras import TrainView, sample_train_views
from sjc_dsds.config import SJCConfig
from sjc_dsds.runtime import make_generator
from sjc_dsds.toy.captions import Caption, CaptionProbe, view_words_from_config
from sjc_dsds.toy.scenes import SCENE_BUILDERS, Scene, build_scene, configured_scene_name
from sjc_dsds.toy.world import BACK_WORD_RATE, FRONT_WORD_RATE, WORLD_SEED


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


WordRates = Mapping[str, float]


def caption_for(
    view_label: str,
    scene: Scene,
    name_view: bool,
    draws: tuple[float, float],
    rates: tuple[WordRates, WordRates] = (FRONT_WORD_RATE, BACK_WORD_RATE),
) -> Caption:
    """The caption of one render: the front word with P(word | view) = rates[0][view], the back
    word with rates[1][view] (draws are two U(0, 1) numbers), then the noun; the view word when
    `name_view`. The words carry view information only statistically, as 'smiling' does for a
    text-to-image prior."""
    front = draws[0] < rates[0][view_label]
    back = draws[1] < rates[1][view_label]
    words = (scene.front_word,) * front + (scene.back_word,) * back + (scene.noun,)
    return Caption(words, view_label if name_view else None)


def plan_captions(
    views: list[TrainView],
    scenes: list[str],
    view_caption_frac: float,
    generator: torch.Generator,
    rates: tuple[WordRates, WordRates] = (FRONT_WORD_RATE, BACK_WORD_RATE),
) -> list[Caption]:
    """Stochastic captions of images with these views and scenes (see `caption_for`)."""
    n = len(views)
    name_view = (torch.rand(n, generator=generator) < view_caption_frac).tolist()
    draws = torch.rand(n, 2, generator=generator).tolist()
    built = {name: build_scene(name) for name in set(scenes)}
    return [
        caption_for(view.label, built[scene], named, (draw[0], draw[1]), rates)
        for view, scene, named, draw in zip(views, scenes, name_view, draws)
    ]


def plan_prior(cfg: SJCConfig, seed: int = WORLD_SEED) -> PriorPlan:
    """Cameras, scenes and captions of the prior of `cfg.toy` (no rendering; deterministic).

    `seed` defaults to the world's; another seed draws an independent corpus of the same world.
    """
    toy = cfg.toy
    target = configured_scene_name(toy)
    generator = make_generator(seed)
    views = sample_prior_views(toy.n_images, toy.front_bias, cfg, generator)
    distractor = (torch.rand(toy.n_images, generator=generator) < toy.distractor_frac).tolist()
    others = [name for name in SCENE_BUILDERS if name != target]
    picks = torch.randint(len(others), (toy.n_images,), generator=generator).tolist()
    scenes = [others[pick] if is_other else target for is_other, pick in zip(distractor, picks)]
    captions = plan_captions(views, scenes, toy.view_caption_frac, generator)
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
        images[indices] = render_scene_views(build_scene(scene_name), cameras, cfg, device).image
    return Prior(images.to(device), plan.captions, plan, view_words_from_config(cfg))


def world_hash() -> str:
    """A hash of the world's code: its constants, scenes, captions and prior sampling."""
    import hashlib
    import inspect
    import sys

    modules = [sys.modules[f"sjc_dsds.toy.{name}"] for name in ("world", "scenes", "captions")]
    modules.append(sys.modules[__name__])
    text = "\n".join(inspect.getsource(module) for module in modules)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prior_cache_key(cfg: SJCConfig) -> str:
    """A hash of everything that defines the prior of `cfg`: the world's code and the flags."""
    import hashlib

    parts = [world_hash(), cfg.toy.model_dump_json(), cfg.pose.model_dump_json()]
    parts.append(cfg.vox.model_dump_json())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def build_caption_probe(cfg: SJCConfig) -> CaptionProbe:
    """The caption probe of the world described by `cfg` (the toy family's view probe)."""
    return CaptionProbe(build_captions_from_config(cfg), view_words_from_config(cfg))
