"""Per-ray compositing of packed samples: weighted sums with a gather-based backward."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sjc_dsds.grid_lookup import one_intra_op_thread

if TYPE_CHECKING:
    from sjc_dsds.render import RaySamples


def composite_rays(
    weights: torch.Tensor, distances: torch.Tensor, colors: torch.Tensor, samples: RaySamples
) -> torch.Tensor:
    """Per-ray sums [n_rays, 2 + c] of weights [m] times (1, distance [m], colors [m, c]).

    Columns are opacity, unnormalised depth and colour; differentiable w.r.t. weights and colors.
    """
    return _Composite.apply(weights, distances, colors, samples.ray_index, samples.counts)


class _Composite(torch.autograd.Function):
    """Weighted per-ray sums as one bag-sum gather; the backward gathers the ray gradients."""

    @staticmethod
    def forward(
        ctx: Any,
        weights: torch.Tensor,
        distances: torch.Tensor,
        colors: torch.Tensor,
        ray_index: torch.Tensor,
        counts: torch.Tensor,
    ) -> torch.Tensor:
        values = torch.empty(
            colors.shape[0], 2 + colors.shape[1], dtype=colors.dtype, device=colors.device
        )
        values[:, 0] = 1.0
        values[:, 1] = distances
        values[:, 2:] = colors
        ctx.save_for_backward(weights, values, ray_index)
        if values.device.type not in ("cpu", "cuda"):
            out = values.new_zeros(counts.shape[0], values.shape[1])
            return out.index_add_(0, ray_index, weights[:, None] * values)
        starts = torch.cumsum(counts, dim=0) - counts
        every_row = torch.arange(values.shape[0], device=values.device)
        return F.embedding_bag(every_row, values, starts, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, values, ray_index = ctx.saved_tensors
        with one_intra_op_thread(grad.device):
            return _composite_backward(ctx, grad, weights, values, ray_index)


def _composite_backward(
    ctx: Any,
    grad: torch.Tensor,
    weights: torch.Tensor,
    values: torch.Tensor,
    ray_index: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """`_Composite.backward`: per-sample gradients of the weights and the colours."""
    # Each sample's ray gradient, row-major [m, 2 + c] like the values.
    per_sample = grad.index_select(0, ray_index)
    grad_weights = grad_colors = None
    if ctx.needs_input_grad[0]:
        # Row-wise dot products as a batch of [1, 2 + c] x [2 + c, 1] products.
        rows = per_sample.shape[1]
        grad_weights = torch.bmm(per_sample.view(-1, 1, rows), values.view(-1, rows, 1))
        grad_weights = grad_weights.view(-1)
    if ctx.needs_input_grad[2]:
        grad_colors = per_sample[:, 2:] * weights[:, None]
    return grad_weights, None, grad_colors, None, None
