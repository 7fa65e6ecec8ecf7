"""Renderer: rays, box intersection, closed-form scenes, fast vs dense reference, gradients."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch

from sjc_dsds.cameras import Camera, look_at, sample_train_views
from sjc_dsds.config import PoseConfig, SJCConfig, VoxConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import (
    BACKGROUND_DEPTH,
    RenderOutput,
    box_ticks,
    composite_rays,
    intersect_box,
    march_rays,
    rays_from_camera,
    render_view,
    volume_weights,
)
from sjc_dsds.render_kernels import compiled_kernels_available
from sjc_dsds.render_reference import render_view_dense


def _render_fixed(field: VoxelRadianceField, camera: Camera) -> RenderOutput:
    """The fixed-shape (CUDA) path, run on CPU tensors."""
    return render_view(field, camera, fixed_shape=True)


def _render_compiled(field: VoxelRadianceField, camera: Camera) -> RenderOutput:
    """The packed path's compiled numba kernels (the tensor path where they cannot run, e.g.
    with an alpha mask)."""
    if not compiled_kernels_available():
        pytest.skip("needs numba (the cpu extra)")
    return render_view(field, camera, compiled=None if field.alpha_mask_enabled else True)


def _render_packed(field: VoxelRadianceField, camera: Camera) -> RenderOutput:
    """The packed path's tensor ops (the fallback without numba)."""
    return render_view(field, camera, compiled=False)


RENDERERS = {
    "compiled": _render_compiled,
    "packed": _render_packed,
    "fixed": _render_fixed,
    "dense": render_view_dense,
}
FAST_RENDERERS = ["compiled", "packed", "fixed"]
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_numba = pytest.mark.skipif(
    not compiled_kernels_available(), reason="needs numba (the cpu extra)"
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, thread barriers of the many small ops
    stall whenever the other core is busy (a 10 ms render took 300 ms with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _field(size: int, seed: int = 0, **overrides: object) -> VoxelRadianceField:
    settings: dict[str, object] = {
        "c": 4,
        "model_type": "V_SD",
        "grid_size": size,
        "blend_bg_texture": True,
    }
    settings.update(overrides)
    return VoxelRadianceField.from_config(
        VoxConfig(**settings), torch.device("cpu"), torch.Generator().manual_seed(seed)
    )


def _voxel_centres(size: int) -> torch.Tensor:
    """World positions [z, y, x, 3] of the voxel centres of a size^3 grid on [-1, 1]^3."""
    axis = -1 + (torch.arange(size) + 0.5) * (2 / size)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def _ball(field: VoxelRadianceField, radius: float, inside: float, outside: float) -> None:
    size = field.grid_size[0]
    with torch.no_grad():
        inner = _voxel_centres(size).norm(dim=-1) < radius
        field.raw_density.copy_(torch.where(inner, inside, outside)[None, None])


def test_rays_go_through_pixel_centres_row_major_with_row_zero_on_top() -> None:
    # Identity rotation at (0, 0, 3); fov 90 on 4 px: f = 2, cx = 1.5, cy = 0.5.
    camera = Camera(look_at((0.0, 0.0, 3.0)), 90.0, 2, 4)
    origins, directions = rays_from_camera(camera)
    assert origins.shape == directions.shape == (8, 3)
    torch.testing.assert_close(origins, torch.tensor([[0.0, 0.0, 3.0]]).expand(8, 3))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(8))
    # Pixel (x, y) looks along ((x - 1.5) / 2, (0.5 - y) / 2, -1); ray index = 4 y + x.
    for index, expected in [
        (0, (-0.75, 0.25, -1.0)),
        (7, (0.75, -0.25, -1.0)),
        (1, (-0.25, 0.25, -1.0)),
    ]:
        vector = torch.tensor(expected)
        torch.testing.assert_close(directions[index], vector / vector.norm())


@pytest.mark.parametrize(
    ("origin", "direction", "t_enter", "t_exit", "hit"),
    [
        ((-3.0, 0.0, 0.0), (1.0, 0.0, 0.0), 2.0, 4.0, True),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 0.0, 1.0, True),  # inside: entry clamped to 0
        ((-3.0, 2.0, 0.0), (1.0, 0.0, 0.0), None, None, False),  # passes above the box
        ((3.0, 0.0, 0.0), (1.0, 0.0, 0.0), 0.0, 0.0, False),  # box behind the origin
        ((-2.0, -2.0, -2.0), (1.0, 1.0, 1.0), math.sqrt(3), 3 * math.sqrt(3), True),
        ((-2.0, 0.5, 0.999), (1.0, 0.0, 0.0), 1.0, 3.0, True),  # just inside the z = 1 face
        ((-2.0, 0.5, 1.0), (1.0, 0.0, 0.0), None, None, False),  # in the face plane: t_exit 0
    ],
)
def test_ray_box_intersection_hand_cases(
    origin: tuple[float, ...],
    direction: tuple[float, ...],
    t_enter: float | None,
    t_exit: float | None,
    hit: bool,
) -> None:
    unit = torch.tensor([direction]) / torch.tensor([direction]).norm()
    enter, exit_, hits = intersect_box(torch.tensor([origin]), unit, 1.0)
    assert bool(hits[0]) == hit
    if t_enter is not None:
        assert enter.item() == pytest.approx(t_enter, abs=1e-5)
        assert exit_.item() == pytest.approx(t_exit, abs=1e-5)


