"""SJC's high-resolution final render: sub-pixel rays, antialiased bottleneck, long spiral movies.

Each frame renders `factor`^2 rays per pixel in chunks of rays, downsamples the render (latents
for SD) with antialiasing to `bottleneck` per side and decodes it (SD: 8x, so 128 -> 1024 px).
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sjc_dsds.cameras import Camera, spiral_cameras
from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import rays_from_camera, render_rays
from sjc_dsds.score import ScoreModel
from sjc_dsds.visualize import VideoWriter, depth_range, depth_to_rgb, save_png, side_by_side

logger = logging.getLogger(__name__)

VIDEO_FPS = 30


@torch.no_grad()
def render_highres_view(
    field: VoxelRadianceField, camera: Camera, factor: int, bottleneck: int, chunk_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render [1, c, b, b] and depth [1, 1, b, b] of `camera` from factor^2 rays per pixel,
    rendered `chunk_rays` at a time and area-averaged with antialiasing to b = `bottleneck`."""
    height, width = camera.height * factor, camera.width * factor
    big = Camera(camera.cam_to_world, camera.fov_deg, height, width)
    origins, directions = rays_from_camera(big)
    features, depths = [], []
    for ray_origins, ray_directions in zip(
        origins.split(chunk_rays), directions.split(chunk_rays), strict=True
    ):
        rgb, depth, *_ = render_rays(field, ray_origins, ray_directions)
        features.append(rgb)
        depths.append(depth)
    image = torch.cat(features).t().reshape(1, field.channels, height, width)
    depth = torch.cat(depths).reshape(1, 1, height, width)
    size = (bottleneck, bottleneck)
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    depth = F.interpolate(depth, size=size, mode="bilinear", antialias=True, align_corners=False)
    return image, depth


def highres_cameras(cfg: SJCConfig) -> list[Camera]:
    """The long spiral (`--eval.highres_n_frames`) without its first `highres_skip_frames`."""
    pose = cfg.pose.model_copy(update={"n_test_frames": cfg.eval.highres_n_frames})
    return spiral_cameras(pose)[cfg.eval.highres_skip_frames :]


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(peak MiB, what was measured): CUDA allocator peak, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS"


@torch.no_grad()
def render_highres_orbit(
    field: VoxelRadianceField, model: ScoreModel, cfg: SJCConfig, out_dir: Path
) -> dict[str, Any]:
    """Write out_dir/frames/*.png, orbit.mp4 (image) and orbit_depth.mp4 (image | depth)."""
    device = field.raw_density.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    settings = cfg.eval
    near, far = depth_range(cfg.pose.R, cfg.vox.bbox_len)
    side = 0
    with (
        VideoWriter(out_dir / "orbit.mp4", VIDEO_FPS) as movie,
        VideoWriter(out_dir / "orbit_depth.mp4", VIDEO_FPS) as depth_movie,
    ):
        for index, camera in enumerate(highres_cameras(cfg)):
            image, depth = render_highres_view(
                field,
                camera.to(device),
                settings.highres_factor,
                settings.highres_bottleneck,
                settings.highres_chunk_rays,
            )
            rgb = model.decode(image)[0].float().cpu()
            side = rgb.shape[-1]
            depth_rgb = depth_to_rgb(depth[0, 0].cpu(), near, far)
            save_png(out_dir / "frames" / f"frame_{index:03d}.png", rgb)
            movie.append(rgb)
            depth_movie.append(side_by_side([rgb, depth_rgb]))
    peak, measured = peak_memory_mib(device)
    logger.info("high-resolution orbit: %d px, peak memory %.0f MiB (%s)", side, peak, measured)
    return {"highres_side": side, "highres_peak_memory_mib": round(peak, 1)}
