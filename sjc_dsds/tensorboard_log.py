"""Optional TensorBoard events (`--log.tensorboard True`): scalars of every metrics line,
snapshots and the orbit frames. metrics.jsonl stays the record; this is a view of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sjc_dsds.errors import UserError


def require_tensorboard(enabled: bool) -> None:
    """Fail with one line before the run starts when the tensorboard package is missing."""
    if not enabled:
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(
            "--log.tensorboard True needs the tensorboard package: "
            "pip install 'sjc-dsds[tensorboard]'"
        ) from None


class TensorBoardLog:
    """A SummaryWriter on `log_dir`, or a no-op when disabled."""

    def __init__(self, log_dir: Path, enabled: bool) -> None:
        self._writer = None
        if enabled:
            require_tensorboard(True)
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, metrics: dict[str, Any]) -> None:
        """Every finite number of a metrics line at its `step` (strings such as `view` skipped)."""
        if self._writer is None:
            return
        step = int(metrics.get("step", 0))
        for key, value in metrics.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(key, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """An RGB picture [3, h, w] in [0, 1]."""
        if self._writer is not None:
            self._writer.add_image(tag, image.clamp(0, 1), step, dataformats="CHW")

    def orbit(self, frames_dir: Path, step: int) -> None:
        """The orbit frames as one image per frame (tag orbit/frame_i; the slider plays them)."""
        if self._writer is None:
            return
        import imageio.v3 as iio

        for index, path in enumerate(sorted(Path(frames_dir).glob("*.png"))):
            array = torch.from_numpy(iio.imread(path)[..., :3].copy())
            self._writer.add_image("orbit", array.permute(2, 0, 1), index, dataformats="CHW")
        self._writer.add_scalar("orbit_trained_steps", step, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
