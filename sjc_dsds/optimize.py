"""The SJC loop with D-SDS: RunState, one `sjc_step`, and `run_sjc` with logging and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sjc_dsds.cameras import TrainView, sample_train_view
from sjc_dsds.checkpoint import (
    Checkpoint,
    load_newest_readable,
    prune_checkpoints,
    save_checkpoint,
)
from sjc_dsds.config import SJCConfig, dump_config, load_config, load_config_text, resume_changes
from sjc_dsds.errors import CheckpointError, ConfigError, NonFiniteError, RunStopped, UserError
from sjc_dsds.evaluate import final_outputs
from sjc_dsds.families import build_score_model, build_view_probe
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.losses import center_depth_loss, emptiness_loss, emptiness_weight_at
from sjc_dsds.progress import progress as progress_bar
from sjc_dsds.prompts import (
    ViewPrompts,
    build_view_prompts,
    format_prompts_report,
    prompts_record,
)
from sjc_dsds.provenance import collect_provenance
from sjc_dsds.render import RenderOutput, render_view
from sjc_dsds.run_dir import (
    MetricsLog,
    RunDir,
    RunLock,
    append_jsonl,
    check_run_dir,
    create_run_dir,
    default_run_dir,
    now_iso,
    remove_stale_temporaries,
    write_config,
    write_json,
    write_status,
)
from sjc_dsds.runtime import RandomStreams, resolve_device, seed_everything
from sjc_dsds.score import Conditioning, ScoreModel, sample_train_sigma, sjc_score
from sjc_dsds.score_debiasing import clip_score, score_threshold
from sjc_dsds.snapshots import save_snapshot, snapshot_caption
from sjc_dsds.stopping import EXIT_INTERRUPTED, StopRequest
from sjc_dsds.tensorboard_log import TensorBoardLog, require_tensorboard
from sjc_dsds.threads import configure_threads

logger = logging.getLogger(__name__)


def _view_prompts(
    cfg: SJCConfig, device: torch.device, saved: Path | None, model: ScoreModel | None = None
) -> tuple[ViewPrompts, dict[str, Any]]:
    """Per-view prompt texts: a resumed run's prompts.json, else built (and debiased)."""
    if saved is not None and saved.exists():
        try:
            record = json.loads(saved.read_text())
            return ViewPrompts.from_json(record["view_prompts"]), record
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            problem = f"{error.__class__.__name__}: {error}".splitlines()[0]
            raise ConfigError(
                f"--resume: {saved} is corrupt ({problem}); restore it or start a new run"
            ) from None
    probe = build_view_probe(cfg) if cfg.prompt_debias else None
    prompts, debias = build_view_prompts(cfg, device, probe, model)
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
    streams: RandomStreams
    step: int = 0
    prompts_record: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Random-stream states as of the last completed step (what a checkpoint must hold).
    completed_streams: dict[str, torch.Tensor] = field(default_factory=dict)
    # True while the parameters are being updated: a checkpoint then would mix two steps.
    updating: bool = False
    # The renderer's path: None picks by device (fixed-shape on CUDA, packed elsewhere).
    render_fixed_shape: bool | None = None
    # Optional map (score, step) -> score applied after clipping (benchmarks: a norm-matched arm).
    score_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    # Optional conditioning of each training view in place of its label's prompt (benchmarks:
    # an oracle that knows the exact camera, which a view word cannot say).
    view_condition: Callable[[TrainView], Conditioning] | None = None

    @classmethod
    def create(
        cls, cfg: SJCConfig, model: ScoreModel | None = None, saved_prompts: Path | None = None
    ) -> RunState:
        """Fresh state: seeded field, Adamax with SJC's groups, score model and view prompts."""
        configure_threads(cfg.threads)
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        streams = RandomStreams.from_seed(cfg.seed)
        cpu = torch.device("cpu")
        field = VoxelRadianceField.from_config(cfg.vox, cpu, streams.field).to(device)
        optimizer = torch.optim.Adamax(field.param_groups(cfg.lr, cfg.bg_lr), lr=cfg.lr)
        model = model if model is not None else build_score_model(cfg, device)
        prompts, record = _view_prompts(cfg, device, saved_prompts, model)
        state = cls(cfg, device, field, optimizer, model, prompts, streams, 0, record)
        state.completed_streams = streams.get_state()
        return state

    def restore(self, checkpoint: Checkpoint, source: Path | str = "checkpoint") -> None:
        """Load field, optimiser, random streams and step from a checkpoint of the same run."""
        saved = load_config_text(checkpoint.config_yaml)
        if saved.vox != self.cfg.vox:
            raise CheckpointError(f"{source}: its --vox.* config differs from this run's")
        self.field.load_state_dict(checkpoint.field_state)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.streams.set_state(checkpoint.stream_states)
        self.completed_streams = self.streams.get_state()
        self.step = checkpoint.step

    def apply_update(self) -> None:
        """Adamax step, then advance the step counter with the random streams' states."""
        self.updating = True
        self.optimizer.step()
        self.step += 1
        self.completed_streams = self.streams.get_state()
        self.updating = False

    def save(self, run: RunDir) -> Path:
        """Checkpoint the state after `self.step` completed steps, then prune older ones."""
        path = run.checkpoint_path(self.step)
        save_checkpoint(
            path,
            self.step,
            self.field,
            self.optimizer,
            self.completed_streams,
            dump_config(self.cfg),
        )
        prune_checkpoints(run, self.cfg.keep_checkpoints, self.cfg.n_steps)
        return path


