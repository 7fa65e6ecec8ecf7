"""The arms of the Janus benchmark v2 and the loop that trains one of them (issue 14).

Every arm of a (scene, seed, guidance) cell starts from the same field and draws the same
cameras, noise levels and noises (one generator seeded by the run seed, consumed identically by
every arm), so differences between arms are paired. The loop is SJC's (`RunState` and
`sjc_step`), without a run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sjc_dsds.cameras import TrainView
from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.optimize import RunState, sjc_step
from sjc_dsds.prompts import ViewPrompts, build_view_prompts
from sjc_dsds.score import Conditioning, ScoreModel
from sjc_dsds.toy.captions import CaptionProbe
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.ground_truth import ground_truth_field
from sjc_dsds.toy.world import ORACLE_NEAREST_IMAGES

# D-SDS's Stable Diffusion values (docs/method.md B.3) for the score arms.
SCORE_THRES = 8.0


@dataclass(frozen=True)
class Arm:
    """One benchmark arm: flags over the world's, which probe debiases the prompt (None: no
    prompt debiasing, 'independent' or 'oracle'), whether the model sees the exact view
    (`exact_view_oracle`), and
    whether the score is rescaled to the dynamic-clipping arm's mean |score| each step."""

    name: str
    flags: dict[str, Any]
    probe: str | None = None
    oracle_views: bool = False
    norm_matched: bool = False


PLAIN = {"score_thres": 0.0}
DYNAMIC = {"score_thres": SCORE_THRES, "score_dynamic": True}
STATIC = {"score_thres": SCORE_THRES, "score_dynamic": False}

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("plain", PLAIN),
        Arm("score_dynamic", DYNAMIC),
        Arm("score_static", STATIC),
        Arm("score_norm_matched", PLAIN, norm_matched=True),
        Arm("prompt_independent", PLAIN, probe="independent"),
        Arm("prompt_oracle", PLAIN, probe="oracle"),
        Arm("both", DYNAMIC, probe="independent"),
        Arm("oracle_captions", PLAIN, oracle_views=True),
    )
}


@dataclass
class ArmRun:
    """A trained arm: its field and, per step, the mean |score| after clipping and the share
    of elements clipped."""

    field: VoxelRadianceField
    score_abs_mean: list[float]
    clipped_frac: list[float]


def norm_matching(target: list[float]) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """Score transform that rescales step s's score to mean |score| = target[s]."""

    def transform(score: torch.Tensor, step: int) -> torch.Tensor:
        return score * (target[step] / score.abs().mean().clamp(min=1e-12))

    return transform


def exact_view_oracle(model: ToyScoreModel) -> Callable[[TrainView], Conditioning]:
    """The oracle-caption arm's conditioning: each training view gets the prior images of the
    cameras nearest its own (`ToyScoreModel.condition_near_camera`)."""

    def condition(view: TrainView) -> Conditioning:
        return model.condition_near_camera(view.camera, ORACLE_NEAREST_IMAGES)

    return condition


def view_prompts(cfg: SJCConfig, device: torch.device, probe: CaptionProbe | None) -> ViewPrompts:
    """Plain view prompts, or debiased ones with `probe` (an arm's probe)."""
    if probe is None:
        return ViewPrompts.from_config(cfg)
    debias_cfg = cfg.model_copy(update={"prompt_debias": True})
    return build_view_prompts(debias_cfg, device, probe)[0]


def load_ground_truth(field: VoxelRadianceField, cfg: SJCConfig, scene: str) -> None:
    """Overwrite a training field's grids with the scene sampled at the field's resolution."""
    truth = ground_truth_field(scene, cfg, torch.device("cpu"), side=field.grid_size[0])
    with torch.no_grad():
        field.raw_density.copy_(truth.raw_density)
        field.feature_grid.copy_(truth.feature_grid)


def train_arm(
    cfg: SJCConfig,
    model: ScoreModel,
    prompts: ViewPrompts,
    start_from: str | None = None,
    score_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    view_condition: Callable[[TrainView], Conditioning] | None = None,
) -> ArmRun:
    """Run SJC for cfg.n_steps with these prompts (or `view_condition` of each view instead);
    `start_from` a scene starts at its ground truth instead of SJC's fog."""
    state = RunState.create(cfg.model_copy(update={"prompt_debias": False}), model)
    state.prompts = prompts
    state.score_transform = score_transform
    state.view_condition = view_condition
    if start_from is not None:
        load_ground_truth(state.field, cfg, start_from)
    score_abs, clipped = [], []
    for _ in range(cfg.n_steps):
        metrics, _, _ = sjc_step(state)
        score_abs.append(float(metrics["score_abs_mean"]))
        clipped.append(float(metrics["score_clipped_frac"]))
    return ArmRun(state.field, score_abs, clipped)
