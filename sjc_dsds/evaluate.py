"""Render the test spiral of a field or a saved run: frames, depth, orbit.mp4 and orbit metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sjc_dsds.cameras import spiral_cameras
from sjc_dsds.checkpoint import load_newest_readable
from sjc_dsds.config import SJCConfig, load_config_text, resume_changes
from sjc_dsds.errors import CheckpointError
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import render_view
from sjc_dsds.run_dir import RunDir, append_jsonl, now_iso, write_json
from sjc_dsds.runtime import make_generator, resolve_device
from sjc_dsds.score import ScoreModel
from sjc_dsds.visualize import depth_to_rgb, save_png, side_by_side, write_video

VIDEO_FPS = 10


def frame_difference(frames: torch.Tensor) -> float:
    """Mean absolute RGB change between consecutive orbit frames [n, 3, h, w] (lower = steadier)."""
    if frames.shape[0] < 2:
        return 0.0
    return float((frames[1:] - frames[:-1]).abs().mean())


@torch.no_grad()
def render_orbit(
    field: VoxelRadianceField, model: ScoreModel, cfg: SJCConfig, out_dir: Path
) -> dict[str, Any]:
    """Render the spiral (spec A.10) into `out_dir`: frames/, depth/, orbit.mp4, metrics.json."""
    device = next(field.parameters()).device
    rgb_frames, panels = [], []
    for index, camera in enumerate(spiral_cameras(cfg.pose)):
        out = render_view(field, camera.to(device))
        rgb = model.decode(out.image)[0].float().cpu()
        depth = depth_to_rgb(out.depth[0, 0].cpu())
        save_png(out_dir / "frames" / f"frame_{index:03d}.png", rgb)
        save_png(out_dir / "depth" / f"depth_{index:03d}.png", depth)
        rgb_frames.append(rgb)
        panels.append(side_by_side([rgb, depth]))
    write_video(out_dir / "orbit.mp4", rgb_frames, fps=VIDEO_FPS)
    write_video(out_dir / "orbit_depth.mp4", panels, fps=VIDEO_FPS)
    frames = torch.stack(rgb_frames)
    metrics: dict[str, Any] = {"orbit_frame_difference": frame_difference(frames)}
    if cfg.family == "toy":
        from sjc_dsds.toy import ground_truth_metrics

        metrics.update(ground_truth_metrics(field, cfg))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def load_field(
    run_dir: Path, flag: str = "--eval_only"
) -> tuple[SJCConfig, VoxelRadianceField, int]:
    """Config, field (on CPU) and step of the newest readable checkpoint of a run directory."""
    run = RunDir(run_dir)
    paths = run.checkpoint_paths()
    if not paths:
        raise CheckpointError(f"{flag} {run_dir}: no checkpoint in {run.checkpoints}")
    checkpoint = load_newest_readable(paths, flag)
    cfg = load_config_text(checkpoint.config_yaml)
    field = VoxelRadianceField.from_config(cfg.vox, torch.device("cpu"), make_generator(0))
    field.load_state_dict(checkpoint.field_state)
    return cfg, field, checkpoint.step


def evaluate_run(
    run_dir: Path, model: ScoreModel | None = None, cfg: SJCConfig | None = None
) -> Path:
    """Render the orbit of a run's newest checkpoint into <run_dir>/test_step_N; returns it.

    `cfg` is the run's config with the evaluation overrides applied (see
    `config.SAFE_ON_RESUME`); the changes are recorded in the run's history.jsonl.
    """
    from sjc_dsds.optimize import build_score_model

    run_dir = Path(run_dir)
    saved, field, step = load_field(run_dir)
    changes = resume_changes(saved, cfg) if cfg is not None else {}
    cfg = cfg if cfg is not None else saved
    device = resolve_device(cfg.device)
    model = model if model is not None else build_score_model(cfg, device)
    out_dir = run_dir / f"test_step_{step:07d}"
    render_orbit(field.to(device), model, cfg, out_dir)
    record = {"time": now_iso(), "kind": "eval_only", "step": step, "changes": changes}
    append_jsonl(RunDir(run_dir).history, record)
    return out_dir
