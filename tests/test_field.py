"""Voxel radiance field: storage, activations, background, lookup, resampling, state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sjc_dsds.config import SJCConfig, VoxConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.grid_lookup import GridLookup, transpose_exactly


def _vox(**overrides: object) -> VoxConfig:
    settings: dict[str, object] = {
        "c": 4,
        "model_type": "V_SD",
        "grid_size": (4, 5, 6),
        "blend_bg_texture": True,
    }
    settings.update(overrides)
    return VoxConfig(**settings)


def _field(seed: int = 0, **overrides: object) -> VoxelRadianceField:
    return VoxelRadianceField.from_config(
        _vox(**overrides), torch.device("cpu"), torch.Generator().manual_seed(seed)
    )


def _voxel_centres(field: VoxelRadianceField) -> torch.Tensor:
    """World positions [z, y, x, 3] of every voxel centre, computed from the spec's layout."""
    size_x, size_y, size_z = field.grid_size
    length = field.bbox_len

    def axis(size: int) -> torch.Tensor:
        return -length + (torch.arange(size) + 0.5) * (2 * length / size)

    z, y, x = torch.meshgrid(axis(size_z), axis(size_y), axis(size_x), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def test_from_config_stores_grids_z_y_x_with_sjc_initial_values() -> None:
    field = _field()
    assert field.raw_density.shape == (1, 1, 6, 5, 4)
    assert field.feature_grid.shape == (1, 4, 6, 5, 4)
    assert field.background.shape == (1, 4, 4, 4)
    assert field.grid_size == (4, 5, 6)
    assert torch.count_nonzero(field.raw_density) == 0 and field.d_scale.item() == 0.0
    again = _field()
    assert torch.equal(field.feature_grid, again.feature_grid)
    assert torch.equal(field.background, again.background)
    assert not torch.equal(field.feature_grid, _field(seed=1).feature_grid)
    assert _field(blend_bg_texture=False).background is None


def test_config_channels_follow_the_family() -> None:
    assert SJCConfig().vox.c == 4 and SJCConfig().vox.model_type == "V_SD"
    field = VoxelRadianceField.from_config(
        SJCConfig(family="toy").vox, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    assert field.channels == 3 and field.model_type == "V_SJC"


def test_step_size_is_half_the_mean_voxel_length() -> None:
    # SJC: 2 / 100 * 0.5 = 0.01; for (4, 5, 6) voxels: mean(2/4, 2/5, 2/6) / 2 = 0.20556.
    assert VoxelRadianceField.from_config(
        SJCConfig().vox, torch.device("cpu"), torch.Generator().manual_seed(0)
    ).step_size == pytest.approx(0.01)
    assert _field().step_size == pytest.approx((0.5 + 0.4 + 1 / 3) / 3 / 2)


def test_initial_density_is_softplus_of_the_shift_everywhere() -> None:
    # softplus(-1) = log(1 + e^-1) = 0.313262; zero padding also reads raw 0 at the border.
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(
        _field().density(points), torch.full((50,), math.log1p(math.exp(-1.0)))
    )


def test_density_at_voxel_centres_reads_the_stored_voxel() -> None:
    field = _field()
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(1))
        field.d_scale.fill_(0.3)
    centres = _voxel_centres(field).reshape(-1, 3)
    expected = F.softplus(field.raw_density.detach().reshape(-1) * math.exp(0.3) - 1.0)
    torch.testing.assert_close(field.density(centres).detach(), expected)


def test_density_between_two_centres_interpolates_raw_linearly() -> None:
    field = _field()
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(2))
    centres = _voxel_centres(field)
    raw = field.raw_density.detach()[0, 0]
    # A quarter of the way from voxel (z=2, y=3, x=1) to (z=2, y=3, x=2).
    point = 0.75 * centres[2, 3, 1] + 0.25 * centres[2, 3, 2]
    expected = F.softplus(0.75 * raw[2, 3, 1] + 0.25 * raw[2, 3, 2] - 1.0)
    torch.testing.assert_close(field.density(point[None]).detach()[0], expected)


