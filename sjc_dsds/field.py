"""VoxelRadianceField: density and feature grids, background, alpha mask."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sjc_dsds.config import VoxConfig
from sjc_dsds.grid_lookup import GridLookup

ALPHA_MASK_POOL_SIZE = 3


class VoxelRadianceField(torch.nn.Module):
    """SJC's voxel radiance field on the box [-bbox_len, bbox_len]^3 (spec A.6).

    Grids are stored z-y-x ([1, channels, depth, height, width] with x along width) and sampled
    trilinearly with zero padding and align_corners=False, so a value sits at its voxel's centre.
    Density is softplus(raw * exp(d_scale) + density_shift); features are the identity (V_SD,
    latents) or 2 sigmoid - 1 (V_SJC, colours in [-1, 1]).
    """

    def __init__(
        self,
        vox: VoxConfig,
        raw_density: torch.Tensor,
        features: torch.Tensor,
        background: torch.Tensor | None,
    ) -> None:
        super().__init__()
        if vox.model_type is None or vox.c is None or vox.blend_bg_texture is None:
            raise ValueError(
                "vox.model_type, vox.c and vox.blend_bg_texture must be set "
                "(SJCConfig fills them in from --family)"
            )
        _check_grid("raw_density", raw_density, 1)
        _check_grid("features", features, vox.c)
        if tuple(raw_density.shape[2:]) != tuple(features.shape[2:]):
            raise ValueError(
                f"raw_density {list(raw_density.shape)} and features {list(features.shape)} "
                "must share the grid size"
            )
        if vox.blend_bg_texture:
            expected = (1, vox.c, vox.bg_texture_hw, vox.bg_texture_hw)
            if background is None or tuple(background.shape) != expected:
                shape = None if background is None else list(background.shape)
                raise ValueError(f"background must have shape {list(expected)}, got {shape}")
        self.bbox_len = float(vox.bbox_len)
        self.step_ratio = float(vox.step_ratio)
        self.density_shift = float(vox.density_shift)
        self.weight_threshold = float(vox.ray_march_weight_thres)
        self.model_type = vox.model_type
        self.alpha_mask_enabled = bool(vox.alpha_mask)
        self.alpha_mask_threshold = float(vox.alpha_mask_thres)
        self.raw_density = torch.nn.Parameter(raw_density.to(torch.float32))
        self.feature_grid = torch.nn.Parameter(features.to(raw_density.device, torch.float32))
        if vox.blend_bg_texture:
            self.background = torch.nn.Parameter(background.to(raw_density.device, torch.float32))
        else:
            self.register_parameter("background", None)
        self.d_scale = torch.nn.Parameter(torch.zeros((), device=raw_density.device))
        self.register_buffer("alpha_mask", None)

    @classmethod
    def from_config(
        cls, vox: VoxConfig, device: torch.device, generator: torch.Generator
    ) -> VoxelRadianceField:
        """SJC's initial field: raw density 0; features, background ~ N(0, 1) from `generator`."""
        if vox.c is None:
            raise ValueError("vox.c must be set (SJCConfig fills it in)")
        size_x, size_y, size_z = vox.grid_size
        zyx = (size_z, size_y, size_x)
        draw_device = generator.device
        features = torch.randn((1, vox.c, *zyx), generator=generator, device=draw_device)
        background = None
        if vox.blend_bg_texture:
            hw = vox.bg_texture_hw
            background = torch.randn((1, vox.c, hw, hw), generator=generator, device=draw_device)
            background = background.to(device)
        raw_density = torch.zeros((1, 1, *zyx), device=device)
        return cls(vox, raw_density, features.to(device), background)

    @classmethod
    def from_grids(
        cls,
        vox: VoxConfig,
        raw_density: torch.Tensor,
        features: torch.Tensor,
        background: torch.Tensor | None,
    ) -> VoxelRadianceField:
        """A field holding copies of given grids: raw_density [1, 1, z, y, x], features
        [1, c, z, y, x], background [1, c, hw, hw] (or None without a background texture)."""
        background = None if background is None else background.detach().clone()
        return cls(vox, raw_density.detach().clone(), features.detach().clone(), background)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Voxels per side as (x, y, z)."""
        size_z, size_y, size_x = self.raw_density.shape[2:]
        return (int(size_x), int(size_y), int(size_z))

    @property
    def channels(self) -> int:
        """Feature channels c."""
        return int(self.feature_grid.shape[1])

    @property
    def voxel_length(self) -> float:
        """Mean voxel side in world units (SJC averages the three axes)."""
        return sum(2.0 * self.bbox_len / size for size in self.grid_size) / 3.0

    @property
    def step_size(self) -> float:
        """Ray-march step: mean voxel length times step_ratio (0.01 for SJC's defaults)."""
        return self.voxel_length * self.step_ratio

    def to_grid_coords(self, points: torch.Tensor) -> torch.Tensor:
        """World points [n, 3] to grid_sample coordinates [n, 3] ([-1, 1] spans the box)."""
        return points / self.bbox_len

    @property
    def voxels_per_unit(self) -> torch.Tensor:
        """Voxels per world unit along x, y, z: [3] (size / (2 bbox_len))."""
        sizes = torch.tensor(self.grid_size, dtype=torch.float32, device=self.d_scale.device)
        return 0.5 * sizes / self.bbox_len

    def to_voxel_coords(self, points: torch.Tensor) -> torch.Tensor:
        """World points [n, 3] to continuous voxel indices [n, 3] (x, y, z); voxel centres are
        integers and the box spans [-0.5, size - 0.5] on each axis."""
        scale = self.voxels_per_unit.to(points)
        return torch.addcmul(self.bbox_len * scale - 0.5, points, scale)

    def lookup(self, points: torch.Tensor) -> GridLookup:
        """Trilinear lookup of this field's grids at fixed world points [n, 3] (fast path)."""
        size_x, size_y, size_z = self.grid_size
        return GridLookup.at_voxel_coords(
            self.to_voxel_coords(_check_points(points)), (size_z, size_y, size_x)
        )

    def density_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """softplus(raw * exp(d_scale) + density_shift): interpolated raw values to density."""
        return F.softplus(raw * torch.exp(self.d_scale) + self.density_shift)

    def color_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Feature activation: identity for V_SD, 2 sigmoid - 1 for V_SJC."""
        if self.model_type == "V_SJC":
            return 2.0 * torch.sigmoid(features) - 1.0
        return features

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Volume density at world points [n, 3] -> [n] (trilinear raw value, then activation)."""
        raw = _sample_grid(self.raw_density, self.to_grid_coords(_check_points(points)))
        return self.density_from_raw(raw[:, 0])

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """Activated features at world points [n, 3] -> [n, c]."""
        features = _sample_grid(self.feature_grid, self.to_grid_coords(_check_points(points)))
        return self.color_from_features(features)

    def background_color(self, directions: torch.Tensor) -> torch.Tensor:
        """Background for ray directions [n, 3] -> [n, c]: texture looked up by direction (A.6).

        u = atan2(sqrt(x^2 + y^2), z) / pi, v = atan2(y, x) / (2 pi) + 0.5, both mapped to
        [-1, 1]; without a texture SJC blends a constant 1.
        """
        directions = _check_points(directions)
        if self.background is None:
            return directions.new_ones(directions.shape[0], self.channels)
        x, y, z = directions.unbind(-1)
        u = torch.atan2(torch.sqrt(x * x + y * y), z) / math.pi
        v = torch.atan2(y, x) / (2.0 * math.pi) + 0.5
        lookup = (torch.stack([u, v], dim=-1) * 2.0 - 1.0).view(1, -1, 1, 2)
        texture = F.grid_sample(self.background, lookup, align_corners=False)
        return self.color_from_features(texture.view(self.channels, -1).t())

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """Bool [n]: the alpha mask lets these world points [n, 3] through (all if no mask)."""
        points = _check_points(points)
        if not self.alpha_mask_enabled or self.alpha_mask is None:
            return torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        return _sample_grid(self.alpha_mask, self.to_grid_coords(points))[:, 0] > 0

    def param_groups(self, lr: float, bg_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: grids and d_scale at `lr`, the background alone at `bg_lr`."""
        groups: list[dict[str, Any]] = [
            {"params": [self.raw_density, self.feature_grid, self.d_scale], "lr": lr}
        ]
        if self.background is not None:
            groups.append({"params": [self.background], "lr": bg_lr})
        return groups

    def cell_density_bound(self) -> torch.Tensor:
        """Upper bound of the density inside each cell between 8 voxel centres (no gradient).

        Returns [z + 1, y + 1, x + 1]: cell (k, j, i) spans voxel centres k - 1..k, j - 1..j,
        i - 1..i, padded with raw 0 outside the grid as the trilinear lookup is.
        """
        with torch.no_grad():
            cell_max = F.pad(self.raw_density[0, 0], (1, 1, 1, 1, 1, 1))
            # The max over 2 x 2 x 2 neighbours, one axis at a time (3x faster than max_pool3d).
            for axis in range(3):
                size = cell_max.shape[axis]
                cell_max = torch.maximum(
                    cell_max.narrow(axis, 0, size - 1), cell_max.narrow(axis, 1, size - 1)
                )
            return self.density_from_raw(cell_max)

    def voxel_alpha(self) -> torch.Tensor:
        """Alpha 1 - exp(-density * voxel_length) at every voxel centre -> [1, 1, z, y, x]."""
        with torch.no_grad():
            density = self.density_from_raw(self.raw_density)
        return -torch.expm1(-density * self.voxel_length)

    @torch.no_grad()
    def update_alpha_mask(self) -> None:
        """Alpha mask: voxels whose 3^3 neighbourhood has alpha > alpha_mask_thres (SJC's
        `make_alpha_mask`); rendering then treats points where the mask samples to 0 as empty."""
        pooled = F.max_pool3d(
            self.voxel_alpha(),
            kernel_size=ALPHA_MASK_POOL_SIZE,
            stride=1,
            padding=ALPHA_MASK_POOL_SIZE // 2,
        )
        self.alpha_mask = (pooled > self.alpha_mask_threshold).to(torch.float32)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A checkpoint may come from another grid size or carry an alpha mask: adopt its shapes.
        for name in ("raw_density", "feature_grid"):
            key = prefix + name
            parameter = getattr(self, name)
            if key in state_dict and state_dict[key].shape != parameter.shape:
                parameter.data = torch.empty_like(state_dict[key], device=parameter.device)
        mask_key = prefix + "alpha_mask"
        if mask_key in state_dict:
            self.alpha_mask = torch.empty_like(state_dict[mask_key], device=self.d_scale.device)
        else:
            self.alpha_mask = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _sample_grid(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of grid [1, c, z, y, x] at grid coordinates [n, 3] (x, y, z) -> [n, c]."""
    n = coords.shape[0]
    values = F.grid_sample(grid, coords.reshape(1, n, 1, 1, 3).to(grid.dtype), align_corners=False)
    return values.view(grid.shape[1], n).t()


def _check_points(points: torch.Tensor) -> torch.Tensor:
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape [n, 3], got {list(points.shape)}")
    return points


def _check_grid(name: str, grid: torch.Tensor, channels: int) -> None:
    if grid.dim() != 5 or grid.shape[0] != 1 or grid.shape[1] != channels:
        raise ValueError(f"{name} must have shape [1, {channels}, z, y, x], got {list(grid.shape)}")
