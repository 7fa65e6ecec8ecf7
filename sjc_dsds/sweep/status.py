"""Where each run of a sweep stands (done, running, failed, stopped, not started), and the ledger.

A run's state comes from its directory (summary.json, status.json, checkpoints, the run lock) and
from the sweep's ledger `ROOT/.sweep/runs/<name>.json`, which the worker writes at the start and
end of each attempt: it also records failures that happen before the run directory exists.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sjc_dsds import run_dir as run_dir_module
from sjc_dsds.run_dir import RunDir, write_json
from sjc_dsds.sweep.spec import SweepRun

DONE, RUNNING, FAILED, STOPPED, NOT_STARTED = "done", "running", "failed", "stopped", "not started"
STATES = (DONE, RUNNING, FAILED, STOPPED, NOT_STARTED)


@dataclass(frozen=True)
class RunStatus:
    """One run's state, its progress and (when failed) the one-line reason."""

    state: str
    step: int | None = None
    n_steps: int | None = None
    reason: str | None = None


def sweep_folder(root: Path) -> Path:
    """ROOT/.sweep: the sweep's own files (ledger, submitit folder)."""
    return Path(root) / ".sweep"


def ledger_path(root: Path, name: str) -> Path:
    return sweep_folder(root) / "runs" / f"{name}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_ledger(root: Path, name: str, state: str, **fields: Any) -> dict[str, Any]:
    """Record an attempt's state (atomically); 'running' starts a new attempt."""
    path = ledger_path(root, name)
    record = read_json(path) or {"attempts": 0}
    if state == RUNNING:
        record = {"attempts": record.get("attempts", 0) + 1}
    record.update(
        state=state,
        host=socket.gethostname(),
        pid=os.getpid(),
        updated=datetime.now(UTC).isoformat(timespec="seconds"),
        **fields,
    )
    write_json(path, record)
    return record


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: trust the signal check
    return state not in ("Z", "X")


def _is_live(run: SweepRun, ledger: dict[str, Any] | None) -> bool:
    """A live process works on the run: its lock is held (or its ledger pid is alive here)."""
    if run_dir_module.run_is_locked(run.run_dir):
        return True
    if not ledger or ledger.get("state") != RUNNING:
        return False
    if ledger.get("host") != socket.gethostname():
        return True  # another machine (a SLURM node): its ledger is all we can see from here
    return _pid_alive(int(ledger.get("pid", 0)))


def _checkpoint_step(run: SweepRun) -> int | None:
    latest = RunDir(run.run_dir).latest_checkpoint()
    if latest is None:
        return None
    return int(run_dir_module.CHECKPOINT_PATTERN.search(latest.name).group(1))


def run_status(run: SweepRun, root: Path) -> RunStatus:
    """The state of one run from its directory and the ledger."""
    n_steps = int(run.flags.get("n_steps", 0)) or run.config().n_steps
    summary = read_json(run.run_dir / "summary.json")
    if summary and summary.get("finished"):
        return RunStatus(DONE, summary.get("final_step"), n_steps)
    ledger = read_json(ledger_path(root, run.name))
    status = read_json(run.run_dir / "status.json") or {}
    step = _checkpoint_step(run)
    if _is_live(run, ledger):
        return RunStatus(RUNNING, status.get("step", step), n_steps)
    recorded = ledger.get("state") if ledger else status.get("state")
    if recorded == FAILED:
        reason = (ledger or {}).get("reason") or status.get("reason")
        return RunStatus(FAILED, step, n_steps, reason)
    started = step is not None or ledger is not None or status.get("state") is not None
    return RunStatus(STOPPED if started else NOT_STARTED, step or 0, n_steps)