def _elapsed(state: RunState, name: str, start: float) -> float:
    """Record a stage's wall time; the device is synchronised only with --time_stages True."""
    if state.cfg.time_stages and state.device.type == "cuda":
        torch.cuda.synchronize(state.device)
    now = time.perf_counter()
    state.timings[name] = now - start
    return now


def sjc_step(state: RunState) -> tuple[dict[str, Any], TrainView, RenderOutput]:
    """One SJC update at `state.step`: render, noise, denoise, score, clip, chain, regularise, step.

    Advances `state.step`, so a loop of `sjc_step(state)` calls equals `run_sjc`.
    """
    cfg, streams, step, model = state.cfg, state.streams, state.step, state.model
    if cfg.vox.alpha_mask and step % cfg.vox.alpha_mask_every == 0:
        state.field.update_alpha_mask()
    start = time.perf_counter()

    # Render the field from this step's random camera (docs/method.md A.8).
    view = sample_train_view(cfg.pose, streams.camera)
    out = render_view(state.field, view.camera.to(state.device), state.render_fixed_shape)
    start = _elapsed(state, "time_render", start)

    # Noise the render at a DDPM level t ~ U{10..969} and denoise it with the view's prompt.
    t, sigma = sample_train_sigma(model.sigmas, streams.noise)
    noise = torch.randn(out.image.shape, generator=streams.noise).to(state.device)
    render = out.image.detach()
    noised = render + sigma * noise
    with torch.no_grad():
        if state.view_condition is not None:
            cond = state.view_condition(view)
        else:
            cond = model.condition(state.prompts.text(view.label))
        denoised = model.denoise(noised, sigma, cond).to(render.dtype)
        # SJC's score, checked before D-SDS clips it elementwise (docs/method.md A.4, B.2).
        score = sjc_score(render, noised, denoised, sigma, variance_reduced=cfg.var_red)
        finite = torch.isfinite(score).all()
        threshold = score_threshold(
            step, cfg.n_steps, cfg.score_thres, cfg.score_dynamic, cfg.score_thres_start
        )
        score, clipped_frac = clip_score(score, threshold)
        if state.score_transform is not None:
            score = state.score_transform(score, step)
    start = _elapsed(state, "time_score", start)

    # Regularisers, then one host read for the finiteness guard and every logged statistic.
    empty_weight, regulariser, losses = regularisers(cfg, step, out)
    stats = torch.stack([clipped_frac, score.abs().mean(), *losses, out.opacity.detach().mean()])
    finite = finite & torch.isfinite(regulariser)
    values = torch.cat([finite.float().reshape(1), stats]).tolist()
    if not values[0]:
        raise NonFiniteError(
            f"non-finite score or loss at step {step} (sigma {sigma:.4g}, view {view.label})"
        )

    # Chain rule through the renderer: the image receives -score as its gradient.
    state.optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward([out.image, regulariser], [-score, torch.ones_like(regulariser)])
    start = _elapsed(state, "time_backward", start)
    state.apply_update()
    _elapsed(state, "time_optimizer", start)
    record = {"step": step, "view": view.label, "azimuth_deg": round(view.azimuth_deg, 3)}
    record.update(elevation_deg=round(view.elevation_deg, 3), t=t, sigma=sigma)
    record.update(score_threshold=threshold, emptiness_weight=empty_weight)
    return {**record, **dict(zip(STEP_STATISTICS, values[1:])), **state.timings}, view, out