def test_march_puts_a_tick_every_step_from_entry_to_exit() -> None:
    camera = sample_train_views(1, PoseConfig(rend_hw=8), torch.Generator().manual_seed(0))[0]
    origins, directions = rays_from_camera(camera.camera)
    step = 0.01
    samples, n_dense = march_rays(origins, directions, 1.0, step)
    enter, exit_, _ = intersect_box(origins, directions, 1.0)
    lengths = (exit_ - enter).double()
    counts = samples.counts.tolist()
    for ray in range(origins.shape[0]):
        ticks = lengths[ray].item() / step
        if abs(ticks - round(ticks)) > 1e-3:  # away from float32 ties at exact multiples
            assert counts[ray] == math.ceil(ticks)
        distances = samples.distances[samples.ray_index == ray].double()
        expected = enter[ray].double() + step * torch.arange(counts[ray], dtype=torch.float64)
        torch.testing.assert_close(distances, expected, atol=1e-5, rtol=0)
    assert n_dense == (int(lengths.max().item() / step) + 1) * origins.shape[0]


@pytest.mark.parametrize("renderer", [*FAST_RENDERERS, "dense"])
def test_constant_density_slab_transmits_exp_minus_density_times_length(renderer: str) -> None:
    # Raw 0 everywhere (zero padding reads 0 too) and shift log(expm1(1.5)): density 1.5.
    density = 1.5
    field = _field(8, density_shift=math.log(math.expm1(density)))
    camera = Camera(look_at((0.0, 0.0, 3.0)), 16.0, 9, 9)
    out = RENDERERS[renderer](field, camera)
    _, directions = rays_from_camera(camera)
    # Every ray enters the z = 1 face and leaves the z = -1 face: chord 2 / |u_z|.
    chords = 2.0 / directions[:, 2].abs().double()
    step = field.step_size
    transmittance = 1.0 - out.opacity.reshape(-1).double()
    continuous = torch.exp(-density * chords)
    # n ticks cover [d, d + step): T lies in (exp(-s (d + step)), exp(-s d)].
    assert (transmittance <= continuous * (1 + 1e-5)).all()
    assert (transmittance >= continuous * math.exp(-density * step) * (1 - 1e-5)).all()
    ticks = chords / step
    clear = (ticks - ticks.round()).abs() > 1e-3
    discrete = torch.exp(-density * step * torch.ceil(ticks))
    torch.testing.assert_close(transmittance[clear], discrete[clear], rtol=1e-5, atol=1e-6)
    # Depth: sum_i a (1 - a)^i (t0 + i step) + T * 10 with a = 1 - exp(-density step).
    alpha = 1 - math.exp(-density * step)
    for ray in torch.nonzero(clear).squeeze(1)[:5].tolist():
        t0 = 2.0 / abs(directions[ray, 2].item())
        n = math.ceil(ticks[ray].item())
        expected = sum(alpha * (1 - alpha) ** i * (t0 + i * step) for i in range(n))
        expected += (1 - alpha) ** n * BACKGROUND_DEPTH
        assert out.depth.reshape(-1)[ray].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("renderer", [*FAST_RENDERERS, "dense"])
