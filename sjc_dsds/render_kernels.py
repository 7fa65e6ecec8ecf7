"""Compiled per-ray kernels of the packed CPU renderer (numba, the `cpu` extra).

One pass per ray does what `render.py`'s tensor path does in ~60 whole-view tensor ops:
march the ticks, interpolate the raw density trilinearly, skip empty samples (alpha below
EMPTY_ALPHA), stop at termination, composite weights, depth and colour. The backward walks each
ray's kept samples in reverse for the closed-form transmittance gradient (docs/method.md A.4)
and scatters into the grids in the same loop. Nothing of the size of the grid is copied or
built per render: the work grows with the number of samples. The kernels are serial: on the
project's shared 2-core machines one thread is the robust choice (see `one_intra_op_thread`).

The tensor path stays the reference and the fallback (no numba, alpha mask, devices other
than CPU); tests hold both to the dense reference renderer.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import torch

from sjc_dsds.grid_lookup import one_intra_op_thread

# Same constants as render.py (imported there from here would form a cycle with numba's import).
EMPTY_OPTICAL_DEPTH = -math.log1p(-1e-8)
TERMINATION_TRANSMITTANCE = 1e-6
# LLVM may reassociate sums and fuse multiply-adds (rounding within float tolerance; about 20%
# faster measured side by side); no approximate functions and no no-NaN/no-inf assumptions.
FAST_MATH = {"reassoc", "contract", "nsz", "arcp"}


def compiled_kernels_available() -> bool:
    """Whether numba is installed (`pip install "sjc-dsds[cpu]"`), without importing it."""
    return importlib.util.find_spec("numba") is not None


def _build_kernels() -> tuple[Any, Any]:
    """Compile (or load from numba's on-disk cache) the forward and backward kernels."""
    import numba

    jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=FAST_MATH)

    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=FAST_MATH, inline="always")
    def axis_pair(position, size):  # noqa: ANN001, ANN202
        """The two voxels around `position` on one axis, clamped inside [0, size - 1], and
        their weights; a voxel outside the grid gets weight 0 (grid_sample's zero padding)."""
        lower = math.floor(position)
        high = position - lower
        low = 1.0 - high
        low_index = int(lower)
        high_index = low_index + 1
        if low_index < 0 or low_index >= size:
            low, low_index = 0.0, 0
        if high_index < 0 or high_index >= size:
            high, high_index = 0.0, 0
        return low_index, low, high_index, high

    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=FAST_MATH, inline="always")
    def corners(x, y, z, size_x, size_y, size_z, index, weight):  # noqa: ANN001, ANN202
        """Flat indices and trilinear weights of the 8 voxels around (x, y, z) into
        index [8] and weight [8]."""
        x0, wx0, x1, wx1 = axis_pair(x, size_x)
        y0, wy0, y1, wy1 = axis_pair(y, size_y)
        z0, wz0, z1, wz1 = axis_pair(z, size_z)
        rows = ((z0 * size_y + y0) * size_x, (z0 * size_y + y1) * size_x)
        rows_far = ((z1 * size_y + y0) * size_x, (z1 * size_y + y1) * size_x)
        index[0], index[1] = rows[0] + x0, rows[0] + x1
        index[2], index[3] = rows[1] + x0, rows[1] + x1
        index[4], index[5] = rows_far[0] + x0, rows_far[0] + x1
        index[6], index[7] = rows_far[1] + x0, rows_far[1] + x1
        zy00, zy01, zy10, zy11 = wz0 * wy0, wz0 * wy1, wz1 * wy0, wz1 * wy1
        weight[0], weight[1] = zy00 * wx0, zy00 * wx1
        weight[2], weight[3] = zy01 * wx0, zy01 * wx1
        weight[4], weight[5] = zy10 * wx0, zy10 * wx1
        weight[6], weight[7] = zy11 * wx0, zy11 * wx1

    @jit
    def forward(  # noqa: ANN202
        raw_grid,  # [z * y * x]  # noqa: ANN001
        feature_grid,  # [c, z * y * x]
        origins,  # [n_rays, 3] voxel coordinates (x, y, z)
        directions,  # [n_rays, 3] voxel units per world unit
        t_enter,  # [n_rays]
        counts,  # [n_rays] ticks inside the box
        ticks,  # [k] step * arange(k)
        sizes,  # [3] voxels along x, y, z
        scale,  # exp(d_scale)
        shift,  # density_shift
        step,
        weight_threshold,
        sigmoid_colors,  # V_SJC: colour 2 sigmoid(f) - 1; V_SD: identity
        sums,  # out [n_rays, 2 + c]
        weights,  # out [m_max]
        transmittance,  # out [m_max]
        raw_values,  # out [m_max]
        slopes,  # out [m_max] softplus'(raw * scale + shift)
        colors,  # out [m_max, c]
        kept_tick,  # out [m_max]
        kept_counts,  # out [n_rays]
    ):
        size_x, size_y, size_z = sizes[0], sizes[1], sizes[2]
        channels = feature_grid.shape[0]
        index = np.empty(8, np.int64)
        weight8 = np.empty(8)
        totals = np.empty(2 + channels)
        kept = 0
        for ray in range(origins.shape[0]):
            through = 1.0  # float64 transmittance in front of the sample: prod (1 - alpha)
            first = kept
            totals[:] = 0.0
            for tick in range(counts[ray]):
                distance = t_enter[ray] + ticks[tick]
                x = origins[ray, 0] + distance * directions[ray, 0]
                y = origins[ray, 1] + distance * directions[ray, 1]
                z = origins[ray, 2] + distance * directions[ray, 2]
                corners(x, y, z, size_x, size_y, size_z, index, weight8)
                raw = 0.0
                for k in range(8):
                    raw += weight8[k] * raw_grid[index[k]]
                argument = raw * scale + shift
                if argument > 20.0:
                    density, slope = argument, 1.0
                else:
                    exponential = math.exp(argument)
                    density = math.log1p(exponential)
                    slope = exponential / (1.0 + exponential)
                optical = density * step
                if optical < EMPTY_OPTICAL_DEPTH:
                    continue
                if through < TERMINATION_TRANSMITTANCE:
                    break
                alpha = -math.expm1(-optical)
                weight = alpha * through
                weights[kept] = weight
                transmittance[kept] = through
                raw_values[kept] = raw
                slopes[kept] = slope
                through -= weight
                kept_tick[kept] = tick
                totals[0] += weight
                totals[1] += weight * distance
                colored = weight > weight_threshold
                for channel in range(channels):
                    color = 0.0
                    if colored:
                        for k in range(8):
                            color += weight8[k] * feature_grid[channel, index[k]]
                        if sigmoid_colors:
                            color = 2.0 / (1.0 + math.exp(-color)) - 1.0
                        totals[2 + channel] += weight * color
                    colors[kept, channel] = color
                kept += 1
            kept_counts[ray] = kept - first
            for column in range(2 + channels):
                sums[ray, column] = totals[column]
        return kept

    @jit
    def backward(  # noqa: ANN202
        raw_grid_grad,  # out [z * y * x], zeroed  # noqa: ANN001
        feature_grid_grad,  # out [c, z * y * x], zeroed
        origins,
        directions,
        t_enter,
        ticks,
        sizes,
        scale,
        shift,
        step,
        weight_threshold,
        sigmoid_colors,
        grad_sums,  # [n_rays, 2 + c]
        grad_weights,  # [m]
        weights,
        transmittance,
        raw_values,
        slopes,
        colors,
        kept_tick,
        kept_counts,
        features_wanted,
    ):
        size_x, size_y, size_z = sizes[0], sizes[1], sizes[2]
        channels = colors.shape[1]
        index = np.empty(8, np.int64)
        weight8 = np.empty(8)
        grad_log_scale = 0.0
        end = 0
        for ray in range(origins.shape[0]):
            start = end
            end = start + kept_counts[ray]
            behind = 0.0  # sum over later kept samples of dL/dw_i w_i
            for sample in range(end - 1, start - 1, -1):
                weight = weights[sample]
                distance = t_enter[ray] + ticks[kept_tick[sample]]
                grad_weight = grad_weights[sample] + grad_sums[ray, 0]
                grad_weight += grad_sums[ray, 1] * distance
                for channel in range(channels):
                    grad_weight += grad_sums[ray, 2 + channel] * colors[sample, channel]
                grad_optical = grad_weight * (transmittance[sample] - weight) - behind
                behind += grad_weight * weight
                grad_argument = grad_optical * step * slopes[sample]
                grad_log_scale += grad_argument * raw_values[sample] * scale
                grad_raw = grad_argument * scale
                x = origins[ray, 0] + distance * directions[ray, 0]
                y = origins[ray, 1] + distance * directions[ray, 1]
                z = origins[ray, 2] + distance * directions[ray, 2]
                corners(x, y, z, size_x, size_y, size_z, index, weight8)
                for k in range(8):
                    raw_grid_grad[index[k]] += weight8[k] * grad_raw
                if features_wanted and weight > weight_threshold:
                    for channel in range(channels):
                        grad_color = weight * grad_sums[ray, 2 + channel]
                        if sigmoid_colors:
                            color = colors[sample, channel]
                            grad_color *= 0.5 * (1.0 + color) * (1.0 - color)
                        for k in range(8):
                            feature_grid_grad[channel, index[k]] += weight8[k] * grad_color
        return grad_log_scale

    return forward, backward


