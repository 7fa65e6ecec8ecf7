"""Cameras: focal length from FoV, look-at poses, SJC's seeded training sampler, the test spiral."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sjc_dsds.config import POLAR_PARAMETER_CLIP_RAD, PoseConfig

# The spiral's horizontal radius never drops below this (SJC's `spiral_poses`).
SPIRAL_MIN_HORIZONTAL_RADIUS = 0.5


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: pose, horizontal field of view and image size (OpenGL, looks down -z)."""

    cam_to_world: torch.Tensor
    fov_deg: float
    height: int
    width: int

    def __post_init__(self) -> None:
        if tuple(self.cam_to_world.shape) != (4, 4):
            raise ValueError(
                f"cam_to_world must have shape [4, 4], got {list(self.cam_to_world.shape)}"
            )
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")

    @property
    def device(self) -> torch.device:
        """Device of the pose tensor."""
        return self.cam_to_world.device

    @property
    def focal_px(self) -> float:
        """Focal length in pixels, f = (width / 2) / tan(fov / 2)."""
        return focal_from_fov(self.fov_deg, self.width)

    def to(self, device: torch.device | str) -> Camera:
        """The same camera with its pose on `device`."""
        return Camera(self.cam_to_world.to(device), self.fov_deg, self.height, self.width)


@dataclass(frozen=True, eq=False)
class TrainView:
    """One training camera with SJC's angles and its view label (front / side / back / overhead)."""

    camera: Camera
    azimuth_deg: float
    elevation_deg: float
    label: str


def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length in pixels for a horizontal field of view: (width / 2) / tan(fov / 2)."""
    return (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


def look_at(
    eye: torch.Tensor | tuple[float, float, float],
    target: torch.Tensor | tuple[float, float, float] = (0.0, 0.0, 0.0),
    up: torch.Tensor | tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> torch.Tensor:
    """Camera-to-world [4, 4] float32 of a camera at `eye` looking at `target` (looks down -z).

    Columns are the camera's x (right), y (up), z (backwards) axes and the eye, as SJC's
    `camera_pose(eye, target - eye, up)`.
    """
    return look_at_batch(_as_points(eye), _as_points(target), _as_points(up))[0]


def look_at_batch(eyes: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Batched `look_at`: eyes [n, 3], target and up [3] or [n, 3] -> cam_to_world [n, 4, 4]."""
    eyes = eyes.to(torch.float64)
    backward_axis = _unit(eyes - target.to(eyes))
    right_axis = torch.linalg.cross(up.to(eyes).expand_as(eyes), backward_axis, dim=-1)
    if bool((right_axis.norm(dim=-1) < 1e-9).any()):
        raise ValueError("look_at: the viewing direction is parallel to `up`")
    right_axis = _unit(right_axis)
    up_axis = torch.linalg.cross(backward_axis, right_axis, dim=-1)
    cam_to_world = torch.zeros(eyes.shape[0], 4, 4, dtype=torch.float64, device=eyes.device)
    cam_to_world[:, :3, 0] = right_axis
    cam_to_world[:, :3, 1] = up_axis
    cam_to_world[:, :3, 2] = backward_axis
    cam_to_world[:, :3, 3] = eyes
    cam_to_world[:, 3, 3] = 1.0
    return cam_to_world.to(torch.float32)


def view_label(azimuth_deg: float, elevation_deg: float, pose: PoseConfig) -> str:
    """SJC's view label of a camera direction: overhead above an elevation, else by azimuth.

    Front covers azimuths [-front_half_width, +front_half_width) around 0 deg, back
    [180 - back_half_width, 180 + back_half_width); the rest is side. With the defaults this is
    SJC's quadrant rule q = ((h + 45) mod 360) // 90 and its overhead rule v < 30 deg.
    """
    if elevation_deg > pose.overhead_min_elevation_deg:
        return "overhead"
    front_width, back_width = pose.front_half_width_deg, pose.back_half_width_deg
    if (azimuth_deg + front_width) % 360.0 < 2.0 * front_width:
        return "front"
    if (azimuth_deg - 180.0 + back_width) % 360.0 < 2.0 * back_width:
        return "back"
    return "side"


