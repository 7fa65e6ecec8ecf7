"""Dense reference renderer: every sample of every ray evaluated, SJC's `render_ray_bundle`.

The oracle for tests and `experiments/bench_render.py`; never used in the optimisation loop. It
shares only ray generation and ray-box intersection (`rays.py`) with `render.py`.
"""

from __future__ import annotations

import torch

from sjc_dsds.cameras import Camera
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.rays import BACKGROUND_DEPTH, RenderOutput, intersect_box, rays_from_camera


def render_view_dense(field: VoxelRadianceField, camera: Camera) -> RenderOutput:
    """Render one view by dense marching; `weights` is the full [k, n_rays] weight tensor.

    All rays march k = int(max(t_exit - t_enter) / step) + 1 ticks from their entry; ticks
    beyond a ray's exit have density 0. Features are looked up only where the weight exceeds
    `field.weight_threshold`, as SJC does.
    """
    origins, directions = rays_from_camera(camera)
    t_enter, t_exit, _ = intersect_box(origins, directions, field.bbox_len)
    lengths = (t_exit - t_enter).clamp(min=0.0)
    step = field.step_size
    n_ticks = int(lengths.max().item() / step) + 1
    n_rays = origins.shape[0]

    # Sample points at fixed ticks from each ray's entry: [k, n_rays] and [k, n_rays, 3].
    ticks = step * torch.arange(n_ticks, device=origins.device, dtype=origins.dtype)
    distances = t_enter[None, :] + ticks[:, None]
    points = origins[None] + directions[None] * distances[..., None]
    inside = ticks[:, None] < lengths[None, :]
    if field.alpha_mask_enabled and field.alpha_mask is not None:
        inside = inside.clone()
        inside[inside.clone()] = field.occupied(points[inside])

    # Density at every sample inside the box; zero elsewhere.
    density = origins.new_zeros(n_ticks, n_rays)
    density = density.index_put((inside,), field.density(points[inside]))

    # Volume-rendering weights: alpha times the exclusive cumulative product of (1 - alpha).
    alpha = 1.0 - torch.exp(-density * step)
    through = torch.cumprod(1.0 - alpha, dim=0)
    transmittance = torch.cat([torch.ones_like(through[:1]), through[:-1]], dim=0)
    weights = alpha * transmittance

    # Features only where the weight is above the threshold; zero colour elsewhere.
    colored = weights > field.weight_threshold
    colors = origins.new_zeros(n_ticks, n_rays, field.channels)
    colors = colors.index_put((colored,), field.features(points[colored]))

    # Composite over the background colour and the background depth.
    opacity = weights.sum(dim=0)
    background_weight = 1.0 - opacity
    rgb = (weights[..., None] * colors).sum(dim=0)
    rgb = rgb + background_weight[:, None] * field.background_color(directions)
    depth = (weights * distances).sum(dim=0) + background_weight * BACKGROUND_DEPTH
    height, width = camera.height, camera.width
    return RenderOutput(
        image=rgb.t().reshape(1, field.channels, height, width),
        depth=depth.reshape(1, 1, height, width),
        opacity=opacity.reshape(1, 1, height, width),
        weights=weights,
        n_samples_dense=n_ticks * n_rays,
    )
