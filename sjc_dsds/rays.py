"""Rays through a camera's pixels, their intersection with the scene box, and a render's output.

Shared by the packed renderer (`render.py`), the fixed-shape one (`render_fixed.py`) and the
dense reference (`render_reference.py`): the only code the reference shares with them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sjc_dsds.cameras import Camera

BACKGROUND_DEPTH = 10.0
# SJC replaces zero direction components by this before dividing (`ray_box_intersect`).
MIN_DIRECTION_COMPONENT = 1e-6


class RenderOutput(NamedTuple):
    """One rendered view.

    image: [1, c, height, width]; depth: [1, 1, height, width], expected distance with the
    background at BACKGROUND_DEPTH; opacity: [1, 1, height, width], sum of weights per ray;
    weights: weights of the evaluated samples (samples not listed weigh 0); n_samples_dense:
    k * n_rays of SJC's dense marching, the denominator of its emptiness mean.
    """

    image: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    weights: torch.Tensor
    n_samples_dense: int | torch.Tensor


def rays_from_camera(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres, row-major: origins [n_rays, 3], unit directions [n_rays, 3].

    Pixel (x, y) looks along ((x - cx) / f, (cy - y) / f, -1) in camera space (SJC's
    intrinsics, cx = width / 2 - 0.5, cy = height / 2 - 0.5), rotated by `cam_to_world`.
    """
    device, dtype = camera.device, camera.cam_to_world.dtype
    height, width, focal = camera.height, camera.width, camera.focal_px
    rows = torch.arange(height, device=device, dtype=dtype)
    cols = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    camera_directions = torch.stack(
        [
            (grid_x - (width / 2.0 - 0.5)) / focal,
            ((height / 2.0 - 0.5) - grid_y) / focal,
            -torch.ones_like(grid_x),
        ],
        dim=-1,
    ).reshape(-1, 3)
    cam_to_world = camera.cam_to_world
    directions = camera_directions @ cam_to_world[:3, :3].t()  # [n_rays, 3]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = cam_to_world[:3, 3].expand_as(directions).contiguous()
    return origins, directions


def intersect_box(
    origins: torch.Tensor, directions: torch.Tensor, bbox_len: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against [-bbox_len, bbox_len]^3: t_enter [n], t_exit [n], hit [n] bool.

    Both distances are clamped to >= 0 (nothing behind the origin is rendered; a camera inside
    the box starts at 0); a ray hits when t_enter < t_exit.
    """
    if origins.shape != directions.shape or origins.dim() != 2 or origins.shape[1] != 3:
        raise ValueError(
            f"origins and directions must both be [n_rays, 3], got {list(origins.shape)} "
            f"and {list(directions.shape)}"
        )
    safe = torch.where(
        directions == 0, torch.full_like(directions, MIN_DIRECTION_COMPONENT), directions
    )
    to_low = (-bbox_len - origins) / safe  # [n_rays, 3]
    to_high = (bbox_len - origins) / safe
    t_enter = torch.minimum(to_low, to_high).amax(dim=-1).clamp(min=0.0)
    t_exit = torch.maximum(to_low, to_high).amin(dim=-1).clamp(min=0.0)
    return t_enter, t_exit, t_enter < t_exit