_KERNELS: list[tuple[Any, Any]] = []


def _kernels() -> tuple[Any, Any]:
    """The compiled kernels, built on first use (a cache, not configuration)."""
    if not _KERNELS:
        _KERNELS.append(_build_kernels())
    return _KERNELS[0]


def march_and_composite(
    field: Any,
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_enter: torch.Tensor,
    counts: torch.Tensor,
    ticks: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-ray sums [n_rays, 2 + c] (opacity, unnormalised depth, colour) and the kept samples'
    weights [m]; differentiable w.r.t. the field's grids and d_scale.

    origins / directions: world rays [n_rays, 3]; t_enter [n_rays], counts [n_rays] and ticks
    [k] as `render.march_rays` builds them.
    """
    voxel_origins = field.to_voxel_coords(origins)
    voxel_directions = directions * field.voxels_per_unit.to(directions)
    inputs = _Inputs(field, voxel_origins, voxel_directions, t_enter, counts, ticks)
    return _MarchComposite.apply(inputs, field.raw_density, field.feature_grid, field.d_scale)


class _Inputs:
    """The non-differentiable inputs of one render, as contiguous numpy views."""

    def __init__(
        self,
        field: Any,
        origins: torch.Tensor,
        directions: torch.Tensor,
        t_enter: torch.Tensor,
        counts: torch.Tensor,
        ticks: torch.Tensor,
    ) -> None:
        dtype = field.raw_density.dtype
        self.dtype = dtype
        self.origins = _array(origins, dtype)
        self.directions = _array(directions, dtype)
        self.t_enter = _array(t_enter, dtype)
        self.ticks = _array(ticks, dtype)
        self.counts = counts.detach().to(torch.int64).contiguous().numpy()
        self.sizes = np.array(field.grid_size, dtype=np.int64)
        self.shift = float(field.density_shift)
        self.step = float(field.step_size)
        self.weight_threshold = float(field.weight_threshold)
        self.sigmoid_colors = field.model_type == "V_SJC"
        self.n_rays = int(origins.shape[0])
        self.max_samples = int(self.counts.sum())


def _array(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    return tensor.detach().to(dtype).contiguous().numpy()


def _per_sample_arrays(saved: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """numpy views of what the forward keeps per sample for the backward, in kernel order:
    weights, transmittance, raw values, slopes, colours, kept ticks, kept counts per ray."""
    return [tensor.numpy() for tensor in saved]


class _MarchComposite(torch.autograd.Function):
    """Autograd for `march_and_composite`: the compiled forward, the compiled reverse walk."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: _Inputs,
        raw_density: torch.Tensor,
        feature_grid: torch.Tensor,
        d_scale: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        forward, _ = _kernels()
        channels = int(feature_grid.shape[1])
        dtype = inputs.dtype
        m_max = inputs.max_samples
        sums = torch.empty(inputs.n_rays, 2 + channels, dtype=dtype)
        weights, transmittance, raw_values, slopes = (
            torch.empty(m_max, dtype=dtype) for _ in range(4)
        )
        colors = torch.empty(m_max, channels, dtype=dtype)
        kept_tick = torch.empty(m_max, dtype=torch.int32)
        kept_counts = torch.empty(inputs.n_rays, dtype=torch.int64)
        saved = (weights, transmittance, raw_values, slopes, colors, kept_tick, kept_counts)
        scale = math.exp(float(d_scale.detach()))
        kept = forward(
            raw_density.detach().reshape(-1).numpy(),
            feature_grid.detach().reshape(channels, -1).numpy(),
            inputs.origins,
            inputs.directions,
            inputs.t_enter,
            inputs.counts,
            inputs.ticks,
            inputs.sizes,
            scale,
            inputs.shift,
            inputs.step,
            inputs.weight_threshold,
            inputs.sigmoid_colors,
            sums.numpy(),
            *_per_sample_arrays(saved),
        )
        ctx.inputs, ctx.scale = inputs, scale
        ctx.grid_shapes = (raw_density.shape, feature_grid.shape, d_scale.shape)
        kept_weights = weights[:kept]
        ctx.save_for_backward(kept_weights, *saved[1:])
        return sums, kept_weights

    @staticmethod
    def backward(
        ctx: Any, grad_sums: torch.Tensor, grad_weights: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        with one_intra_op_thread(grad_sums.device):
            return _backward(ctx, grad_sums, grad_weights)


def _backward(
    ctx: Any, grad_sums: torch.Tensor, grad_weights: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """`_MarchComposite.backward` on one intra-op thread (the kernel itself is serial)."""
    _, backward = _kernels()
    inputs = ctx.inputs
    raw_shape, feature_shape, scale_shape = ctx.grid_shapes
    dtype = inputs.dtype
    raw_grad = torch.zeros(raw_shape, dtype=dtype)
    feature_grad = torch.zeros(feature_shape, dtype=dtype)
    features_wanted = bool(ctx.needs_input_grad[2])
    grad_log_scale = backward(
        raw_grad.view(-1).numpy(),
        feature_grad.view(feature_shape[1], -1).numpy(),
        inputs.origins,
        inputs.directions,
        inputs.t_enter,
        inputs.ticks,
        inputs.sizes,
        ctx.scale,
        inputs.shift,
        inputs.step,
        inputs.weight_threshold,
        inputs.sigmoid_colors,
        _array(grad_sums, dtype),
        _array(grad_weights, dtype),
        *_per_sample_arrays(ctx.saved_tensors),
        features_wanted,
    )
    d_scale_grad = torch.full(scale_shape, grad_log_scale, dtype=dtype)
    return (
        None,
        raw_grad if ctx.needs_input_grad[1] else None,
        feature_grad if features_wanted else None,
        d_scale_grad if ctx.needs_input_grad[3] else None,
    )
