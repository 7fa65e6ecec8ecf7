"""The toy family's comparison picture: the trained field above the ground truth on the orbit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import render_view
from sjc_dsds.snapshots import label_image, upscale
from sjc_dsds.toy.ground_truth import ground_truth_orbit, orbit_views
from sjc_dsds.visualize import save_png, side_by_side


@torch.no_grad()
def save_toy_comparison(
    field: VoxelRadianceField,
    decode: Callable[[torch.Tensor], torch.Tensor],
    cfg: SJCConfig,
    path: Path,
) -> None:
    """The field (top) and the toy ground truth (bottom) on the fixed evaluation orbit."""
    device = field.raw_density.device
    views = orbit_views(cfg)
    renders = [decode(render_view(field, view.camera.to(device)).image)[0].cpu() for view in views]
    truth = list(ground_truth_orbit(cfg, device).cpu())
    side = cfg.eval.snapshot_side // 2
    top = side_by_side([upscale(image, side) for image in renders])
    bottom = side_by_side([upscale(image, side) for image in truth])
    labels = ", ".join(f"{view.label} {view.azimuth_deg:.0f}" for view in views)
    picture = label_image(torch.cat([top, bottom], dim=-2), ["top: run, bottom: truth", labels])
    save_png(path, picture)