def test_sphere_renders_a_disc_of_the_right_radius_from_any_view(renderer: str) -> None:
    radius, distance, fov, side = 0.5, 1.5, 60.0, 32
    field = _field(48)
    _ball(field, radius, inside=10.0, outside=-30.0)
    focal = (side / 2) / math.tan(math.radians(fov / 2))
    # Angular radius asin(r / D) projects to f tan(asin(r / D)) = f r / sqrt(D^2 - r^2) px.
    disc = focal * radius / math.sqrt(distance**2 - radius**2)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pixel_radius = ((cols - (side / 2 - 0.5)) ** 2 + (rows - (side / 2 - 0.5)) ** 2).sqrt()
    for azimuth in (0.0, 90.0, 200.0, 317.0):
        for elevation in (-5.0, 30.0, 75.0):
            azimuth_rad, elevation_rad = math.radians(azimuth), math.radians(elevation)
            eye = distance * torch.tensor(
                [
                    -math.cos(elevation_rad) * math.cos(azimuth_rad),
                    math.sin(elevation_rad),
                    math.cos(elevation_rad) * math.sin(azimuth_rad),
                ]
            )
            opacity = RENDERERS[renderer](field, Camera(look_at(eye), fov, side, side)).opacity
            opacity = opacity.detach()[0, 0]
            # The voxelised surface is within one voxel h = 2/48 of r, i.e. within
            # f h / sqrt(D^2 - r^2) = 0.82 px of the disc edge: pixels 2 px inside are opaque,
            # 2 px outside clear, and the covered area lies between the discs of radius +-h.
            assert (opacity[pixel_radius < disc - 2] > 0.98).all()
            assert (opacity[pixel_radius > disc + 2] < 0.02).all()
            slack = focal * (2 / 48) / math.sqrt(distance**2 - radius**2)
            area = opacity.sum().item()
            assert math.pi * (disc - slack) ** 2 < area < math.pi * (disc + slack) ** 2


@pytest.mark.parametrize("renderer", [*FAST_RENDERERS, "dense"])
def test_weights_sum_to_at_most_one_and_the_background_takes_the_rest(renderer: str) -> None:
    field = _field(20, ray_march_weight_thres=0.0)
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(1)).mul_(3).add_(1)
        field.feature_grid.zero_()
    camera = sample_train_views(1, PoseConfig(rend_hw=12), torch.Generator().manual_seed(5))[0]
    out = RENDERERS[renderer](field, camera.camera)
    opacity = out.opacity.detach()
    assert (out.weights >= 0).all() and (opacity <= 1 + 1e-6).all()
    assert out.weights.sum().item() == pytest.approx(opacity.sum().item(), rel=1e-5)
    # Zero features: what is left of the colour is (1 - sum(w)) bg(direction).
    _, directions = rays_from_camera(camera.camera)
    background = field.background_color(directions).detach().t().reshape(1, 4, 12, 12)
    expected = (1.0 - opacity) * background
    torch.testing.assert_close(out.image.detach(), expected, atol=1e-5, rtol=1e-5)


def test_rays_missing_the_box_see_the_background_at_depth_ten() -> None:
    field = _field(10)
    camera = Camera(look_at((0.0, 0.0, 3.0), (0.0, 0.0, 6.0)), 40.0, 5, 5)
    for renderer in RENDERERS.values():
        out = renderer(field, camera)
        assert torch.count_nonzero(out.opacity) == 0
        torch.testing.assert_close(out.depth, torch.full((1, 1, 5, 5), BACKGROUND_DEPTH))
        _, directions = rays_from_camera(camera)
        background = field.background_color(directions).t().reshape(1, 4, 5, 5)
        torch.testing.assert_close(out.image, background)


