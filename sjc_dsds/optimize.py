"""The SJC loop with D-SDS: RunState, one `sjc_step`, and `run_sjc` with logging and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from tqdm.auto import tqdm

from sjc_dsds.cameras import TrainView, sample_train_view
from sjc_dsds.checkpoint import load_checkpoint, save_checkpoint
from sjc_dsds.config import SJCConfig, dump_config, load_config_text
from sjc_dsds.errors import CheckpointError, NonFiniteError
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.losses import center_depth_loss, emptiness_loss, emptiness_weight_at
from sjc_dsds.prompts import (
    ViewPrompts,
    build_view_prompts,
    format_prompts_report,
    prompts_record,
)
from sjc_dsds.render import RenderOutput, render_view
from sjc_dsds.run_dir import (
    MetricsLog,
    RunDir,
    check_run_dir,
    create_run_dir,
    default_run_dir,
    write_json,
)
from sjc_dsds.runtime import make_generator, resolve_device, seed_everything
from sjc_dsds.score import ScoreModel, sample_train_sigma, sjc_score
from sjc_dsds.score_debiasing import clip_score, score_threshold
from sjc_dsds.visualize import depth_to_rgb, save_png, side_by_side

logger = logging.getLogger(__name__)


def _build_stable_diffusion(cfg: SJCConfig, device: torch.device) -> ScoreModel:
    from sjc_dsds.stable_diffusion import StableDiffusionDenoiser

    return StableDiffusionDenoiser.from_config(cfg.sd, device)


def _build_toy(cfg: SJCConfig, device: torch.device) -> ScoreModel:
    from sjc_dsds.toy import ToyScoreModel

    return ToyScoreModel.from_config(cfg, device)


# Score-model families by `--family` name; a new family adds one builder here.
SCORE_MODEL_BUILDERS: Mapping[str, Callable[[SJCConfig, torch.device], ScoreModel]] = (
    MappingProxyType({"sd": _build_stable_diffusion, "toy": _build_toy})
)


def build_score_model(cfg: SJCConfig, device: torch.device) -> ScoreModel:
    """The score model named by `cfg.family`, loaded onto `device`."""
    return SCORE_MODEL_BUILDERS[cfg.family](cfg, device)


def _view_prompts(
    cfg: SJCConfig, device: torch.device, saved: Path | None
) -> tuple[ViewPrompts, dict[str, Any]]:
    """Per-view prompt texts: a resumed run's prompts.json, else built (and debiased)."""
    if saved is not None and saved.exists():
        record = json.loads(saved.read_text())
        return ViewPrompts.from_json(record["view_prompts"]), record
    probe = None
    if cfg.prompt_debias and cfg.family == "toy":
        from sjc_dsds.toy import CaptionProbe

        probe = CaptionProbe.from_config(cfg)
    prompts, debias = build_view_prompts(cfg, device, probe)
    logger.info("%s", format_prompts_report(prompts, debias))
    return prompts, prompts_record(prompts, debias)


@dataclass
class RunState:
    """Everything that changes or is reused across steps of one run."""

    cfg: SJCConfig
    device: torch.device
    field: VoxelRadianceField
    optimizer: torch.optim.Optimizer
    model: ScoreModel
    prompts: ViewPrompts
    generator: torch.Generator
    step: int = 0
    prompts_record: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Optional map (score, step) -> score applied after clipping (benchmarks: a norm-matched arm).
    score_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    @classmethod
    def create(
        cls, cfg: SJCConfig, model: ScoreModel | None = None, saved_prompts: Path | None = None
    ) -> RunState:
        """Fresh state: seeded field, Adamax with SJC's groups, score model and view prompts."""
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        generator = make_generator(cfg.seed)
        field = VoxelRadianceField.from_config(cfg.vox, torch.device("cpu"), generator).to(device)
        optimizer = torch.optim.Adamax(field.param_groups(cfg.lr, cfg.bg_lr), lr=cfg.lr)
        model = model if model is not None else build_score_model(cfg, device)
        prompts, record = _view_prompts(cfg, device, saved_prompts)
        return cls(cfg, device, field, optimizer, model, prompts, generator, 0, record)

    def restore(self, checkpoint_path: Path) -> None:
        """Load field, optimiser, generator and step from a checkpoint of the same config."""
        checkpoint = load_checkpoint(checkpoint_path)
        saved = load_config_text(checkpoint.config_yaml)
        if saved.vox != self.cfg.vox:
            raise CheckpointError(f"{checkpoint_path}: its --vox.* config differs from this run's")
        self.field.load_state_dict(checkpoint.field_state)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.generator.set_state(checkpoint.generator_state)
        self.step = checkpoint.step

    def save(self, run: RunDir) -> Path:
        """Checkpoint the state after `self.step` steps."""
        path = run.checkpoint_path(self.step)
        save_checkpoint(
            path, self.step, self.field, self.optimizer, self.generator, dump_config(self.cfg)
        )
        return path


