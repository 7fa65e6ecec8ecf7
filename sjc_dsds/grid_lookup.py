"""GridLookup: trilinear interpolation at fixed points as a sparse linear map, with autograd."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F


class GridLookup:
    """Trilinear interpolation at fixed points, as a sparse [n_points, n_voxels] linear map.

    Matches `F.grid_sample` (zero padding, align_corners=False) on grids [1, c, z, y, x]. The
    forward is one weighted gather (`embedding_bag`) and the backward a scatter-add per corner
    and channel; on CPU both are several times cheaper than grid_sample's for the ~10^6 samples
    of one view. Point i has corners `base[i] + offsets[k]` with weights `weights[k, i]`.
    """

    def __init__(self, base: torch.Tensor, weights: torch.Tensor, grid_zyx: tuple[int, ...]):
        if base.dim() != 1 or weights.shape != (8, base.shape[0]):
            raise ValueError(
                f"base must be [n] and weights [8, n], got {list(base.shape)} and "
                f"{list(weights.shape)}"
            )
        size_z, size_y, size_x = (int(size) for size in grid_zyx)
        self.base = base
        self.weights = weights
        self.grid_zyx = (size_z, size_y, size_x)
        self.n_voxels = size_z * size_y * size_x
        self.offsets = [(dz * size_y + dy) * size_x + dx for dz, dy, dx in _CORNERS]

    @classmethod
    def at_voxel_coords(
        cls, coords: torch.Tensor, grid_zyx: tuple[int, int, int], sync_free: bool = False
    ) -> GridLookup:
        """Lookup at continuous voxel indices [n, 3] (x, y, z) into a grid of shape (z, y, x).

        Each axis keeps a pair of neighbouring voxels clamped inside the grid; at the border the
        pair is shifted inwards and the corner outside the grid gets weight 0 (zero padding).
        `sync_free` sets the border weights with masks instead of gathering the border points
        (no host read, no data-dependent shapes: the fixed-shape CUDA path).
        """
        if min(grid_zyx) < 2:
            raise ValueError(f"grid must have every side >= 2, got {tuple(grid_zyx)}")
        size_z, size_y, size_x = grid_zyx
        pairs, bases = [], []
        for axis, size in enumerate((size_x, size_y, size_z)):
            position = coords[:, axis]
            # The kept pair of voxels (base, base + 1), clamped inside the grid.
            lower = torch.floor(position)
            base = lower.clamp(0, size - 2)
            high_weight = position - base
            low_weight = 1.0 - high_weight
            # Within half a voxel of the border the pair is shifted inwards; the hat weights
            # max(0, 1 - |position - j|) then give the corner outside the grid weight 0, as
            # grid_sample's zero padding does.
            if sync_free:
                border = lower != base
                hat_low = (1.0 - high_weight.abs()).clamp_(min=0.0)
                hat_high = (1.0 - (high_weight - 1.0).abs()).clamp_(min=0.0)
                low_weight = torch.where(border, hat_low, low_weight)
                high_weight = torch.where(border, hat_high, high_weight)
            else:
                border = torch.nonzero(lower != base).squeeze(1)
                if border.numel() > 0:
                    offset = high_weight.index_select(0, border)
                    low_weight.index_copy_(0, border, (1.0 - offset.abs()).clamp_(min=0.0))
                    high_weight.index_copy_(0, border, (1.0 - (offset - 1.0).abs()).clamp_(min=0.0))
            pairs.append((low_weight, high_weight))
            bases.append(base)
        if size_z * size_y * size_x <= 2**24:
            # Integers below 2^24 are exact in float32: build the flat index without int ops.
            flat_base = torch.add(bases[1], bases[2], alpha=size_y)
            flat_base = torch.add(bases[0], flat_base, alpha=size_x).to(torch.int64)
        else:
            base_x, base_y, base_z = (base.to(torch.int64) for base in bases)
            flat_base = (base_z * size_y + base_y) * size_x + base_x
        weight_x, weight_y, weight_z = pairs
        weights = torch.empty(8, coords.shape[0], dtype=coords.dtype, device=coords.device)
        for zy_index, (dz, dy) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            weight_zy = weight_z[dz] * weight_y[dy]
            torch.mul(weight_zy, weight_x[0], out=weights[2 * zy_index])
            torch.mul(weight_zy, weight_x[1], out=weights[2 * zy_index + 1])
        return cls(flat_base, weights, grid_zyx)

    @property
    def n_points(self) -> int:
        """Number of lookup points."""
        return int(self.base.shape[0])

    def take(self, rows: torch.Tensor) -> GridLookup:
        """The lookup restricted to the points at indices `rows` [n']."""
        return GridLookup(
            self.base.index_select(0, rows), self.weights.index_select(1, rows), self.grid_zyx
        )

    def sample(self, *grids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Interpolate grids [1, c_i, z, y, x] at the points -> one [n, c_i] per grid.

        Differentiable w.r.t. the grids; equivalent to `F.grid_sample` per grid.
        """
        return _SparseTrilinear.apply(self, *grids)

    def gather(self, *grids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward only: grids [1, c_i, z, y, x] -> [n, c_i] each, in one weighted gather."""
        channels = [self._check_grid(grid) for grid in grids]
        if len(grids) == 1 and channels[0] == 1:
            rows = grids[0].detach().reshape(self.n_voxels, 1)
        else:
            rows = torch.empty(
                self.n_voxels, sum(channels), dtype=grids[0].dtype, device=grids[0].device
            )
            start = 0
            for grid, count in zip(grids, channels):
                rows[:, start : start + count] = grid.detach().reshape(count, -1).t()
                start += count
        if self.n_points == 0:
            values = rows.new_zeros(0, rows.shape[1])
        elif _gather_kernels_supported(rows.device):
            indices, weights = self._corners_by_point()
            bags = torch.arange(0, indices.shape[0], 8, device=rows.device, dtype=indices.dtype)
            values = F.embedding_bag(indices, rows, bags, mode="sum", per_sample_weights=weights)
        else:
            values = sum(
                weight[:, None] * rows[offset:].index_select(0, self.base)
                for weight, offset in zip(self.weights, self.offsets)
            )
        return tuple(torch.split(values, channels, dim=1))

    def _scatter_add_into(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Add the adjoint of `gather` of each gradient [n] into its grid row [n_voxels], on the
        calling thread (scatter_add_ runs on one thread on CPU anyway)."""
        with one_intra_op_thread(rows[0][0].device if rows else torch.device("cpu")):
            self._scatter_rows_serially(rows)

    def _scatter_rows_serially(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """`_scatter_add_into` on the calling thread."""
        if not rows:
            return
        # One product buffer for all corners and channels: fresh allocations of this size cost
        # a third of the multiply on CPU.
        product = rows[0][1].new_empty(rows[0][1].shape[0])
        for row, grad in rows:
            # Corner k of every point is base + offset_k: scatter into the shifted view.
            for weight, offset in zip(self.weights, self.offsets):
                row[offset:].scatter_add_(0, self.base, torch.mul(weight, grad, out=product))

    def _check_grid(self, grid: torch.Tensor) -> int:
        if grid.dim() != 5 or grid.shape[0] != 1 or tuple(grid.shape[2:]) != self.grid_zyx:
            raise ValueError(
                f"grid must have shape [1, c, {', '.join(map(str, self.grid_zyx))}], "
                f"got {list(grid.shape)}"
            )
        return int(grid.shape[1])

    def _corners_by_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Corner voxel indices and weights [n * 8], point-major (the layout a gather wants);
        built per call and dropped after it, as the backward needs only the corner-major one."""
        index_dtype = torch.int32 if self.n_voxels < 2**31 else torch.int64
        offsets = torch.tensor(self.offsets, dtype=index_dtype, device=self.base.device)
        indices = (self.base.to(index_dtype)[:, None] + offsets).view(-1)
        return indices, transpose_exactly(self.weights).view(-1)


class _SparseTrilinear(torch.autograd.Function):
    """Autograd for `GridLookup.sample`: sparse gather forward, scatter-add backward."""

    @staticmethod
    def forward(ctx: Any, lookup: GridLookup, *grids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.lookup = lookup
        ctx.grid_shapes = [grid.shape for grid in grids]
        # Outputs without a gradient (e.g. features under the emptiness loss) stay None, so
        # the backward scatters only the channels that received one.
        ctx.set_materialize_grads(False)
        return lookup.gather(*grids)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        wanted = [
            index
            for index, grad in enumerate(grads)
            if grad is not None and ctx.needs_input_grad[index + 1]
        ]
        results: list[torch.Tensor | None] = [None] * (len(grads) + 1)
        rows = []
        for index in wanted:
            shape = ctx.grid_shapes[index]
            grid_grad = grads[index].new_zeros(shape[1], ctx.lookup.n_voxels)
            # Channel-major rows (a no-op copy for the renderer's gradients, which are).
            rows += zip(grid_grad, grads[index].t().contiguous())
            results[index + 1] = grid_grad.view(shape)
        if rows:
            ctx.lookup._scatter_add_into(rows)
        return tuple(results)


@contextlib.contextmanager
def one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """Run CPU work on one intra-op thread, restoring the count after.

    The renderer's kernels are short and memory-bound: on a shared CPU, every OpenMP region
    waits for its slowest thread, and a thread that shares its core with another process
    stalls the region (a view took 2.9x longer on 2 threads than on 1 beside one busy
    process). No-op off CPU.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_CORNERS = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]


def _gather_kernels_supported(device: torch.device) -> bool:
    """embedding_bag with per-sample weights exists on CPU and CUDA."""
    return device.type in ("cpu", "cuda")


def transpose_exactly(matrix: torch.Tensor) -> torch.Tensor:
    """matrix [a, b] with a or b small -> contiguous [b, a] with the same values.

    On CPU a product with a small identity (x * 1 + 0 * y, exact in IEEE arithmetic for finite
    values) runs about twice as fast as a strided copy; it is used only where float32 matmuls
    run at full precision, never with reduced-precision modes (TF32, bf16) that would round.
    """
    rows, columns = matrix.shape
    if (
        matrix.device.type == "cpu"
        and matrix.dtype in (torch.float32, torch.float64)
        and torch.get_float32_matmul_precision() == "highest"
        and min(rows, columns) <= _SMALL_SIDE
    ):
        if rows <= columns:
            identity = torch.eye(rows, dtype=matrix.dtype, device=matrix.device)
            return torch.mm(matrix.t(), identity)
        identity = torch.eye(columns, dtype=matrix.dtype, device=matrix.device)
        return torch.mm(identity, matrix.t())
    return matrix.t().contiguous()


# Identity products cost O(small side) per element: only for thin matrices.
_SMALL_SIDE = 16