def _scene(name: str) -> tuple[VoxelRadianceField, Camera]:
    """Small scenes that exercise every path: fog, random density, object, alpha mask."""
    pose = PoseConfig(rend_hw=24)
    camera = sample_train_views(1, pose, torch.Generator().manual_seed(2))[0].camera
    if name == "initial fog":
        return _field(40), camera
    if name == "random density":
        field = _field(40)
        with torch.no_grad():
            field.raw_density.normal_(generator=torch.Generator().manual_seed(3)).mul_(2)
        return field, camera
    if name == "pixel colours":
        field = _field(40, c=3, model_type="V_SJC")
        with torch.no_grad():
            field.raw_density.normal_(generator=torch.Generator().manual_seed(4))
        return field, camera
    # An opaque object in empty space: empty-space skipping and termination both act.
    field = _field(40, alpha_mask=name == "object with alpha mask")
    _ball(field, 0.45, inside=12.0, outside=-25.0)
    with torch.no_grad():
        field.d_scale.fill_(0.1)
    if name == "object with alpha mask":
        field.update_alpha_mask()
    if name == "camera inside the box":
        camera = Camera(look_at((-0.866, 0.866, 0.866)), 60.0, 24, 24)
    return field, camera


def _loss(out: RenderOutput, generator: torch.Generator) -> torch.Tensor:
    """Image and depth against fixed random weights, plus SJC's emptiness loss on the weights."""
    image_weight = torch.randn(out.image.shape, generator=generator)
    depth_weight = torch.randn(out.depth.shape, generator=generator)
    emptiness = torch.log1p(10.0 * out.weights).sum() / out.n_samples_dense
    return (out.image * image_weight).sum() + (out.depth * depth_weight).sum() + 1e3 * emptiness


@pytest.mark.parametrize(
    "scene",
    [
        "initial fog",
        "random density",
        "pixel colours",
        "object",
        "object with alpha mask",
        "camera inside the box",
    ],
)
@pytest.mark.parametrize("renderer", FAST_RENDERERS)
def test_fast_renderer_matches_dense_reference_image_and_grads(scene: str, renderer: str) -> None:
    field, camera = _scene(scene)
    results = {}
    for name in (renderer, "dense"):
        field.zero_grad(set_to_none=True)
        out = RENDERERS[name](field, camera)
        _loss(out, torch.Generator().manual_seed(0)).backward()
        grads = {key: p.grad.clone() for key, p in field.named_parameters()}
        results[name] = (out, grads)
    (fast, fast_grads), (dense, dense_grads) = results[renderer], results["dense"]
    assert int(fast.n_samples_dense) == dense.n_samples_dense == dense.weights.numel()
    skipping = scene.startswith("object") or scene == "camera inside the box"
    if renderer in ("compiled", "packed") and skipping:
        # Empty space around the object is skipped: far fewer samples than in the box.
        origins, directions = rays_from_camera(camera)
        in_box, _ = march_rays(origins, directions, 1.0, field.step_size)
        assert fast.weights.numel() < in_box.ray_index.numel() / 4
    # float32: the dense path multiplies up to ~350 factors (1 - alpha), the fast one sums
    # optical depths in float64; skipped samples change weights by < 1e-6 per ray.
    for key in ("image", "depth", "opacity"):
        torch.testing.assert_close(
            getattr(fast, key), getattr(dense, key), atol=1e-4, rtol=1e-4, msg=key
        )
    emptiness_fast = torch.log1p(10 * fast.weights).sum() / fast.n_samples_dense
    emptiness_dense = torch.log1p(10 * dense.weights).mean()
    assert emptiness_fast.item() == pytest.approx(emptiness_dense.item(), rel=1e-4, abs=1e-9)
    # d_scale's gradient is sum_v raw_v dL/draw_v (density depends on raw e^d_scale): a sum
    # with cancellations, so its error is measured against the sum of absolute terms.
    terms = field.raw_density.detach() * dense_grads["raw_density"]
    for grads in (fast_grads, dense_grads):
        raw_terms = (field.raw_density.detach() * grads["raw_density"]).sum()
        assert grads["d_scale"].item() == pytest.approx(raw_terms.item(), rel=1e-3, abs=1e-4)
    for key, grad in dense_grads.items():
        scale = terms.abs().sum().item() if key == "d_scale" else grad.abs().max().item()
        error = (fast_grads[key] - grad).abs().max().item()
        assert error <= 1e-4 * scale + 1e-6, (key, error, scale)


