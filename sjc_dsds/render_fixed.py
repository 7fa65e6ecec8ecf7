"""Fixed-shape rendering for CUDA: padded samples and masks, no host reads, static shapes.

Every ray gets the same number of ticks, enough for the box's diagonal; ticks outside a ray's
box segment (or the alpha mask) are masked to density 0. Nothing depends on the data's values
for its shape, so the path needs no host synchronisation and suits CUDA graphs and
`torch.compile`. Selected by `render_view(..., fixed_shape=True)` on any device, so its logic
is tested on CPU tensors against the dense reference.
"""

from __future__ import annotations

import math

import torch

from sjc_dsds.cameras import Camera
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.grid_lookup import GridLookup
from sjc_dsds.rays import BACKGROUND_DEPTH, RenderOutput, intersect_box, rays_from_camera


def padded_tick_count(bbox_len: float, step: float) -> int:
    """Ticks per ray that cover any segment of the box [-bbox_len, bbox_len]^3 (its diagonal
    2 sqrt(3) bbox_len, plus one for float rounding)."""
    return int(2.0 * math.sqrt(3.0) * bbox_len / step) + 2


def render_view_fixed(field: VoxelRadianceField, camera: Camera) -> RenderOutput:
    """Render one view on a fixed [n_rays, k] sample grid; equals the dense reference.

    `weights` is [n_rays, k] with zeros at masked ticks, and `n_samples_dense` a 0-dim
    tensor (SJC's k * n_rays, computed on the device), so the emptiness mean needs no read.
    """
    origins, directions = rays_from_camera(camera)
    t_enter, t_exit, _ = intersect_box(origins, directions, field.bbox_len)
    lengths = (t_exit - t_enter).clamp(min=0.0)
    step = field.step_size
    n_rays, n_ticks = origins.shape[0], padded_tick_count(field.bbox_len, step)
    ticks = step * torch.arange(n_ticks, device=origins.device, dtype=origins.dtype)
    # The same float32 comparison as the dense reference's `inside` mask.
    inside = ticks[None, :] < lengths[:, None]  # [n_rays, k]
    distances = t_enter[:, None] + ticks[None, :]
    # Axis-major voxel coordinates of every tick: origin and direction mapped once per ray.
    voxel_origins = field.to_voxel_coords(origins)
    voxel_directions = directions * field.voxels_per_unit.to(directions)
    coords = torch.stack(
        [
            torch.addcmul(voxel_origins[:, axis, None], voxel_directions[:, axis, None], distances)
            for axis in range(3)
        ],
        dim=-1,
    ).reshape(-1, 3)
    if field.alpha_mask_enabled and field.alpha_mask is not None:
        points = origins[:, None, :] + directions[:, None, :] * distances[..., None]
        inside = inside & field.occupied(points.reshape(-1, 3)).view(n_rays, n_ticks)

    size_x, size_y, size_z = field.grid_size
    lookup = GridLookup.at_voxel_coords(coords, (size_z, size_y, size_x), sync_free=True)
    raw, features = lookup.sample(field.raw_density, field.feature_grid)
    density = field.density_from_raw(raw[:, 0]).view(n_rays, n_ticks) * inside
    weights = _volume_weights(density, step)
    colors = field.color_from_features(features).view(n_rays, n_ticks, -1)
    colors = colors * (weights.detach() > field.weight_threshold)[..., None]

    opacity = weights.sum(dim=1)
    background_weight = 1.0 - opacity
    rgb = torch.einsum("rk,rkc->rc", weights, colors)
    rgb = rgb + background_weight[:, None] * field.background_color(directions)
    depth = (weights * distances).sum(dim=1) + background_weight * BACKGROUND_DEPTH
    dense_ticks = torch.floor(lengths.max().to(torch.float64) / step) + 1.0
    height, width = camera.height, camera.width
    return RenderOutput(
        image=rgb.t().reshape(1, field.channels, height, width),
        depth=depth.reshape(1, 1, height, width),
        opacity=opacity.reshape(1, 1, height, width),
        weights=weights,
        n_samples_dense=(dense_ticks * n_rays).to(weights.dtype),
    )


def _volume_weights(density: torch.Tensor, step: float) -> torch.Tensor:
    """alpha_i T_i per ray [n_rays, k]: T from the exclusive cumulative optical depth, summed
    in float64 (float32 on MPS, which has no float64)."""
    optical = density * step
    accumulate = torch.float32 if optical.device.type == "mps" else torch.float64
    optical_sum = optical.to(accumulate)
    before = (torch.cumsum(optical_sum, dim=1) - optical_sum).to(optical.dtype)
    return -torch.expm1(-optical) * torch.exp(-before)
