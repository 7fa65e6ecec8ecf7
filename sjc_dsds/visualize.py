"""Tensors to pictures: RGB to uint8, a depth colour map, side-by-side panels, PNG and mp4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

# A small perceptual colour ramp (dark blue -> cyan -> yellow -> dark red), near to "turbo".
_RAMP = torch.tensor(
    [
        [0.19, 0.07, 0.23],
        [0.16, 0.47, 0.93],
        [0.10, 0.85, 0.65],
        [0.64, 0.99, 0.23],
        [0.98, 0.73, 0.22],
        [0.85, 0.23, 0.04],
        [0.48, 0.02, 0.01],
    ]
)


def rgb_to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, h, w] in [0, 1] -> [h, w, 3] uint8."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def depth_to_rgb(
    depth: torch.Tensor, near: float | None = None, far: float | None = None
) -> torch.Tensor:
    """Colour-map a depth image [h, w] (log depth, near = warm) to RGB [3, h, w] in [0, 1]."""
    log_depth = depth.detach().float().clamp_min(1e-3).log()
    low = log_depth.min() if near is None else torch.tensor(near).log()
    high = log_depth.max() if far is None else torch.tensor(far).log()
    normalised = 1 - ((log_depth - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    position = normalised * (len(_RAMP) - 1)
    lower = position.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (position - lower).unsqueeze(-1)
    ramp = _RAMP.to(depth.device)
    colours = ramp[lower] * (1 - frac) + ramp[lower + 1] * frac
    return colours.permute(2, 0, 1)


def side_by_side(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate RGB images [3, h_i, w_i] side by side, resized to the first one's height."""
    height = images[0].shape[-2]
    resized = []
    for image in images:
        if image.shape[-2] != height:
            scale = height / image.shape[-2]
            size = (height, max(1, round(image.shape[-1] * scale)))
            image = F.interpolate(image[None].float(), size=size, mode="nearest")[0]
        resized.append(image.float().cpu())
    return torch.cat(resized, dim=-1)


def save_png(path: Path, image: torch.Tensor) -> None:
    """Write an RGB image [3, h, w] in [0, 1] as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, rgb_to_uint8(image))


def depth_range(camera_distance: float, bbox_len: float) -> tuple[float, float]:
    """Fixed (near, far) of a run's depth pictures: the box's near and far faces seen from the
    camera distance (background beyond it shows as far)."""
    return max(0.1 * camera_distance, camera_distance - bbox_len), camera_distance + bbox_len


class VideoWriter:
    """H.264 mp4 written frame by frame (RGB [3, h, w] in [0, 1]; sides padded to even)."""

    def __init__(self, path: Path, fps: int = 10) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(path, format="FFMPEG", fps=fps, macro_block_size=1)

    def append(self, frame: torch.Tensor) -> None:
        array = rgb_to_uint8(frame)
        pad_h, pad_w = array.shape[0] % 2, array.shape[1] % 2
        self._writer.append_data(np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge"))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_video(path: Path, frames: Sequence[torch.Tensor], fps: int = 10) -> None:
    """Write RGB frames [3, h, w] in [0, 1] as an H.264 mp4 (sides padded to even numbers)."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.append(frame)
