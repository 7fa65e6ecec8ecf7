"""Render the test spiral of a field or a saved run: frames, depth, orbit.mp4 and orbit metrics;
plus the optional final outputs (high-resolution orbit, mesh, the papers' metrics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from sjc_dsds.cameras import spiral_cameras
from sjc_dsds.checkpoint import load_field
from sjc_dsds.config import SJCConfig, resume_changes
from sjc_dsds.families import build_score_model, extra_metrics
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import render_view
from sjc_dsds.run_dir import RunDir, append_jsonl, now_iso, write_json
from sjc_dsds.runtime import resolve_device
from sjc_dsds.score import ScoreModel
from sjc_dsds.threads import configure_threads
from sjc_dsds.visualize import depth_range, depth_to_rgb, save_png, side_by_side, write_video

logger = logging.getLogger(__name__)

VIDEO_FPS = 10
# Config entries an evaluation may take from the caller instead of the saved config.
EVAL_OVERRIDE_KEYS = ("eval", "metrics", "log", "export_mesh")


def orbit_l1_frame_difference(frames: torch.Tensor) -> float:
    """Mean absolute RGB change between consecutive orbit frames [n, 3, h, w] (lower = steadier).

    A cheap L1 stand-in, not A-LPIPS (that is `sjc_dsds.evaluate_metrics`).
    """
    if frames.shape[0] < 2:
        return 0.0
    return float((frames[1:] - frames[:-1]).abs().mean())


@torch.no_grad()
def render_orbit(
    field: VoxelRadianceField, model: ScoreModel, cfg: SJCConfig, out_dir: Path
) -> dict[str, Any]:
    """Render the spiral (docs/method.md A.10) into `out_dir`: frames, depth, movies, metrics."""
    device = next(field.parameters()).device
    near, far = depth_range(cfg.pose.R, cfg.vox.bbox_len)
    rgb_frames, panels = [], []
    for index, camera in enumerate(spiral_cameras(cfg.pose)):
        out = render_view(field, camera.to(device))
        rgb = model.decode(out.image)[0].float().cpu()
        depth = depth_to_rgb(out.depth[0, 0].cpu(), near, far)
        save_png(out_dir / "frames" / f"frame_{index:03d}.png", rgb)
        save_png(out_dir / "depth" / f"depth_{index:03d}.png", depth)
        rgb_frames.append(rgb)
        panels.append(side_by_side([rgb, depth]))
    write_video(out_dir / "orbit.mp4", rgb_frames, fps=VIDEO_FPS)
    write_video(out_dir / "orbit_depth.mp4", panels, fps=VIDEO_FPS)
    frames = torch.stack(rgb_frames)
    metrics: dict[str, Any] = {"orbit_l1_frame_difference": orbit_l1_frame_difference(frames)}
    metrics.update(extra_metrics(field, model, cfg, out_dir))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def final_outputs(
    field: VoxelRadianceField, model: ScoreModel, cfg: SJCConfig, run_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """The test orbit into `out_dir`, then what cfg asks for: high-resolution orbit
    (`--eval.highres`), mesh (`--export_mesh`) and metrics (`--metrics.compute`)."""
    metrics = render_orbit(field, model, cfg, out_dir)
    if cfg.eval.highres:
        from sjc_dsds.highres import render_highres_orbit

        metrics.update(render_highres_orbit(field, model, cfg, out_dir / "highres"))
    if cfg.export_mesh:
        from sjc_dsds.export import MeshExportError, export_mesh

        try:
            path = export_mesh(field, cfg, Path(run_dir) / "export", model.decode)
            logger.info("mesh written to %s", path)
        except MeshExportError as error:  # the run's other outputs still count
            logger.warning("mesh export skipped: %s (retry: python -m sjc_dsds.export)", error)
            metrics["mesh_export_error"] = str(error)
    if cfg.metrics.compute:
        from sjc_dsds.evaluate_metrics import compute_metrics

        device = field.raw_density.device
        metrics.update(compute_metrics(out_dir / "frames", cfg, cfg.metrics.compute, device))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def apply_eval_overrides(cfg: SJCConfig, overrides: Mapping[str, Any] | None) -> SJCConfig:
    """`cfg` with its eval/metrics/log groups and export_mesh taken from `overrides`: a group
    model replaces the saved group, a dict updates it; any other key is a ValueError."""
    if not overrides:
        return cfg
    unknown = sorted(set(overrides) - set(EVAL_OVERRIDE_KEYS))
    if unknown:
        raise ValueError(f"evaluation overrides only {EVAL_OVERRIDE_KEYS}, got {unknown}")
    data = cfg.model_dump()
    for key, value in overrides.items():
        if isinstance(value, BaseModel):
            data[key] = value.model_dump()
        elif isinstance(value, Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SJCConfig.model_validate(data)


def evaluate_run(
    run_dir: Path,
    model: ScoreModel | None = None,
    cfg: SJCConfig | None = None,
    cfg_overrides: Mapping[str, Any] | None = None,
    step: int | None = None,
) -> Path:
    """Final outputs of a run's checkpoint (newest, or `step`'s) into <run_dir>/test_step_N.

    `cfg` is the run's config with the evaluation overrides applied (see
    `config.SAFE_ON_RESUME`); `cfg_overrides` then replaces its `eval`, `metrics`, `log` and
    `export_mesh` (e.g. `{"eval": {"highres": True}}`). The changes go to history.jsonl.
    """
    run_dir = Path(run_dir)
    saved, field, step = load_field(run_dir, step=step)
    cfg = apply_eval_overrides(cfg if cfg is not None else saved, cfg_overrides)
    changes = resume_changes(saved, cfg)
    configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = model if model is not None else build_score_model(cfg, device)
    out_dir = run_dir / f"test_step_{step:07d}"
    final_outputs(field.to(device), model, cfg, run_dir, out_dir)
    record = {"time": now_iso(), "kind": "eval_only", "step": step, "changes": changes}
    append_jsonl(RunDir(run_dir).history, record)
    return out_dir
