"""Vertex colours of an exported mesh: from the colour grid, or from decoded views projected back.

RGB fields (V_SJC: toy) read the colour grid one voxel inside the surface. Latent fields (V_SD)
have no colours in the grid: K views around the object are rendered, decoded to RGB (the VAE
for SD) and projected onto the vertices each view sees (depth test against the rendered depth),
averaged with weight cos(angle between vertex normal and the direction to the eye).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sjc_dsds.cameras import Camera, eye_from_angles, look_at_batch
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import render_view

# Colour of a vertex that no view sees (mid grey).
UNSEEN_COLOR = 0.5
# Elevations (deg) of the colour views: a ring above and a ring below the equator, alternating.
COLOR_VIEW_ELEVATIONS_DEG = (20.0, -20.0)
# A vertex is visible when it lies at most this many voxel lengths behind the rendered depth.
DEPTH_TOLERANCE_VOXELS = 2.0


def grid_vertex_colors(
    field: VoxelRadianceField, vertices: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """RGB in [0, 1] [n, 3] of an RGB field (features 2 sigmoid - 1) one voxel inside the surface.

    The surface itself lies where density falls off, whose colours mix with empty voxels'.
    """
    device = field.raw_density.device
    inside = torch.as_tensor(vertices - field.voxel_length * normals, dtype=torch.float32)
    with torch.no_grad():
        features = field.features(inside.to(device).clamp(-field.bbox_len, field.bbox_len))
    return ((features[:, :3].cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def color_cameras(n_views: int, radius: float, fov_deg: float, side: int) -> list[Camera]:
    """`n_views` cameras at even azimuths on two rings (+-20 deg elevation), looking at 0."""
    azimuths = torch.arange(n_views, dtype=torch.float64) * (360.0 / n_views)
    elevations = torch.tensor(
        [COLOR_VIEW_ELEVATIONS_DEG[i % 2] for i in range(n_views)], dtype=torch.float64
    )
    eyes = eye_from_angles(azimuths, torch.deg2rad(90.0 - elevations), radius)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    poses = look_at_batch(eyes, torch.zeros(3, dtype=torch.float64), up)
    return [Camera(pose.float(), fov_deg, side, side) for pose in poses]


def _project(camera: Camera, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (x, y) [n, 2] (SJC's intrinsics) and distance to the eye [n]."""
    cam_to_world = camera.cam_to_world.to(points)
    eye = cam_to_world[:3, 3]
    local = (points - eye) @ cam_to_world[:3, :3]  # camera axes: x right, y up, z backwards
    depth_along_axis = (-local[:, 2]).clamp_min(1e-6)
    focal = camera.focal_px
    pixel_x = (camera.width / 2.0 - 0.5) + focal * local[:, 0] / depth_along_axis
    pixel_y = (camera.height / 2.0 - 0.5) - focal * local[:, 1] / depth_along_axis
    return torch.stack([pixel_x, pixel_y], dim=-1), (points - eye).norm(dim=-1)


def _sample_image(image: torch.Tensor, pixels: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear values [n, c] of image [c, H, W] at render-pixel coordinates [n, 2] of a
    `side`-pixel render (the image may be larger, e.g. decoded by the VAE)."""
    normalised = (pixels + 0.5) / side * 2.0 - 1.0
    grid = normalised.view(1, -1, 1, 2).to(image)
    sampled = F.grid_sample(image[None], grid, align_corners=False, padding_mode="border")
    return sampled[0, :, :, 0].t()


@torch.no_grad()
def projected_vertex_colors(
    field: VoxelRadianceField,
    vertices: np.ndarray,
    normals: np.ndarray,
    decode: Callable[[torch.Tensor], torch.Tensor],
    cameras: list[Camera],
) -> tuple[np.ndarray, int]:
    """View-averaged RGB [n, 3] in [0, 1] of decoded renders, and the number of unseen vertices.

    `decode` turns a render [1, c, h, w] into RGB [1, 3, H, W] (H a multiple of h or equal).
    """
    device = field.raw_density.device
    points = torch.from_numpy(np.array(vertices, dtype=np.float32))
    vertex_normals = torch.from_numpy(np.array(normals, dtype=np.float32))
    color_sum = torch.zeros(points.shape[0], 3)
    weight_sum = torch.zeros(points.shape[0])
    tolerance = DEPTH_TOLERANCE_VOXELS * field.voxel_length
    for camera in cameras:
        out = render_view(field, camera.to(device))
        rgb = decode(out.image)[0].float().cpu()
        pixels, distance = _project(camera, points)
        side = camera.width
        inside = (pixels >= -0.5).all(-1) & (pixels <= side - 0.5).all(-1)
        rendered_depth = _sample_image(out.depth[0].float().cpu(), pixels, side)[:, 0]
        eye = camera.cam_to_world[:3, 3].float()
        facing = ((eye - points) / distance[:, None] * vertex_normals).sum(-1).clamp_min(0.0)
        visible = inside & (distance <= rendered_depth + tolerance)
        weight = facing * visible
        color_sum += weight[:, None] * _sample_image(rgb, pixels, side)[:, :3]
        weight_sum += weight
    seen = weight_sum > 0
    colors = torch.full((points.shape[0], 3), UNSEEN_COLOR)
    colors[seen] = color_sum[seen] / weight_sum[seen, None]
    return colors.clamp(0, 1).numpy(), int((~seen).sum())