def _elapsed(state: RunState, name: str, start: float) -> float:
    if state.device.type == "cuda":
        torch.cuda.synchronize(state.device)
    now = time.perf_counter()
    state.timings[name] = now - start
    return now


def sjc_step(state: RunState, step: int) -> tuple[dict[str, Any], TrainView, RenderOutput]:
    """One SJC update: render a random view, score it, clip the score, chain it into the grids."""
    cfg, generator = state.cfg, state.generator
    start = time.perf_counter()

    # Render the field from this step's random camera (spec A.8).
    view = sample_train_view(cfg.pose, generator)
    out = render_view(state.field, view.camera.to(state.device))
    start = _elapsed(state, "time_render", start)

    # Noise the render at a DDPM level t ~ U{10..969} and denoise it with the view's prompt.
    t, sigma = sample_train_sigma(state.model.sigmas, generator)
    noise = torch.randn(out.image.shape, generator=generator).to(state.device)
    render = out.image.detach()
    noised = render + sigma * noise
    cond = state.model.condition(state.prompts.text(view.label), cfg.sd.negative_prompt)
    with torch.no_grad():
        denoised = state.model.denoise(noised, sigma, cond).to(render.dtype)
        # SJC's score estimate, clipped elementwise by this step's D-SDS threshold (spec B).
        score = sjc_score(render, noised, denoised, sigma, variance_reduced=cfg.var_red)
        threshold = score_threshold(
            step, cfg.n_steps, cfg.score_thres, cfg.score_dynamic, cfg.score_thres_start
        )
        score, clipped_frac = clip_score(score, threshold)
        if state.score_transform is not None:
            score = state.score_transform(score, step)
    start = _elapsed(state, "time_score", start)

    # Regularisers: emptiness (boosted after emptiness_step) and the optional centre-depth loss.
    empty_weight = emptiness_weight_at(
        step, cfg.n_steps, cfg.emptiness_weight, cfg.emptiness_step, cfg.emptiness_multiplier
    )
    loss_empty = emptiness_loss(out.weights, out.n_samples_dense, cfg.emptiness_scale)
    loss_depth = center_depth_loss(out.depth) if cfg.depth_weight > 0 else out.depth.new_zeros(())
    regulariser = empty_weight * loss_empty + cfg.depth_weight * loss_depth

    # One host sync per step: the finiteness guard and the logged statistics read together.
    stats = torch.stack(
        [
            torch.isfinite(score).all().float() * torch.isfinite(regulariser).float(),
            clipped_frac,
            score.abs().mean(),
            loss_empty.detach(),
            loss_depth.detach(),
            out.opacity.detach().mean(),
        ]
    ).tolist()
    finite, clipped_frac, score_abs_mean, empty_value, depth_value, opacity_mean = stats
    if not finite:
        raise NonFiniteError(
            f"non-finite score or loss at step {step} (sigma {sigma:.4g}, view {view.label})"
        )

    # Chain rule through the renderer: the image receives -score as its gradient.
    state.optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward([out.image, regulariser], [-score, torch.ones_like(regulariser)])
    start = _elapsed(state, "time_backward", start)
    state.optimizer.step()
    _elapsed(state, "time_optimizer", start)

    metrics = {
        "step": step,
        "view": view.label,
        "azimuth_deg": round(view.azimuth_deg, 3),
        "elevation_deg": round(view.elevation_deg, 3),
        "t": t,
        "sigma": sigma,
        "score_threshold": threshold,
        "score_clipped_frac": clipped_frac,
        "score_abs_mean": score_abs_mean,
        "loss_emptiness": empty_value,
        "emptiness_weight": empty_weight,
        "loss_depth": depth_value,
        "opacity_mean": opacity_mean,
        **state.timings,
    }
    return metrics, view, out