@pytest.mark.parametrize("renderer", ["compiled", "packed"])
def test_fast_renderer_matches_dense_reference_at_full_sjc_size(renderer: str) -> None:
    field = VoxelRadianceField.from_config(
        SJCConfig().vox, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    camera = sample_train_views(1, PoseConfig(), torch.Generator().manual_seed(7))[0].camera
    fast, dense = RENDERERS[renderer](field, camera), render_view_dense(field, camera)
    # Initial fog: nothing is skipped, so the packed weights are the dense nonzero ones.
    assert fast.weights.numel() == torch.count_nonzero(dense.weights)
    torch.testing.assert_close(fast.image, dense.image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.depth, dense.depth, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("renderer", ["compiled", "packed"])
def test_render_gradients_match_finite_differences_on_a_tiny_grid(renderer: str) -> None:
    # float64 throughout; colour threshold 0 and a fog density keep the render smooth.
    field = _field(5, ray_march_weight_thres=0.0).double()
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(6)).mul_(0.5)
        field.d_scale.fill_(0.2)
    camera = Camera(look_at((1.2, 0.7, 2.5)).double(), 50.0, 6, 6)

    def objective() -> torch.Tensor:
        return _loss(RENDERERS[renderer](field, camera), torch.Generator().manual_seed(1))

    field.zero_grad(set_to_none=True)
    objective().backward()
    generator = torch.Generator().manual_seed(2)
    for name, parameter in field.named_parameters():
        flat = parameter.data.view(-1)
        grad = parameter.grad.view(-1)
        picks = torch.randperm(flat.numel(), generator=generator)[:4].tolist()
        for index in picks + [int(grad.abs().argmax())]:
            original = flat[index].item()
            with torch.no_grad():
                flat[index] = original + 1e-6
                upper = objective().item()
                flat[index] = original - 1e-6
                lower = objective().item()
                flat[index] = original
            numeric = (upper - lower) / 2e-6
            # Central differences in float64: truncation ~1e-12, rounding ~1e-10 / 1e-6.
            assert numeric == pytest.approx(grad[index].item(), rel=1e-5, abs=1e-7), name


@requires_numba
@pytest.mark.parametrize("model_type", ["V_SD", "V_SJC"])
def test_compiled_kernels_pass_gradcheck_with_every_gradient_path(model_type: str) -> None:
    # float64, colour threshold 0; image, depth and the emptiness term all carry gradients.
    from sjc_dsds.render_kernels import march_and_composite

    c = 4 if model_type == "V_SD" else 3
    field = _field(4, ray_march_weight_thres=0.0, model_type=model_type, c=c).double()
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(8))
        field.d_scale.fill_(0.3)
    camera = Camera(look_at((1.1, 0.8, 2.4)).double(), 50.0, 3, 3)
    origins, directions = rays_from_camera(camera)
    t_enter, counts, ticks = box_ticks(origins, directions, field.bbox_len, field.step_size)

    class WithGrids:
        """The field with other tensors in place of its three parameters."""

        def __init__(self, **grids: torch.Tensor) -> None:
            self.__dict__.update(grids)

        def __getattr__(self, name: str) -> object:
            return getattr(field, name)

    def outputs(
        raw: torch.Tensor, features: torch.Tensor, d_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grids = WithGrids(raw_density=raw, feature_grid=features, d_scale=d_scale)
        sums, weights = march_and_composite(grids, origins, directions, t_enter, counts, ticks)
        return sums, torch.log1p(10.0 * weights)

    params = [p.detach().clone().requires_grad_() for p in (field.raw_density, field.feature_grid)]
    params.append(field.d_scale.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(outputs, tuple(params), atol=1e-6)


@requires_numba
def test_compiled_renderer_refuses_what_it_cannot_do_and_default_falls_back() -> None:
    field, camera = _scene("object with alpha mask")
    with pytest.raises(ValueError, match="alpha mask"):
        render_view(field, camera, compiled=True)
    # The default takes the tensor path there, and gives the dense reference's image.
    torch.testing.assert_close(
        render_view(field, camera).image,
        render_view_dense(field, camera).image,
        atol=1e-4,
        rtol=1e-4,
    )


def test_without_numba_the_default_is_the_tensor_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import sjc_dsds.render_kernels as kernels

    monkeypatch.setattr(kernels, "compiled_kernels_available", lambda: False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled kernels called without numba")

    monkeypatch.setattr(kernels, "march_and_composite", refuse)
    field, camera = _scene("random density")
    out = render_view(field, camera)
    torch.testing.assert_close(
        out.image, render_view_dense(field, camera).image, atol=1e-4, rtol=1e-4
    )
    with pytest.raises(ValueError, match="numba"):
        render_view(field, camera, compiled=True)


def test_volume_weights_and_compositing_pass_gradcheck() -> None:
    generator = torch.Generator().manual_seed(3)
    samples, _ = march_rays(
        torch.tensor([[-2.0, 0.1, 0.2], [0.0, -3.0, 0.3], [0.4, 0.2, 3.0]], dtype=torch.float64),
        torch.tensor([[1.0, 0.0, 0.1], [0.05, 1.0, 0.0], [0.0, 0.1, -1.0]], dtype=torch.float64),
        1.0,
        0.25,
    )
    m = samples.ray_index.shape[0]
    density = torch.rand(m, generator=generator, dtype=torch.float64).requires_grad_()
    colors = torch.randn(m, 3, generator=generator, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: volume_weights(d, samples, 0.25), (density,))
    weights = volume_weights(density.detach(), samples, 0.25).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w, c: composite_rays(w, samples.distances, c, samples), (weights, colors)
    )


def test_render_rejects_a_camera_on_another_device() -> None:
    field = _field(6).to(torch.device("meta"))
    with pytest.raises(ValueError, match="camera.to"):
        render_view(field, Camera(look_at((0.0, 0.0, 3.0)), 40.0, 4, 4))


@requires_cuda
def test_cuda_render_matches_cpu() -> None:
    field, camera = _scene("object")
    cpu = render_view(field, camera)
    device = torch.device("cuda")
    gpu = render_view(field.to(device), camera.to(device))
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, atol=1e-4, rtol=1e-4)


@requires_cuda
@pytest.mark.parametrize("fixed_shape", [None, False])
@pytest.mark.parametrize("scene", ["random density", "object with alpha mask"])
def test_cuda_render_matches_cpu_dense_reference_image_and_grads(
    scene: str, fixed_shape: bool | None
) -> None:
    # None: CUDA's default path (fixed-shape); False: the packed path on CUDA.
    field, camera = _scene(scene)
    device = torch.device("cuda")
    gpu_field = copy.deepcopy(field).to(device)
    results = []
    for render, on in ((render_view_dense, field), (render_view, gpu_field)):
        cam = camera if on is field else camera.to(device)
        kwargs = {} if on is field else {"fixed_shape": fixed_shape}
        out = render(on, cam, **kwargs)
        # The loss on CPU copies (differentiable), with the same random weights for both.
        out = out._replace(
            image=out.image.cpu(),
            depth=out.depth.cpu(),
            opacity=out.opacity.cpu(),
            weights=out.weights.cpu(),
            n_samples_dense=int(out.n_samples_dense),
        )
        _loss(out, torch.Generator().manual_seed(0)).backward()
        grads = {key: p.grad.detach().cpu() for key, p in on.named_parameters()}
        results.append((out, grads))
    (dense, dense_grads), (gpu, gpu_grads) = results
    for key in ("image", "depth", "opacity"):
        torch.testing.assert_close(
            getattr(gpu, key).cpu(), getattr(dense, key), atol=1e-4, rtol=1e-4
        )
    for key, grad in dense_grads.items():
        scale = grad.abs().max().item() if key != "d_scale" else 1.0
        error = (gpu_grads[key] - grad).abs().max().item()
        assert error <= 1e-3 * scale + 1e-5, (key, error, scale)