def test_feature_activations_identity_for_sd_and_bounded_sigmoid_for_pixels() -> None:
    points = torch.rand(40, 3, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    latent = _field()
    pixel = VoxelRadianceField.from_grids(
        _vox(c=3, model_type="V_SJC"),
        latent.raw_density,
        latent.feature_grid[:, :3] * 4,
        latent.background[:, :3],
    )
    raw_features = (
        F.grid_sample(
            latent.feature_grid.detach(), points.view(1, -1, 1, 1, 3), align_corners=False
        )
        .view(4, -1)
        .t()
    )
    torch.testing.assert_close(latent.features(points).detach(), raw_features)
    colors = pixel.features(points).detach()
    torch.testing.assert_close(colors, 2 * torch.sigmoid(4 * raw_features[:, :3]) - 1)
    assert colors.abs().max() < 1


def test_background_is_looked_up_by_direction_angles() -> None:
    # With a 4x4 texture, pixel (row 2, col 1) has grid_sample centre (u', v') = (-0.25, 0.25):
    # u = 0.375 -> polar angle from +z of 0.375 pi; v = 0.625 -> atan2(y, x) = 0.25 pi.
    field = _field()
    polar, azimuth = 0.375 * math.pi, 0.25 * math.pi
    direction = torch.tensor(
        [
            [
                math.sin(polar) * math.cos(azimuth),
                math.sin(polar) * math.sin(azimuth),
                math.cos(polar),
            ]
        ]
    )
    color = field.background_color(direction).detach()
    torch.testing.assert_close(color[0], field.background.detach()[0, :, 2, 1])
    white = _field(blend_bg_texture=False).background_color(direction)
    torch.testing.assert_close(white, torch.ones(1, 4))


def test_param_groups_put_the_background_alone_at_its_rate() -> None:
    field = _field()
    groups = field.param_groups(0.05, 1e-4)
    assert [group["lr"] for group in groups] == [0.05, 1e-4]
    assert groups[1]["params"] == [field.background]
    listed = [id(param) for group in groups for param in group["params"]]
    assert sorted(listed) == sorted(id(param) for param in field.parameters())
    torch.optim.Adamax(groups, lr=0.05)


def test_state_dict_round_trip_restores_every_tensor() -> None:
    # A checkpoint of another grid size: loading adopts its shapes.
    field = _field(alpha_mask=True, grid_size=(6, 6, 6))
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(4))
        field.d_scale.fill_(-0.2)
    field.update_alpha_mask()
    state = field.state_dict()
    fresh = _field(seed=9, alpha_mask=True)
    fresh.load_state_dict(state)
    for name, tensor in field.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.grid_size == (6, 6, 6)
    plain = _field()
    plain.load_state_dict(_field(seed=5).state_dict())
    assert plain.alpha_mask is None
    assert torch.equal(plain.feature_grid, _field(seed=5).feature_grid)


def test_alpha_mask_dilates_dense_voxels_by_one() -> None:
    field = _field(grid_size=(7, 7, 7), alpha_mask=True)
    with torch.no_grad():
        field.raw_density.fill_(-30.0)
        field.raw_density[0, 0, 3, 2, 5] = 20.0
    # Voxel alpha 1 - exp(-softplus(raw - 1) * 2/7): ~1 at raw 20, ~1e-14 at raw -30.
    field.update_alpha_mask()
    expected = torch.zeros(7, 7, 7)
    expected[2:5, 1:4, 4:7] = 1.0
    torch.testing.assert_close(field.alpha_mask[0, 0], expected)
    centres = _voxel_centres(field)
    assert field.occupied(centres[3, 2, 5][None]).item()
    assert not field.occupied(centres[0, 6, 0][None]).item()


