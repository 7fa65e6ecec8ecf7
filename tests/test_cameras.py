"""Cameras: intrinsics, look-at, SJC's training sampler and view labels, the test spiral."""

from __future__ import annotations

import math

import pytest
import torch

from sjc_dsds.cameras import (
    Camera,
    eye_from_angles,
    focal_from_fov,
    look_at,
    sample_train_view,
    sample_train_views,
    spiral_cameras,
    view_label,
)
from sjc_dsds.config import PoseConfig


def intrinsics_from_fov(fov_deg: float, height: int, width: int) -> torch.Tensor:
    """SJC's intrinsics [3, 3] (pose.py `get_K`): the oracle of the renderer's ray directions."""
    focal = focal_from_fov(fov_deg, width)
    center_x, center_y = width / 2.0 - 0.5, height / 2.0 - 0.5
    return torch.tensor(
        [[focal, 0.0, -center_x], [0.0, -focal, -center_y], [0.0, 0.0, -1.0]],
        dtype=torch.float32,
    )


def test_intrinsics_from_a_90_degree_fov_match_hand_computed_matrix() -> None:
    # f = (W / 2) / tan(45 deg) = 32; cx = 64 / 2 - 0.5 = 31.5; cy = 48 / 2 - 0.5 = 23.5.
    expected = torch.tensor([[32.0, 0.0, -31.5], [0.0, -32.0, -23.5], [0.0, 0.0, -1.0]])
    torch.testing.assert_close(intrinsics_from_fov(90.0, 48, 64), expected)


def test_intrinsics_unproject_pixels_to_directions_looking_down_minus_z() -> None:
    # Inverse intrinsics applied to (x, y, 1) give ((x - cx) / f, (cy - y) / f, -1): row 0 is
    # the top of the image (+y), column 0 the left (-x).
    height, width, fov = 6, 10, 50.0
    focal = (width / 2) / math.tan(math.radians(fov / 2))
    inverse = torch.linalg.inv(intrinsics_from_fov(fov, height, width).double())
    for x, y in [(0, 0), (9, 5), (4.5, 2.5), (3, 1)]:
        direction = inverse @ torch.tensor([x, y, 1.0], dtype=torch.float64)
        expected = torch.tensor([(x - 4.5) / focal, (2.5 - y) / focal, -1.0], dtype=torch.float64)
        torch.testing.assert_close(direction, expected)


def test_look_at_from_plus_z_is_identity_rotation() -> None:
    # Eye (0, 0, 3) looking at the origin with y up: right = up x back = (1, 0, 0),
    # back = (0, 0, 1), camera up = back x right = (0, 1, 0).
    expected = torch.eye(4)
    expected[2, 3] = 3.0
    torch.testing.assert_close(look_at((0.0, 0.0, 3.0)), expected)


def test_look_at_is_a_rigid_pose_whose_minus_z_points_at_the_target() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        eye = torch.randn(3, generator=generator, dtype=torch.float64) * 2
        target = torch.randn(3, generator=generator, dtype=torch.float64) * 0.3
        pose = look_at(eye, target).double()
        rotation = pose[:3, :3]
        torch.testing.assert_close(rotation.t() @ rotation, torch.eye(3, dtype=torch.float64))
        assert torch.linalg.det(rotation).item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(pose[:3, 3], eye.float().double())
        forward = (target - eye) / (target - eye).norm()
        torch.testing.assert_close(-rotation[:, 2], forward, atol=1e-6, rtol=1e-6)
        # The camera's x axis stays horizontal (y-up world, no roll).
        assert abs(rotation[1, 0].item()) < 1e-6


def test_look_at_along_up_is_rejected() -> None:
    with pytest.raises(ValueError, match="parallel"):
        look_at((0.0, 2.0, 0.0))