# Statistics of a step read from the device together with its finiteness (one host sync).
STEP_STATISTICS = (
    "score_clipped_frac",
    "score_abs_mean",
    "loss_emptiness",
    "loss_depth",
    "opacity_mean",
)


def regularisers(
    cfg: SJCConfig, step: int, out: RenderOutput
) -> tuple[float, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """SJC's emptiness loss (boosted after emptiness_step) plus the optional centre-depth loss.

    Returns the emptiness weight at `step`, the weighted sum to backpropagate, and the two
    detached losses for logging (docs/method.md A.7).
    """
    empty_weight = emptiness_weight_at(
        step, cfg.n_steps, cfg.emptiness_weight, cfg.emptiness_step, cfg.emptiness_multiplier
    )
    loss_empty = emptiness_loss(out.weights, out.n_samples_dense, cfg.emptiness_scale)
    loss_depth = center_depth_loss(out.depth) if cfg.depth_weight > 0 else out.depth.new_zeros(())
    regulariser = empty_weight * loss_empty + cfg.depth_weight * loss_depth
    return empty_weight, regulariser, (loss_empty.detach(), loss_depth.detach())


@dataclass(frozen=True)
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    final_step: int
    metrics: dict[str, Any]
    final_metrics: dict[str, Any] = field(default_factory=dict)


def _save_snapshot(
    state: RunState, run: RunDir, out: RenderOutput, metrics: dict[str, Any], board: TensorBoardLog
) -> None:
    """Labelled images/step_N.png, images/view_step_N.png (render | depth), raw depth .npy."""
    with torch.no_grad():
        rgb = state.model.decode(out.image.detach())[0].float().cpu()
    depth = out.depth[0, 0].detach().cpu()
    save_snapshot(run.images, metrics["step"], rgb, depth, snapshot_caption(metrics), state.cfg)
    board.image("snapshot", rgb, metrics["step"])


def _final_outputs(state: RunState, run: RunDir) -> dict[str, Any]:
    """Test orbit, then the optional high-res orbit, mesh and metrics; orbit to TensorBoard."""

    final = final_outputs(state.field, state.model, state.cfg, run.root, run.test)
    board = TensorBoardLog(run.root / "tensorboard", state.cfg.log.tensorboard)
    board.orbit(run.test / "frames", state.step)
    board.scalars({"step": state.step, **{f"final/{key}": v for key, v in final.items()}})
    board.close()
    return final


def _record_invocation(run: RunDir, cfg: SJCConfig, kind: str, changes: dict[str, Any]) -> None:
    """Append this invocation to history.jsonl (and save provenance.json on a new run)."""
    provenance = collect_provenance(resolve_device(cfg.device))
    if kind == "start":
        write_json(run.root / "provenance.json", provenance)
    record = {"time": now_iso(), "kind": kind, "changes": changes, "provenance": provenance}
    append_jsonl(run.history, record)


def _prepare_resume(run: RunDir, state: RunState, cfg: SJCConfig, changes: dict[str, Any]) -> None:
    """Restore the newest readable checkpoint (if any) and write the allowed config changes."""
    paths = run.checkpoint_paths()
    if paths:
        checkpoint = load_newest_readable(paths)
        state.restore(checkpoint, source=paths[-1])
    else:
        logger.info("--resume %s: no checkpoint yet; starting from step 0", run.root)
    if state.step > cfg.n_steps:
        raise ConfigError(f"--n_steps {cfg.n_steps} is below the run's step {state.step}")
    if changes:
        write_config(run, cfg)


def run_sjc(
    cfg: SJCConfig,
    resume: bool = False,
    overwrite: bool = False,
    model: ScoreModel | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> RunResult:
    """Turn `cfg.prompt` into a voxel field; writes the run directory and returns its summary.

    `model` reuses an already loaded score model (sweeps); `stop_after` ends this session after
    that many steps with a checkpoint. Setting `stop` (or SIGTERM, SIGUSR1, Ctrl-C) ends it
    after the current step with a checkpoint and raises RunStopped.
    """
    root = Path(cfg.out_dir) if cfg.out_dir else default_run_dir(cfg)
    cfg = cfg.model_copy(update={"out_dir": str(root)})
    # Fail before writing anything: the run directory, then the models (slow, may be missing).
    check_run_dir(root, resume=resume, overwrite=overwrite)
    require_tensorboard(cfg.log.tensorboard)
    changes = resume_changes(load_config(RunDir(root).config), cfg) if resume else {}
    state = RunState.create(cfg, model, saved_prompts=RunDir(root).prompts if resume else None)
    run = create_run_dir(root, cfg, resume=resume, overwrite=overwrite)
    lock = RunLock(run).acquire()
    try:
        remove_stale_temporaries(run)
        if resume:
            _prepare_resume(run, state, cfg, changes)
        _record_invocation(run, cfg, "resume" if resume else "start", changes)
        write_json(run.prompts, state.prompts_record)
        with StopRequest(stop) as request:
            return _train_and_evaluate(state, run, stop_after, progress, request)
    finally:
        lock.release()


def _train_and_evaluate(
    state: RunState, run: RunDir, stop_after: int | None, progress: bool, request: StopRequest
) -> RunResult:
    """The loop of `run_sjc`: status records, a checkpoint on every way out, then the orbit."""
    cfg = state.cfg
    write_status(run, "running", state.step, cfg.n_steps)
    log = MetricsLog(run.metrics, start_step=state.step)
    end = cfg.n_steps if stop_after is None else min(cfg.n_steps, state.step + stop_after)
    bar = progress_bar(
        range(state.step, end), initial=state.step, total=cfg.n_steps, disable=not progress
    )
    bar.set_description(cfg.prompt[:30])
    metrics: dict[str, Any] = {}
    board = TensorBoardLog(run.root / "tensorboard", cfg.log.tensorboard)
    try:
        for step in bar:
            if request.event.is_set():
                raise _stopped(state, run, request)
            metrics, _, out = sjc_step(state)
            if step % cfg.log_every == 0 or state.step == cfg.n_steps:
                log.write(metrics)
                board.scalars(metrics)
            bar.set_postfix(
                empty=f"{metrics['loss_emptiness']:.3g}",
                thres=metrics["score_threshold"],
                clip=f"{metrics['score_clipped_frac']:.2f}",
            )
            if step % cfg.vis_interval == 0 or state.step == cfg.n_steps:
                _save_snapshot(state, run, out, metrics, board)
            if state.step % cfg.save_interval == 0 and state.step < end:
                state.save(run)
        if request.event.is_set() and state.step < cfg.n_steps:
            raise _stopped(state, run, request)
    except KeyboardInterrupt:
        if state.updating:
            logger.warning("interrupted during a parameter update: kept the previous checkpoint")
        else:
            path = state.save(run)
            logger.warning("interrupted: saved %s; continue with --resume %s", path, run.root)
        write_status(run, "stopped", state.step, cfg.n_steps, "interrupted", EXIT_INTERRUPTED)
        raise
    except NonFiniteError as error:
        path = state.save(run)
        message = f"{error}; stopped with the last good state in {path}"
        write_status(run, "failed", state.step, cfg.n_steps, message, 1)
        raise NonFiniteError(message) from error
    except (UserError, OSError, RuntimeError) as error:
        _try_status(run, "failed", state.step, cfg.n_steps, str(error).splitlines()[0])
        raise
    finally:
        bar.close()
        log.close()
        board.close()
    return _finish(state, run, metrics)


def _stopped(state: RunState, run: RunDir, request: StopRequest) -> RunStopped:
    """Checkpoint the last completed step and describe the stop (the caller raises it)."""
    path = state.save(run)
    name = request.signal_name or "a stop request"
    message = (
        f"stopped by {name} after step {state.step}: saved {path.name}; "
        f"continue with --resume {run.root}"
    )
    write_status(run, "stopped", state.step, state.cfg.n_steps, message, request.exit_code)
    return RunStopped(message, str(run.root), state.step, request.exit_code)


def _try_status(run: RunDir, *args: Any) -> None:
    """Record a failure in status.json if the disk still lets us."""
    try:
        write_status(run, *args)
    except UserError:
        logger.warning("could not record the failure in %s", run.status)


def _finish(state: RunState, run: RunDir, metrics: dict[str, Any]) -> RunResult:
    """Final checkpoint, the final outputs once the run is complete, summary and status."""
    cfg = state.cfg
    state.save(run)
    finished = state.step >= cfg.n_steps
    final = _json_safe(_final_outputs(state, run)) if finished else {}
    # summary.json keeps the final metrics (orbit, ground truth, papers') apart from the last step.
    summary = {"final_step": state.step, "finished": finished}
    record = {**summary, "final_metrics": final, "last_step": _json_safe(metrics)}
    write_json(run.summary, record)
    write_status(run, "finished" if finished else "stopped", state.step, cfg.n_steps)
    return RunResult(run.root, state.step, {**summary, **metrics, **final}, final)


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in values.items()
    }
