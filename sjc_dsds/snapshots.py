"""Pictures a person can read: upscaled, labelled snapshots, fixed-range depth with raw .npy,
and for toy runs the orbit next to the ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from sjc_dsds.config import SJCConfig
from sjc_dsds.visualize import depth_range, depth_to_rgb, rgb_to_uint8, save_png, side_by_side

LABEL_FONT_PX = 14
LABEL_PAD_PX = 3


def upscale(image: torch.Tensor, min_side: int) -> torch.Tensor:
    """Nearest-neighbour upscale of [3, h, w] by the smallest integer factor reaching `min_side`."""
    factor = max(1, -(-min_side // min(image.shape[-2:])))
    if factor == 1:
        return image
    return F.interpolate(image[None].float(), scale_factor=factor, mode="nearest")[0]


def label_image(image: torch.Tensor, lines: Sequence[str]) -> torch.Tensor:
    """[3, h, w] in [0, 1] with a white band of text lines above it: [3, h + band, w]."""
    font = ImageFont.load_default(size=LABEL_FONT_PX)
    band = len(lines) * (LABEL_FONT_PX + LABEL_PAD_PX) + LABEL_PAD_PX
    picture = Image.new("RGB", (image.shape[-1], image.shape[-2] + band), "white")
    picture.paste(Image.fromarray(rgb_to_uint8(image)), (0, band))
    draw = ImageDraw.Draw(picture)
    for index, line in enumerate(lines):
        y = LABEL_PAD_PX + index * (LABEL_FONT_PX + LABEL_PAD_PX)
        draw.text((LABEL_PAD_PX, y), line, fill="black", font=font)
    array = torch.from_numpy(np.asarray(picture).copy())
    return array.permute(2, 0, 1).float() / 255.0


def snapshot_caption(metrics: dict) -> str:
    """'step 40 | front | t 512 | thres 4.25' from a metrics line ('thres off' without clipping)."""
    threshold = metrics.get("score_threshold")
    thres = "off" if threshold is None else f"{threshold:.3g}"
    return f"step {metrics['step']} | {metrics['view']} | t {metrics['t']} | thres {thres}"


def save_snapshot(
    images_dir: Path,
    step: int,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    caption: str,
    cfg: SJCConfig,
) -> None:
    """images/step_N.png (labelled render), images/view_step_N.png (render | depth, labelled),
    images/depth/depth_step_N.npy (raw depth [h, w]); depth colours use the run's fixed range."""
    near, far = depth_range(cfg.pose.R, cfg.vox.bbox_len)
    side = cfg.eval.snapshot_side
    big_rgb = upscale(rgb, side)
    depth_rgb = upscale(depth_to_rgb(depth, near, far), big_rgb.shape[-2])
    save_png(images_dir / f"step_{step:07d}.png", label_image(big_rgb, [caption]))
    depth_caption = f"depth {near:.2f} (warm) .. {far:.2f} (cold)"
    panel = side_by_side([big_rgb, depth_rgb])
    save_png(images_dir / f"view_step_{step:07d}.png", label_image(panel, [caption, depth_caption]))
    (images_dir / "depth").mkdir(parents=True, exist_ok=True)
    np.save(images_dir / "depth" / f"depth_step_{step:07d}.npy", depth.float().cpu().numpy())
