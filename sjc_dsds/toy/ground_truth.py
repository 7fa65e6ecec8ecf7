"""Ground-truth radiance fields of the toy scenes, their renders and the fixed evaluation orbit."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sjc_dsds.cameras import Camera, TrainView, eye_from_angles, look_at_batch, view_label
from sjc_dsds.config import SJCConfig, VoxConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import render_view
from sjc_dsds.toy.scenes import Scene, build_scene, configured_scene_name, sample_scene_grids
from sjc_dsds.toy.world import GROUND_TRUTH_GRID_SIZE, ORBIT_ELEVATION_DEG, ORBIT_N_VIEWS

# Colours are stored as logits of (rgb + 1) / 2; this keeps them finite for pure black/white.
COLOR_LIMIT = 0.995
# Smallest density written to the grid (softplus's inverse diverges at 0).
MIN_DENSITY = 1e-7


class ViewRenders(NamedTuple):
    """Renders of several views: image [n, 3, h, w] in [-1, 1] and opacity [n, 1, h, w]."""

    image: torch.Tensor
    opacity: torch.Tensor


def ground_truth_vox_config(cfg: SJCConfig, side: int = GROUND_TRUTH_GRID_SIZE) -> VoxConfig:
    """The run's field settings at a `side`^3 grid (default: the ground-truth resolution), with
    SJC's constant white background (no texture), colours through 2 sigmoid - 1, no alpha mask."""
    return cfg.vox.model_copy(
        update={
            "grid_size": (side, side, side),
            "model_type": "V_SJC",
            "c": 3,
            "blend_bg_texture": False,
            "alpha_mask": False,
        }
    )


def raw_density_from_density(density: torch.Tensor, density_shift: float) -> torch.Tensor:
    """Inverse of the density activation softplus(raw + shift) at d_scale 0."""
    density = density.clamp(min=MIN_DENSITY).double()
    return (torch.log(torch.expm1(density)) - density_shift).float()


def features_from_color(color: torch.Tensor) -> torch.Tensor:
    """Inverse of V_SJC's 2 sigmoid - 1 for colours in [-1, 1] (clamped to +-COLOR_LIMIT)."""
    return torch.logit((color.clamp(-COLOR_LIMIT, COLOR_LIMIT) + 1) / 2)


def ground_truth_field(
    scene: Scene | str,
    cfg: SJCConfig,
    device: torch.device,
    side: int = GROUND_TRUTH_GRID_SIZE,
) -> VoxelRadianceField:
    """The voxel field of a toy scene (or scene name), sampled at `side`^3 voxel centres."""
    scene = build_scene(scene) if isinstance(scene, str) else scene
    vox = ground_truth_vox_config(cfg, side)
    grids = sample_scene_grids(scene, side, vox.bbox_len)
    raw_density = raw_density_from_density(grids.density, vox.density_shift)
    features = features_from_color(grids.color)
    return VoxelRadianceField.from_grids(vox, raw_density.to(device), features.to(device), None)


@torch.no_grad()
def render_views(field: VoxelRadianceField, cameras: list[Camera]) -> ViewRenders:
    """Render a field from each camera (no gradients): [n, c, h, w] images, [n, 1, h, w] opacity."""
    device = next(field.parameters()).device
    images, opacities = [], []
    for camera in cameras:
        out = render_view(field, camera.to(device))
        images.append(out.image)
        opacities.append(out.opacity)
    return ViewRenders(torch.cat(images), torch.cat(opacities))


def render_scene_views(
    scene: Scene | str, cameras: list[Camera], cfg: SJCConfig, device: torch.device
) -> ViewRenders:
    """Ground-truth renders of a toy scene (or scene name) from each camera."""
    return render_views(ground_truth_field(scene, cfg, device), cameras)


def orbit_views(cfg: SJCConfig, n: int = ORBIT_N_VIEWS, offset: float = 0.5) -> list[TrainView]:
    """The fixed evaluation orbit: `n` azimuths (k + offset) * 360 / n at a fixed elevation,
    distance --pose.R, field of view --pose.FoV, labelled with SJC's view rule."""
    azimuth_deg = (torch.arange(n, dtype=torch.float64) + offset) * 360.0 / n
    polar_rad = torch.full((n,), math.radians(90.0 - ORBIT_ELEVATION_DEG), dtype=torch.float64)
    eyes = eye_from_angles(azimuth_deg, polar_rad, cfg.pose.R)
    poses = look_at_batch(
        eyes,
        torch.zeros(3, dtype=torch.float64),
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
    )
    hw = cfg.pose.rend_hw
    return [
        TrainView(
            Camera(poses[index], cfg.pose.FoV, hw, hw),
            float(azimuth_deg[index]),
            ORBIT_ELEVATION_DEG,
            view_label(float(azimuth_deg[index]), ORBIT_ELEVATION_DEG, cfg.pose),
        )
        for index in range(n)
    ]


def ground_truth_orbit(cfg: SJCConfig, device: torch.device | None = None) -> torch.Tensor:
    """Ground-truth RGB of the configured scene on the evaluation orbit: [n, 3, h, w] in [0, 1]."""
    device = device or torch.device("cpu")
    cameras = [view.camera for view in orbit_views(cfg)]
    renders = render_scene_views(configured_scene_name(cfg.toy), cameras, cfg, device)
    return ((renders.image + 1) / 2).clamp(0, 1)
