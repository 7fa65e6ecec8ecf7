"""Run directory: layout, safe overwrite, a lock, status, history, metrics.jsonl and atomic IO."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sjc_dsds import __version__
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import ConfigError, RunDirBusyError, RunDirExistsError, StorageError

CHECKPOINT_PATTERN = re.compile(r"step_(\d+)\.safetensors$")
TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
RUN_MARKER = ".sjc_dsds_run"

logger = logging.getLogger(__name__)


def slugify(text: str, max_len: int = 60) -> str:
    """Lower-case file-system-safe name of a prompt: 'A toucan!' -> 'a_toucan'."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:max_len].rstrip("_") or "run"


def default_run_dir(cfg: SJCConfig, now: datetime | None = None) -> Path:
    """outputs/<prompt-slug>/<YYYYmmdd-HHMMSS>-seed<S>-<random>: unique even within one second."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / slugify(cfg.prompt) / f"{stamp}-seed{cfg.seed}-{secrets.token_hex(3)}"


def default_file_mode() -> int:
    """Permissions of an ordinary new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    Any OS error (disk full, read-only, permissions) becomes a one-line StorageError and leaves
    the previous version of `path` in place.
    """
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, default_file_mode())
        os.replace(temp_name, path)
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if temp_name is not None and Path(temp_name).exists():
            Path(temp_name).unlink(missing_ok=True)


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

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def marker(self) -> Path:
        return self.root / RUN_MARKER

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}.safetensors"

    def checkpoint_paths(self) -> list[Path]:
        """Every checkpoint file, oldest step first."""
        found = []
        if self.checkpoints.is_dir():
            for path in self.checkpoints.iterdir():
                match = CHECKPOINT_PATTERN.search(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None."""
        paths = self.checkpoint_paths()
        return paths[-1] if paths else None


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory this package wrote (its marker, or config + layout)."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    config = path / "config.yaml"
    if not config.is_file() or not ((path / "checkpoints").is_dir() or (path / "metrics.jsonl")):
        return False
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "version" in data


def _nested_run_dirs(root: Path) -> list[Path]:
    """Run directories strictly inside `root` (not following symbolic links)."""
    nested = []
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            candidate = Path(dirpath) / name
            if not candidate.is_symlink() and is_run_dir(candidate):
                nested.append(candidate)
    return nested


def check_run_dir(root: Path, resume: bool, overwrite: bool) -> None:
    """Fail before any work if the run directory cannot be used as asked; writes nothing."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out_dir {root} is a file, not a folder; choose another --out_dir")
    if resume:
        if not is_run_dir(root):
            raise ConfigError(f"--resume {root}: not a run directory (no config.yaml)")
        return
    if not root.exists() or not any(root.iterdir()):
        return
    if not overwrite:
        raise RunDirExistsError(
            f"run directory {root} already exists; pass --resume {root} to continue it, "
            "--overwrite to replace it, or choose another --out_dir"
        )
    if root.is_symlink():
        raise RunDirExistsError(f"--overwrite refuses {root}: it is a symbolic link")
    if not is_run_dir(root):
        raise RunDirExistsError(
            f"--overwrite deletes only a run directory written by sjc-dsds, and {root} is not "
            "one; choose another --out_dir"
        )
    nested = _nested_run_dirs(root)
    if nested:
        raise RunDirExistsError(
            f"--overwrite refuses {root}: it contains other runs ({nested[0]}); "
            "choose another --out_dir"
        )


class RunLock:
    """An exclusive lock on a run directory while one process writes it (fcntl, on `.lock`)."""

    def __init__(self, run: RunDir) -> None:
        self.path = run.lock
        self._handle: int | None = None

    def acquire(self) -> RunLock:
        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, default_file_mode())
        except OSError as error:
            raise StorageError(f"cannot write {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunDirBusyError(
                f"run directory {self.path.parent} is in use by another process (pid {holder}); "
                "wait for it to end or stop it first"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


def run_is_locked(root: Path) -> bool:
    """Whether a live process holds the lock of the run directory `root`."""
    path = Path(root) / ".lock"
    if not path.exists():
        return False
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False


def remove_stale_temporaries(run: RunDir) -> list[Path]:
    """Delete temporary files left by a process killed mid-write (call with the lock held)."""
    removed = []
    for folder in (run.root, run.checkpoints):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and TEMP_PATTERN.match(path.name):
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        logger.info("removed %d stale temporary file(s) in %s", len(removed), run.root)
    return removed


def create_run_dir(root: Path, cfg: SJCConfig, resume: bool, overwrite: bool) -> RunDir:
    """Make the run directory (or reuse it, on resume) and write its marker and config.yaml."""
    check_run_dir(root, resume, overwrite)
    run = RunDir(root)
    if overwrite and not resume and root.exists() and any(root.iterdir()):
        RunLock(run).acquire().release()  # refuses a directory another process writes
        shutil.rmtree(root)
    try:
        for folder in (run.images, run.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(f"--out_dir {root}: cannot create it ({error.strerror})") from None
    if not run.marker.exists():
        write_json(run.marker, {"package": "sjc-dsds", "version": __version__})
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


def now_iso() -> str:
    """The current time in ISO 8601 with the UTC offset."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_status(
    run: RunDir,
    state: str,
    step: int,
    n_steps: int,
    reason: str | None = None,
    exit_code: int | None = None,
) -> None:
    """status.json: running, finished, stopped or failed, at which step and why."""
    record = {
        "state": state,
        "step": step,
        "n_steps": n_steps,
        "reason": reason,
        "exit_code": exit_code,
        "updated": now_iso(),
    }
    write_json(run.status, record)


def _open_append(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, default_file_mode())
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None


def _write_line(handle: int, path: Path, record: dict[str, Any]) -> None:
    try:
        os.write(handle, (json.dumps(record) + "\n").encode())
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one whole JSON line with a single write; an OS error becomes a StorageError."""
    handle = _open_append(path)
    try:
        _write_line(handle, path, record)
    finally:
        os.close(handle)


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    """JSON records of a .jsonl file; a torn (unparsable) line is skipped with a warning."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping torn line %d", path, number)
    return records


class MetricsLog:
    """One JSON line per logged step in metrics.jsonl; on resume drops lines past the step."""

    def __init__(self, path: Path, start_step: int = 0) -> None:
        self.path = path
        if path.exists():
            kept = [r for r in _parse_lines(path) if r.get("step", -1) < start_step]
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._handle: int | None = _open_append(path)

    def write(self, record: dict[str, Any]) -> None:
        """One whole line per record, in a single write to the file opened once."""
        if self._handle is None:
            raise ValueError(f"{self.path} is closed")
        _write_line(self._handle, self.path, record)

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All whole records of a metrics.jsonl file."""
    return _parse_lines(path)
