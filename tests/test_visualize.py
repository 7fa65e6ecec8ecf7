"""Pictures and videos: value ranges, the depth colour map and mp4 frames read back."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from sjc_dsds.evaluate import orbit_l1_frame_difference
from sjc_dsds.visualize import depth_to_rgb, rgb_to_uint8, side_by_side, write_video


def test_rgb_to_uint8_clamps_and_rounds() -> None:
    image = torch.tensor([-0.5, 0.5, 1.5]).reshape(3, 1, 1)
    assert rgb_to_uint8(image).tolist() == [[[0, 128, 255]]]  # 0.5 * 255 = 127.5 rounds to 128


def test_depth_map_is_red_near_and_blue_far() -> None:
    depth = torch.tensor([[1.0, 2.0, 10.0]])
    colours = depth_to_rgb(depth)
    assert colours.shape == (3, 1, 3) and colours.min() >= 0 and colours.max() <= 1
    red_minus_blue = colours[0, 0] - colours[2, 0]
    assert red_minus_blue[0] > 0 > red_minus_blue[2]  # nearest warm, farthest cool


def test_side_by_side_resizes_to_first_height() -> None:
    panel = side_by_side([torch.zeros(3, 8, 8), torch.ones(3, 4, 6)])
    assert panel.shape == (3, 8, 20)
    assert panel[:, :, 8:].eq(1).all()


def test_video_has_every_frame(tmp_path: Path) -> None:
    frames = [torch.full((3, 15, 15), value) for value in (0.0, 0.5, 1.0)]  # odd sides get padded
    path = tmp_path / "orbit.mp4"
    write_video(path, frames, fps=10)
    decoded = iio.imread(path, plugin="FFMPEG")
    assert decoded.shape[:3] == (3, 16, 16)
    means = [float(np.mean(frame)) for frame in decoded]
    assert means[0] < 10 and abs(means[1] - 128) < 10 and means[2] > 245  # lossy codec


def test_orbit_l1_frame_difference_of_steady_and_flickering_orbits() -> None:
    steady = torch.zeros(4, 3, 2, 2)
    flicker = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)] * 2)
    assert orbit_l1_frame_difference(steady) == 0.0
    assert orbit_l1_frame_difference(flicker) == 1.0
