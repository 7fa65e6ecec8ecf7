"""Run directory layout: refuse-to-overwrite or resume, config.yaml, metrics.jsonl, atomic IO."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sjc_dsds import __version__
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import CheckpointError, RunDirExistsError

CHECKPOINT_PATTERN = re.compile(r"step_(\d+)\.safetensors$")


def slugify(text: str, max_len: int = 60) -> str:
    """Lower-case file-system-safe name of a prompt: 'A toucan!' -> 'a_toucan'."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:max_len].rstrip("_") or "run"


def default_run_dir(cfg: SJCConfig, now: datetime | None = None) -> Path:
    """outputs/<prompt-slug>/<YYYYmmdd-HHMMSS>: never the working directory itself."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / slugify(cfg.prompt) / stamp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's artefacts."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.json"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def test(self) -> Path:
        return self.root / "test"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}.safetensors"

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None."""
        found = []
        if self.checkpoints.is_dir():
            for path in self.checkpoints.iterdir():
                match = CHECKPOINT_PATTERN.search(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return max(found)[1] if found else None


def check_run_dir(root: Path, resume: bool, overwrite: bool) -> None:
    """Fail before any work if the run directory cannot be used as asked; writes nothing."""
    exists = root.exists() and any(root.iterdir()) if root.is_dir() else root.exists()
    if resume:
        if RunDir(root).latest_checkpoint() is None:
            raise CheckpointError(f"--resume {root}: no checkpoint found in {root / 'checkpoints'}")
        return
    if exists and not overwrite:
        raise RunDirExistsError(
            f"run directory {root} already exists; pass --resume {root} to continue it, "
            "--overwrite to replace it, or choose another --out_dir"
        )


def create_run_dir(root: Path, cfg: SJCConfig, resume: bool, overwrite: bool) -> RunDir:
    """Make (or reuse, on resume) the run directory and write config.yaml with the version."""
    check_run_dir(root, resume, overwrite)
    if overwrite and root.exists() and not resume:
        shutil.rmtree(root)
    run = RunDir(root)
    for folder in (run.images, run.checkpoints):
        folder.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_config(run, cfg)
    return run


def write_config(run: RunDir, cfg: SJCConfig) -> None:
    """config.yaml: the full resolved config plus the package version (reloadable with --config)."""
    data = {"version": __version__, **cfg.model_dump(mode="json")}
    atomic_write_bytes(run.config, yaml.safe_dump(data, sort_keys=False).encode())


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


class MetricsLog:
    """One JSON line per logged step in metrics.jsonl; on resume drops lines past the step."""

    def __init__(self, path: Path, start_step: int = 0) -> None:
        self.path = path
        if start_step > 0 and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", -1) < start_step
            ]
            atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
        self._stream = path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._stream.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