def test_cell_density_bound_bounds_every_interpolated_density() -> None:
    field = _field(grid_size=(5, 6, 7))
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(5))
        field.raw_density.mul_(4)
    bound = field.cell_density_bound()
    assert bound.shape == (8, 7, 6)
    points = torch.rand(4000, 3, generator=torch.Generator().manual_seed(6)) * 2 - 1
    coords = field.to_voxel_coords(points)
    cells = (torch.floor(coords) + 1).long()
    density = field.density(points).detach()
    assert (density <= bound[cells[:, 2], cells[:, 1], cells[:, 0]] + 1e-6).all()
    # At a voxel centre the bound of each of its 8 cells is at least that voxel's density.
    assert bound.max() == pytest.approx(F.softplus(field.raw_density.max() - 1).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_lookup_matches_grid_sample_values_and_gradients(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    grids = [
        torch.randn(1, 1, 5, 6, 7, generator=generator, dtype=dtype).requires_grad_(),
        torch.randn(1, 3, 5, 6, 7, generator=generator, dtype=dtype).requires_grad_(),
    ]
    # Points also up to 0.2 outside the box, where grid_sample pads with zeros.
    points = torch.rand(3000, 3, generator=generator, dtype=dtype) * 2.4 - 1.2
    sizes = torch.tensor([7, 6, 5], dtype=dtype)
    lookup = GridLookup.at_voxel_coords((points + 1) * 0.5 * sizes - 0.5, (5, 6, 7))
    ours = lookup.sample(*grids)
    theirs = [
        F.grid_sample(grid, points.view(1, -1, 1, 1, 3), align_corners=False)
        .view(grid.shape[1], -1)
        .t()
        for grid in grids
    ]
    # float32 sums of 8 products differ in the last bits: atol 1e-6 on values of order 1.
    tolerance = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {}
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tolerance)
    upstream = [torch.randn(o.shape, generator=generator, dtype=dtype) for o in ours]
    ours_grad = torch.autograd.grad(ours, grids, upstream)
    theirs_grad = torch.autograd.grad(theirs, grids, upstream)
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, **tolerance)


def test_grid_lookup_passes_gradcheck_on_a_tiny_grid() -> None:
    generator = torch.Generator().manual_seed(8)
    grid = torch.randn(1, 2, 4, 4, 5, generator=generator, dtype=torch.float64)
    points = torch.rand(60, 3, generator=generator, dtype=torch.float64) * 4 - 0.5
    lookup = GridLookup.at_voxel_coords(points, (4, 4, 5))
    assert torch.autograd.gradcheck(
        lambda g: lookup.sample(g)[0], (grid.requires_grad_(),), eps=1e-6, atol=1e-8
    )


def test_grid_lookup_gradient_does_not_depend_on_the_thread_count() -> None:
    # With several torch threads the backward scatters grid rows on parallel Python threads;
    # every row is written by one thread in the serial order, so the sums must be bitwise equal.
    generator = torch.Generator().manual_seed(12)
    grids = [torch.randn(1, c, 6, 7, 8, generator=generator).requires_grad_() for c in (1, 4)]
    points = torch.rand(20000, 3, generator=generator) * torch.tensor([8.0, 7.0, 6.0]) - 0.5
    upstream = [torch.randn(20000, c, generator=generator) for c in (1, 4)]
    results = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            lookup = GridLookup.at_voxel_coords(points, (6, 7, 8))
            results[count] = torch.autograd.grad(lookup.sample(*grids), grids, upstream)
    finally:
        torch.set_num_threads(threads)
    for serial, parallel in zip(results[1], results[3]):
        assert torch.equal(serial, parallel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(8, 3000), (3000, 6), (5, 5), (40, 30)])
def test_transpose_exactly_equals_a_strided_copy(dtype: torch.dtype, shape: tuple) -> None:
    # Normal numbers of magnitudes 1e-30..1e30 and exact zeros: x * 1 + 0 * y must keep x.
    generator = torch.Generator().manual_seed(13)
    magnitude = 10.0 ** torch.randint(-30, 31, shape, generator=generator).to(dtype)
    matrix = torch.randn(shape, generator=generator, dtype=dtype) * magnitude
    matrix[torch.rand(shape, generator=generator) < 0.1] = 0.0
    transposed = transpose_exactly(matrix)
    assert transposed.is_contiguous()
    assert torch.equal(transposed, matrix.t())


def test_field_lookup_agrees_with_field_density() -> None:
    field = _field()
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(10))
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(11)) * 2 - 1
    (raw,) = field.lookup(points).sample(field.raw_density)
    torch.testing.assert_close(field.density_from_raw(raw[:, 0]), field.density(points))


def test_wrong_grid_shapes_are_rejected() -> None:
    field = _field()
    with pytest.raises(ValueError, match="features"):
        VoxelRadianceField.from_grids(
            _vox(), field.raw_density, field.feature_grid[:, :2], field.background
        )
    with pytest.raises(ValueError, match="background"):
        VoxelRadianceField.from_grids(_vox(), field.raw_density, field.feature_grid, None)
    with pytest.raises(ValueError, match="points"):
        field.density(torch.zeros(4, 2))
    copy = VoxelRadianceField.from_grids(
        _vox(), field.raw_density, field.feature_grid, field.background
    )
    with torch.no_grad():
        copy.raw_density.add_(1.0)
    assert torch.count_nonzero(field.raw_density) == 0
