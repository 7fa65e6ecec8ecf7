"""How a run was made: command line, package and library versions, git commit, device, threads."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sjc_dsds import __version__
from sjc_dsds.runtime import cpu_model

LIBRARIES = ("torch", "diffusers", "transformers", "safetensors", "numpy")


def git_commit(path: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the checkout holding the package, or None when not in one."""
    folder = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run's numbers depend on."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def collect_provenance(device: torch.device, argv: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to say how a run was made (saved in the run directory)."""
    return {
        "argv": list(sys.argv if argv is None else argv),
        "package_version": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
