"""Device and dtype resolution from config, seeding, and torch.Generator creation."""

from __future__ import annotations

import platform
import random

import torch

from sjc_dsds.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """Turn the `--device` flag (auto, cpu, cuda, cuda:N, mps) into a torch.device, once."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use cpu or auto")
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


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