@dataclass(frozen=True)
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    final_step: int
    metrics: dict[str, Any]


def _save_snapshot(state: RunState, run: RunDir, step: int, out: RenderOutput) -> None:
    """images/step_N.png (decoded render) and images/view_step_N.png (render | depth)."""
    with torch.no_grad():
        rgb = state.model.decode(out.image.detach())[0].float().cpu()
    depth = depth_to_rgb(out.depth[0, 0].cpu())
    save_png(run.images / f"step_{step:07d}.png", rgb)
    save_png(run.images / f"view_step_{step:07d}.png", side_by_side([rgb, depth]))


def run_sjc(
    cfg: SJCConfig,
    resume: bool = False,
    overwrite: bool = False,
    model: ScoreModel | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Turn `cfg.prompt` into a voxel field; writes the run directory and returns its summary.

    `model` reuses an already loaded score model (sweeps); `stop_after` ends this session after
    that many steps with a checkpoint, as an interruption would.
    """
    root = Path(cfg.out_dir) if cfg.out_dir else default_run_dir(cfg)
    cfg = cfg.model_copy(update={"out_dir": str(root)})
    # Fail before writing anything: the run directory, then the models (slow, may be missing).
    check_run_dir(root, resume=resume, overwrite=overwrite)
    state = RunState.create(cfg, model, saved_prompts=RunDir(root).prompts if resume else None)
    run = create_run_dir(root, cfg, resume=resume, overwrite=overwrite)
    if resume:
        state.restore(run.latest_checkpoint())
    write_json(run.prompts, state.prompts_record)

    log = MetricsLog(run.metrics, start_step=state.step)
    end = cfg.n_steps if stop_after is None else min(cfg.n_steps, state.step + stop_after)
    bar = tqdm(
        range(state.step, end),
        initial=state.step,
        total=cfg.n_steps,
        disable=not progress,
        mininterval=0.5,
    )
    bar.set_description(cfg.prompt[:30])
    metrics: dict[str, Any] = {}
    try:
        for step in bar:
            if cfg.vox.alpha_mask and step % cfg.vox.alpha_mask_every == 0:
                state.field.update_alpha_mask()
            metrics, _, out = sjc_step(state, step)
            state.step = step + 1
            if step % cfg.log_every == 0 or state.step == cfg.n_steps:
                log.write(metrics)
            bar.set_postfix(
                empty=f"{metrics['loss_emptiness']:.3g}",
                thres=metrics["score_threshold"],
                clip=f"{metrics['score_clipped_frac']:.2f}",
            )
            if step % cfg.vis_interval == 0 or state.step == cfg.n_steps:
                _save_snapshot(state, run, step, out)
            if state.step % cfg.save_interval == 0 and state.step < end:
                state.save(run)
    except KeyboardInterrupt:
        path = state.save(run)
        logger.warning("interrupted: saved %s; continue with --resume %s", path, run.root)
        raise
    except NonFiniteError as error:
        path = state.save(run)
        raise NonFiniteError(f"{error}; stopped with the last good state in {path}") from None
    finally:
        bar.close()
        log.close()
    state.save(run)
    if state.step >= cfg.n_steps:
        from sjc_dsds.evaluate import render_orbit

        metrics = {**metrics, **render_orbit(state.field, state.model, cfg, run.test)}
    summary = {"final_step": state.step, "finished": state.step >= cfg.n_steps, **metrics}
    write_json(run.summary, _json_safe(summary))
    return RunResult(run.root, state.step, summary)


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in values.items()
    }