def test_eye_positions_follow_sjc_azimuth_convention() -> None:
    # h = 0 on the -x side, h = 90 on +z; polar 0 on +y (x = -R sin p cos h, z = R sin p sin h).
    azimuth = torch.tensor([0.0, 90.0, 180.0, 0.0], dtype=torch.float64)
    polar = torch.tensor([math.pi / 2] * 3 + [0.0], dtype=torch.float64)
    expected = torch.tensor(
        [[-1.5, 0.0, 0.0], [0.0, 0.0, 1.5], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(eye_from_angles(azimuth, polar, 1.5), expected)


@pytest.mark.parametrize(
    ("azimuth", "elevation", "label"),
    [
        (0.0, 0.0, "front"),
        (44.9, 10.0, "front"),
        (45.0, 10.0, "side"),
        (315.0, 10.0, "front"),
        (314.9, 10.0, "side"),
        (135.0, -5.0, "back"),
        (224.9, -5.0, "back"),
        (225.0, -5.0, "side"),
        (90.0, 41.80, "side"),
        (90.0, 41.82, "overhead"),
        (180.0, 80.0, "overhead"),
    ],
)
def test_view_label_defaults_are_sjc_quadrants_and_overhead_rule(
    azimuth: float, elevation: float, label: str
) -> None:
    # Overhead above arcsin(2/3) = 41.8103 deg; quadrants [315, 45) front, [135, 225) back.
    assert view_label(azimuth, elevation, PoseConfig()) == label


def test_view_label_ranges_are_configurable() -> None:
    pose = PoseConfig(
        front_half_width_deg=30.0, back_half_width_deg=60.0, overhead_min_elevation_deg=60.0
    )
    assert view_label(29.0, 0.0, pose) == "front"
    assert view_label(31.0, 0.0, pose) == "side"
    assert view_label(121.0, 0.0, pose) == "back"
    assert view_label(119.0, 0.0, pose) == "side"
    assert view_label(0.0, 50.0, pose) == "front"
    assert view_label(0.0, 61.0, pose) == "overhead"


def test_sampled_views_are_reproducible_from_the_seed() -> None:
    pose = PoseConfig()
    first = sample_train_views(20, pose, torch.Generator().manual_seed(3))
    second = sample_train_views(20, pose, torch.Generator().manual_seed(3))
    other = sample_train_views(20, pose, torch.Generator().manual_seed(4))
    for a, b in zip(first, second):
        assert torch.equal(a.camera.cam_to_world, b.camera.cam_to_world)
        assert (a.azimuth_deg, a.elevation_deg, a.label) == (
            b.azimuth_deg,
            b.elevation_deg,
            b.label,
        )
        assert a.camera.fov_deg == b.camera.fov_deg
    assert any(a.azimuth_deg != c.azimuth_deg for a, c in zip(first, other))
    single = sample_train_view(pose, torch.Generator().manual_seed(3))
    assert torch.equal(single.camera.cam_to_world, first[0].camera.cam_to_world)


def test_sampled_views_stay_in_sjc_ranges_and_look_at_the_origin() -> None:
    pose = PoseConfig()
    views = sample_train_views(2000, pose, torch.Generator().manual_seed(0))
    # Elevation is 90 - arccos(1 - 2 v / pi) deg with v in [0.01, 100 deg]: the method notes'
    # [-6.38, 83.53] to its two decimals.
    low = 90 - math.degrees(math.acos(1 - 2 * math.radians(100) / math.pi))
    high = 90 - math.degrees(math.acos(1 - 2 * 0.01 / math.pi))
    assert low == pytest.approx(-6.38, abs=0.005) and high == pytest.approx(83.53, abs=0.005)
    for view in views:
        camera = view.camera
        assert 0.0 <= view.azimuth_deg < 360.0
        assert low - 1e-9 <= view.elevation_deg <= high + 1e-9
        assert 40.0 <= camera.fov_deg <= 70.0
        assert (camera.height, camera.width) == (64, 64)
        eye = camera.cam_to_world[:3, 3].double()
        assert eye.norm().item() == pytest.approx(1.5, abs=1e-5)
        assert math.degrees(math.asin(eye[1].item() / 1.5)) == pytest.approx(
            view.elevation_deg, abs=1e-3
        )
        torch.testing.assert_close(
            -camera.cam_to_world[:3, 2].double(), -eye / eye.norm(), atol=1e-5, rtol=0
        )
    assert min(v.elevation_deg for v in views) < low + 2
    assert max(v.elevation_deg for v in views) > high - 2


def test_sampled_heights_are_uniform_so_views_are_uniform_in_area() -> None:
    # cos(polar) = 1 - 2 v / pi with v ~ U(0, 100 deg): uniform on [-1/9, 1], mean 4/9.
    # Over 20000 draws its standard error is (10/9) / sqrt(12 * 20000) = 0.0023; allow 5 sigma.
    views = sample_train_views(20000, PoseConfig(), torch.Generator().manual_seed(1))
    heights = torch.tensor([math.sin(math.radians(v.elevation_deg)) for v in views])
    assert heights.mean().item() == pytest.approx(4 / 9, abs=0.0115)
    # Quartiles of U(-1/9, 1) at 1/4 and 3/4: 1/6 and 13/18; binomial sd of a share ~0.003.
    assert (heights < 1 / 6).float().mean().item() == pytest.approx(0.25, abs=0.015)
    assert (heights < 13 / 18).float().mean().item() == pytest.approx(0.75, abs=0.015)


def test_view_labels_match_sjc_prefix_rule_and_shares() -> None:
    # SJC: overhead if v < 30 deg, else quadrant q = ((h + 45) mod 360) // 90 of
    # (front, side, back, side). Shares: overhead 30/100, others 70 % split 1:2:1 by azimuth.
    views = sample_train_views(20000, PoseConfig(), torch.Generator().manual_seed(2))
    quadrants = ["front", "side", "back", "side"]
    for view in views:
        polar = math.radians(90.0 - view.elevation_deg)
        polar_parameter = (1.0 - math.cos(polar)) * math.pi / 2  # inverse of arccos(1 - 2v/pi)
        if abs(polar_parameter - math.radians(30)) < 1e-9:
            continue
        expected = (
            "overhead"
            if polar_parameter < math.radians(30)
            else quadrants[int(((view.azimuth_deg + 45) % 360) // 90)]
        )
        assert view.label == expected
    shares = {name: sum(v.label == name for v in views) / len(views) for name in quadrants}
    shares["overhead"] = sum(v.label == "overhead" for v in views) / len(views)
    # Binomial standard deviation at n = 20000 is at most 0.0035; allow 4 sigma.
    for name, share in {"overhead": 0.30, "front": 0.175, "side": 0.35, "back": 0.175}.items():
        assert shares[name] == pytest.approx(share, abs=0.014)


def test_spiral_follows_sjc_heights_radii_and_turns() -> None:
    pose = PoseConfig()
    cameras = spiral_cameras(pose)
    assert len(cameras) == 100
    for index in (0, 1, 17, 50, 99):
        fraction = (index + 1) / 100
        radius = max(1.5 * math.sin(math.pi * fraction / 2), 0.5)
        angle = math.radians(360 * 3 * fraction)
        expected = torch.tensor(
            [radius * math.cos(angle), 1.5 * (1 - fraction), radius * math.sin(angle)]
        )
        camera = cameras[index]
        torch.testing.assert_close(camera.cam_to_world[:3, 3], expected, atol=1e-6, rtol=0)
        eye = camera.cam_to_world[:3, 3]
        torch.testing.assert_close(
            -camera.cam_to_world[:3, 2], -eye / eye.norm(), atol=1e-6, rtol=0
        )
        assert (camera.fov_deg, camera.height, camera.width) == (60.0, 64, 64)
    # The first frame sits near the top with the 0.5 radius floor; the last on the equator at R.
    assert cameras[0].cam_to_world[:3, 3][[0, 2]].norm().item() == pytest.approx(0.5, abs=1e-6)
    assert cameras[-1].cam_to_world[1, 3].item() == pytest.approx(0.0, abs=1e-6)


def test_camera_validates_and_moves_between_devices() -> None:
    with pytest.raises(ValueError, match="4, 4"):
        Camera(torch.eye(3), 60.0, 8, 8)
    with pytest.raises(ValueError, match="fov_deg"):
        Camera(torch.eye(4), 180.0, 8, 8)
    camera = Camera(look_at((1.0, 2.0, 3.0)), 45.0, 8, 12)
    moved = camera.to("cpu")
    assert torch.equal(moved.cam_to_world, camera.cam_to_world)
    assert (moved.fov_deg, moved.height, moved.width) == (45.0, 8, 12)
