"""Packed ray marching with empty-space skipping and compositing (rays come from `rays.py`)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from sjc_dsds.cameras import Camera
from sjc_dsds.composite import composite_rays
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.grid_lookup import GridLookup, one_intra_op_thread
from sjc_dsds.rays import (
    BACKGROUND_DEPTH,
    RenderOutput,
    intersect_box,
    rays_from_camera,
)

__all__ = ["BACKGROUND_DEPTH", "RenderOutput", "intersect_box", "rays_from_camera", "render_view"]

# Samples with alpha below this are treated as empty (float32 cannot resolve 1 - 1e-8 anyway).
EMPTY_ALPHA = 1e-8
# Marching stops once the transmittance falls below this: the rest of the ray weighs less.
TERMINATION_TRANSMITTANCE = 1e-6


class RaySamples(NamedTuple):
    """Packed samples grouped by ray in tick order.

    ray_index [m] and distances [m] along the ray; counts [n_rays] samples per ray.
    """

    ray_index: torch.Tensor
    distances: torch.Tensor
    counts: torch.Tensor

    def select(self, keep: torch.Tensor) -> RaySamples:
        """The samples where `keep` [m] is True (order preserved)."""
        return self.take(torch.nonzero(keep).squeeze(1))

    def take(self, rows: torch.Tensor) -> RaySamples:
        """The samples at increasing indices `rows` [m'] (order preserved)."""
        ray_index = self.ray_index.index_select(0, rows)
        counts = torch.bincount(ray_index, minlength=self.counts.shape[0])
        return RaySamples(ray_index, self.distances.index_select(0, rows), counts)

    def positions(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Sample positions [m, 3] = origin + distance * direction of each sample's ray, stored
        axis-major (a transposed [3, m]) for contiguous per-axis passes."""
        positions = self.distances.new_empty(3, self.distances.shape[0])
        for axis, out in enumerate(positions):
            torch.addcmul(
                origins[:, axis].index_select(0, self.ray_index),
                directions[:, axis].index_select(0, self.ray_index),
                self.distances,
                out=out,
            )
        return positions.t()


def march_rays(
    origins: torch.Tensor, directions: torch.Tensor, bbox_len: float, step: float
) -> tuple[RaySamples, int]:
    """The samples SJC's dense marching puts inside the box, packed, and its dense count k * n.

    Ray r gets ticks t_enter + i * step for every i with i * step < t_exit - t_enter, where
    k = int(max(t_exit - t_enter) / step) + 1.
    """
    t_enter, counts, ticks = box_ticks(origins, directions, bbox_len, step)
    n_ticks, n_rays = ticks.shape[0], origins.shape[0]
    ray_index = torch.repeat_interleave(torch.arange(n_rays, device=origins.device), counts)
    starts = torch.cumsum(counts, dim=0) - counts
    tick_index = torch.arange(ray_index.shape[0], device=origins.device)
    tick_index = tick_index - starts.index_select(0, ray_index)
    distances = t_enter.index_select(0, ray_index) + ticks.index_select(0, tick_index)
    return RaySamples(ray_index, distances, counts), n_ticks * n_rays


def box_ticks(
    origins: torch.Tensor, directions: torch.Tensor, bbox_len: float, step: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SJC's dense ticks: entry distances [n], ticks inside the box per ray [n] and the tick
    offsets step * arange(k) [k], k = int(max(t_exit - t_enter) / step) + 1."""
    t_enter, t_exit, _ = intersect_box(origins, directions, bbox_len)
    lengths = (t_exit - t_enter).clamp(min=0.0)
    n_ticks = int(lengths.max().item() / step) + 1
    ticks = step * torch.arange(n_ticks, device=origins.device, dtype=origins.dtype)
    # The number of ticks strictly below each length, on the same float32 ticks as the mask.
    counts = torch.searchsorted(ticks, lengths, side="left")
    return t_enter, counts, ticks


def exclusive_optical_depth(
    optical: torch.Tensor, ray_index: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Per-ray exclusive cumulative sum [m] of optical depths [m] of samples grouped by ray
    (ray_index [m], counts [n_rays]); accumulated in float64 over the packed array, minus each
    ray's total at its first sample."""
    optical64 = optical.to(_accumulation_dtype(optical.device))
    exclusive = torch.cumsum(optical64, dim=0).sub_(optical64)
    # Each ray's running total at its first sample, gathered per ray, then per sample.
    at_first = _per_ray(exclusive, torch.cumsum(counts, dim=0) - counts)
    return exclusive.sub_(at_first.index_select(0, ray_index)).to(optical.dtype)


def _per_ray(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """values [m] at one row per ray [n_rays]; rows past the end (rays without samples, whose
    value is never used) read the last sample."""
    if values.numel() == 0:
        return values.new_zeros(rows.shape[0])
    return values.index_select(0, rows.clamp(0, values.shape[0] - 1))


def volume_weights(density: torch.Tensor, samples: RaySamples, step: float) -> torch.Tensor:
    """Weights alpha_i T_i [m]: alpha = 1 - exp(-density step), T_i = prod_{j<i} (1 - alpha_j)."""
    return _VolumeWeights.apply(density, samples.ray_index, samples.counts, step)


class _VolumeWeights(torch.autograd.Function):
    """Volume-rendering weights with the closed-form backward (no graph of the scan).

    With tau = density step, T_k = exp(-sum_{j<k} tau_j) and w_k = (1 - exp(-tau_k)) T_k:
    dL/dtau_k = g_k (T_k - w_k) - sum_{i>k, same ray} g_i w_i.
    """

    @staticmethod
    def forward(
        ctx: Any,
        density: torch.Tensor,
        ray_index: torch.Tensor,
        counts: torch.Tensor,
        step: float,
    ) -> torch.Tensor:
        optical = density * step
        transmittance = torch.exp(-exclusive_optical_depth(optical, ray_index, counts))
        weights = -torch.expm1(-optical) * transmittance
        ctx.save_for_backward(transmittance, weights, ray_index, counts)
        ctx.step = step
        return weights

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        transmittance, weights, ray_index, counts = ctx.saved_tensors
        with one_intra_op_thread(grad.device):
            # Suffix sums of g w within each ray: the ray's running total at its last sample
            # minus the running total here, accumulated in float64.
            weighted = (grad * weights).to(_accumulation_dtype(grad.device))
            running = torch.cumsum(weighted, dim=0)
            at_last = _per_ray(running, torch.cumsum(counts, dim=0) - 1)
            behind = at_last.index_select(0, ray_index).sub_(running).to(grad.dtype)
            grad_optical = torch.addcmul(behind.neg_(), grad, transmittance - weights)
            return grad_optical.mul_(ctx.step), None, None, None


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums over the packed samples; MPS has none and keeps float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def empty_optical_depth() -> float:
    """Optical depth of a sample with alpha EMPTY_ALPHA: below it a sample counts as empty."""
    return -math.log1p(-EMPTY_ALPHA)


def contributing_samples(density: torch.Tensor, samples: RaySamples, step: float) -> torch.Tensor:
    """Bool [m]: samples that are not empty (alpha >= EMPTY_ALPHA) and not past termination."""
    with torch.no_grad():
        optical = density * step
        nonempty = optical >= empty_optical_depth()
        before = exclusive_optical_depth(optical * nonempty, samples.ray_index, samples.counts)
    return nonempty & (before <= -math.log(TERMINATION_TRANSMITTANCE))


def occupied_samples(field: VoxelRadianceField, coords: torch.Tensor, step: float) -> torch.Tensor:
    """Bool [m]: False where the density bound of the sample's cell makes it surely empty.

    coords: voxel coordinates [m, 3] of the samples (`field.to_voxel_coords`).
    """
    occupied_cells = field.cell_density_bound() * step >= empty_optical_depth()
    size_x, size_y, size_z = field.grid_size
    # The cell of voxel coordinate u is floor(u) + 1 (cell 0 lies in the padding).
    cells = [
        torch.floor(coords[:, axis]).add_(1.0).clamp_(0, size)
        for axis, size in enumerate((size_x, size_y, size_z))
    ]
    if occupied_cells.numel() <= 2**24:
        # Integers below 2^24 are exact in float32: the flat index without integer passes.
        flat = torch.add(cells[1], cells[2], alpha=size_y + 1)
        flat = torch.add(cells[0], flat, alpha=size_x + 1).to(torch.int64)
    else:
        cell_x, cell_y, cell_z = (cell.to(torch.int64) for cell in cells)
        flat = (cell_z * (size_y + 1) + cell_y) * (size_x + 1) + cell_x
    return occupied_cells.reshape(-1).index_select(0, flat)


def skippable_bounds(
    field: VoxelRadianceField, samples: RaySamples, step: float
) -> tuple[bool, bool]:
    """Whether some sample may be empty, and whether some ray may terminate, judged from the
    grid's raw range alone (trilinear values with zero padding lie within min(raw, 0) and
    max(raw, 0), and density grows with raw)."""
    with torch.no_grad():
        raw_min, raw_max = torch.aminmax(field.raw_density)
        bounds = torch.stack([raw_min.clamp(max=0.0), raw_max.clamp(min=0.0)])
        density_min, density_max = field.density_from_raw(bounds).tolist()
    longest = int(samples.counts.max().item()) if samples.counts.numel() else 0
    may_be_empty = density_min * step < empty_optical_depth()
    may_terminate = density_max * step * longest > -math.log(TERMINATION_TRANSMITTANCE)
    return may_be_empty, may_terminate


def lookup_contributing_samples(
    field: VoxelRadianceField,
    samples: RaySamples,
    origins: torch.Tensor,
    directions: torch.Tensor,
) -> tuple[RaySamples, GridLookup]:
    """The samples worth evaluating and their grid lookup.

    Drops empty space (per-cell density bounds, then exact densities) and samples past
    termination; both tests are skipped when the grid's density range rules them out.
    """
    step = field.step_size
    # Sample positions in voxel units: origin and direction mapped once per ray.
    voxel_directions = directions * field.voxels_per_unit.to(directions)
    coords = samples.positions(field.to_voxel_coords(origins), voxel_directions)
    may_be_empty, may_terminate = skippable_bounds(field, samples, step)
    if may_be_empty:
        occupied = occupied_samples(field, coords, step)
        if not bool(occupied.all()):
            rows = torch.nonzero(occupied).squeeze(1)
            samples, coords = samples.take(rows), _take_points(coords, rows)
    size_x, size_y, size_z = field.grid_size
    lookup = GridLookup.at_voxel_coords(coords, (size_z, size_y, size_x))
    if may_be_empty or may_terminate:
        with torch.no_grad():
            (raw,) = lookup.gather(field.raw_density)
        keep = contributing_samples(field.density_from_raw(raw[:, 0]), samples, step)
        if not bool(keep.all()):
            rows = torch.nonzero(keep).squeeze(1)
            samples, lookup = samples.take(rows), lookup.take(rows)
    return samples, lookup


def _take_points(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """points [m, 3] at `rows` [m'] -> [m', 3], kept axis-major like `RaySamples.positions`."""
    taken = points.new_empty(3, rows.shape[0])
    for axis, out in enumerate(taken):
        torch.index_select(points[:, axis], 0, rows, out=out)
    return taken.t()


def render_view(
    field: VoxelRadianceField,
    camera: Camera,
    fixed_shape: bool | None = None,
    compiled: bool | None = None,
) -> RenderOutput:
    """Render one view: SJC's marching, equal to `render_reference.render_view_dense`.

    Two paths, chosen by `fixed_shape` (None: fixed on CUDA, packed elsewhere). Packed
    (`render_rays`): samples inside the box, packed, skipping empty and hidden ones, on one CPU
    thread, by compiled per-ray kernels where `compiled` allows (see `render_rays`). Fixed
    (`render_fixed.py`): every ray the same padded number of samples with masks, no host reads,
    no data-dependent shapes. Differentiable w.r.t. grids, background, d_scale.
    """
    if camera.device != field.raw_density.device:
        raise ValueError(
            f"camera is on {camera.device} but the field on {field.raw_density.device}; "
            "move the camera with camera.to(device)"
        )
    if fixed_shape is None:
        fixed_shape = default_fixed_shape(camera.device)
    if fixed_shape:
        from sjc_dsds.render_fixed import render_view_fixed

        return render_view_fixed(field, camera)
    with one_intra_op_thread(camera.device):
        rgb, depth, opacity, weights, n_dense = render_rays(
            field, *rays_from_camera(camera), compiled=compiled
        )
    size = (camera.height, camera.width)
    image = rgb.t().reshape(1, field.channels, *size)
    depth, opacity = depth.reshape(1, 1, *size), opacity.reshape(1, 1, *size)
    return RenderOutput(image, depth, opacity, weights, n_dense)


def default_fixed_shape(device: torch.device) -> bool:
    """Whether `render_view` takes the fixed-shape path by default on `device` (CUDA)."""
    return device.type == "cuda"


def render_rays(
    field: VoxelRadianceField,
    origins: torch.Tensor,
    directions: torch.Tensor,
    compiled: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Render rays [n, 3] on the packed path (independent, so chunks of a view may be rendered
    apart): features [n, c], depth [n], opacity [n], the kept samples' weights and
    n_samples_dense.

    `compiled` (None: where possible) runs the per-ray numba kernels of `render_kernels.py`;
    False, or without numba, with an alpha mask or off the CPU, the tensor ops below, which give
    the same result to float rounding.
    """
    possible = compiled is not False and compiled_path_possible(field, origins.device)
    if compiled and not possible:
        raise ValueError(
            "the compiled renderer needs numba (pip install 'sjc-dsds[cpu]'), a CPU "
            "field and no alpha mask"
        )
    if possible:
        from sjc_dsds.render_kernels import march_and_composite

        t_enter, counts, ticks = box_ticks(origins, directions, field.bbox_len, field.step_size)
        sums, weights = march_and_composite(field, origins, directions, t_enter, counts, ticks)
        return _over_background(field, sums, directions) + (
            weights,
            ticks.shape[0] * counts.shape[0],
        )
    step = field.step_size
    samples, n_dense = march_rays(origins, directions, field.bbox_len, step)
    if field.alpha_mask_enabled and field.alpha_mask is not None:
        samples = samples.select(field.occupied(samples.positions(origins, directions)))
    samples, lookup = lookup_contributing_samples(field, samples, origins, directions)

    # Density and features of the kept samples, differentiable w.r.t. the grids.
    raw, features = lookup.sample(field.raw_density, field.feature_grid)
    weights = volume_weights(field.density_from_raw(raw[:, 0]), samples, step)
    colors = field.color_from_features(features)
    colored = weights.detach() > field.weight_threshold
    if not bool(colored.all()):
        colors = colors * colored[:, None]

    # Composite per ray: opacity, depth and colour; the background fills the rest.
    sums = composite_rays(weights, samples.distances, colors, samples)
    return _over_background(field, sums, directions) + (weights, n_dense)


def compiled_path_possible(field: VoxelRadianceField, device: torch.device) -> bool:
    """Whether `render_rays` can run the compiled kernels: numba installed, a CPU field in
    float32 or float64, and no alpha mask (the tensor path applies it)."""
    from sjc_dsds.render_kernels import compiled_kernels_available

    return (
        device.type == "cpu"
        and field.raw_density.device.type == "cpu"
        and field.raw_density.dtype in (torch.float32, torch.float64)
        and not (field.alpha_mask_enabled and field.alpha_mask is not None)
        and compiled_kernels_available()
    )


def _over_background(
    field: VoxelRadianceField, sums: torch.Tensor, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-ray sums [n, 2 + c] composited over the background: rgb, depth and opacity."""
    opacity, background_weight = sums[:, 0], 1.0 - sums[:, 0]
    depth = sums[:, 1] + background_weight * BACKGROUND_DEPTH
    rgb = sums[:, 2:] + background_weight[:, None] * field.background_color(directions)
    return rgb, depth, opacity