def eye_from_angles(
    azimuth_deg: torch.Tensor, polar_rad: torch.Tensor, radius: float
) -> torch.Tensor:
    """SJC's eye positions [n, 3] from azimuth h [n] and polar angle [n] (from +y).

    x = -R sin(polar) cos(h), y = R cos(polar), z = R sin(polar) sin(h): azimuth 0 puts the eye
    on the -x side (SJC's `train_eye_with_prompts`).
    """
    azimuth_rad = torch.deg2rad(azimuth_deg)
    return radius * torch.stack(
        [
            -torch.sin(polar_rad) * torch.cos(azimuth_rad),
            torch.cos(polar_rad),
            torch.sin(polar_rad) * torch.sin(azimuth_rad),
        ],
        dim=-1,
    )


def polar_from_parameter(polar_parameter_rad: torch.Tensor) -> torch.Tensor:
    """SJC's polar angle arccos(1 - 2 v / pi) of its parameter v: cos(polar) is uniform in v."""
    return torch.arccos(1.0 - 2.0 * polar_parameter_rad / math.pi)


def sample_train_views(n: int, pose: PoseConfig, generator: torch.Generator) -> list[TrainView]:
    """`n` SJC training cameras (docs/method.md A.8), drawn at once from `generator`.

    Azimuth ~ U[0, 360), v ~ U(0, polar_max_deg) clipped to [0.01, pi - 0.01] rad,
    polar = arccos(1 - 2 v / pi), eye at distance R looking at the origin, FoV ~ U[min, max].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    uniforms = torch.rand(n, 3, generator=generator, dtype=torch.float64, device=generator.device)
    uniforms = uniforms.cpu()
    azimuth_deg = 360.0 * uniforms[:, 0]
    polar_parameter = uniforms[:, 1] * math.radians(pose.polar_max_deg)
    polar_parameter = polar_parameter.clamp(
        POLAR_PARAMETER_CLIP_RAD, math.pi - POLAR_PARAMETER_CLIP_RAD
    )
    polar_rad = polar_from_parameter(polar_parameter)
    elevation_deg = 90.0 - torch.rad2deg(polar_rad)
    fov_span = pose.train_fov_max_deg - pose.train_fov_min_deg
    fov_deg = pose.train_fov_min_deg + fov_span * uniforms[:, 2]
    eyes = eye_from_angles(azimuth_deg, polar_rad, pose.R)
    origin = torch.zeros(3, dtype=torch.float64)
    poses = look_at_batch(eyes, origin, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    views = []
    for index in range(n):
        azimuth, elevation = float(azimuth_deg[index]), float(elevation_deg[index])
        camera = Camera(poses[index], float(fov_deg[index]), pose.rend_hw, pose.rend_hw)
        views.append(TrainView(camera, azimuth, elevation, view_label(azimuth, elevation, pose)))
    return views


def sample_train_view(pose: PoseConfig, generator: torch.Generator) -> TrainView:
    """One SJC training camera; `sample_train_views(1, pose, generator)[0]`."""
    return sample_train_views(1, pose, generator)[0]


def spiral_cameras(pose: PoseConfig) -> list[Camera]:
    """SJC's test spiral (docs/method.md A.10): `n_test_frames` cameras over `test_rounds` turns.

    Frame i has t = (i + 1) / n, height R (1 - t), horizontal radius max(R sin(pi t / 2), 0.5),
    angle 360 * rounds * t degrees in the x-z plane, FoV `pose.FoV`, looking at the origin.
    """
    n = pose.n_test_frames
    fractions = torch.arange(1, n + 1, dtype=torch.float64) / n
    angles = torch.deg2rad(360.0 * pose.test_rounds * fractions)
    radii = (pose.R * torch.sin(math.pi * fractions / 2.0)).clamp(min=SPIRAL_MIN_HORIZONTAL_RADIUS)
    eyes = torch.stack(
        [radii * torch.cos(angles), pose.R * (1.0 - fractions), radii * torch.sin(angles)], dim=-1
    )
    origin = torch.zeros(3, dtype=torch.float64)
    poses = look_at_batch(eyes, origin, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    return [Camera(poses[index], pose.FoV, pose.rend_hw, pose.rend_hw) for index in range(n)]


def _as_points(value: torch.Tensor | tuple[float, float, float]) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if tensor.shape[-1] != 3:
        raise ValueError(f"expected a 3-vector, got shape {list(tensor.shape)}")
    return tensor.reshape(-1, 3)


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True)
