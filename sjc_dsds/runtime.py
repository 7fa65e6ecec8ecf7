"""Device and dtype resolution from config, seeding, and torch.Generator creation."""

from __future__ import annotations

import hashlib
import platform
import random
from dataclasses import dataclass

import torch

from sjc_dsds.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """Turn the `--device` flag (auto, cpu, cuda, cuda:N, mps) into a torch.device, once."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"--device must be one of auto, cpu, cuda, cuda:N, mps (got {name!r})"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(f"--device {name}: only {count} CUDA device(s) here (cuda:0..)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here; use cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (libraries we call may use them)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded torch.Generator on `device`; every random draw of a run goes through one."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of a run, stable across processes."""
    digest = hashlib.sha256(f"sjc_dsds:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


STREAM_NAMES: tuple[str, ...] = ("field", "camera", "noise")


@dataclass
class RandomStreams:
    """One generator per source of randomness, each seeded from `--seed`.

    Separate streams keep ablations paired: a different grid size changes the field's initial
    draws but not the training cameras or the noise of any step.
    """

    field: torch.Generator
    camera: torch.Generator
    noise: torch.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        """CPU generators, so a seed gives the same draws on every device."""
        return cls(*(make_generator(stream_seed(seed, name)) for name in STREAM_NAMES))

    def get_state(self) -> dict[str, torch.Tensor]:
        """Copies of every stream's state, by stream name."""
        return {name: getattr(self, name).get_state() for name in STREAM_NAMES}

    def set_state(self, states: dict[str, torch.Tensor]) -> None:
        """Restore the states returned by `get_state`."""
        for name in STREAM_NAMES:
            getattr(self, name).set_state(states[name])


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
