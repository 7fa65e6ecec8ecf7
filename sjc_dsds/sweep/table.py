"""The sweep's status table ROOT/sweep.csv and ROOT/sweep.md (written with summarize's writer).

One row per run of the spec, in spec order, including runs not started yet: the sweep's state
(done, running, failed with its one-line reason, stopped, not started), progress, the varying
flags and the final metrics that `summarize.collect_runs` reads from the run directory.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sjc_dsds.summarize import collect_runs, default_columns, write_tables
from sjc_dsds.sweep.spec import SweepRun
from sjc_dsds.sweep.status import ledger_path, read_json, run_status

TABLE_NAMES = ("sweep.csv", "sweep.md")


def sweep_rows(runs: list[SweepRun], root: Path) -> list[dict[str, Any]]:
    """One row per run: summarize's row for its directory, with the sweep's status on top."""
    root = Path(root)
    collected = {row["run"]: row for row in collect_runs(root)} if root.is_dir() else {}
    rows = []
    for run in runs:
        status = run_status(run, root)
        ledger = read_json(ledger_path(root, run.name)) or {}
        row = dict(collected.get(run.name, {"run": run.name}))
        row.update({f"--{key}": value for key, value in run.varying.items() if key != "seed"})
        row.update(
            seed=run.varying["seed"],
            status=status.state,
            final_step=status.step,
            n_steps=status.n_steps,
            attempts=ledger.get("attempts", 0),
            reason=status.reason,
        )
        rows.append(row)
    return rows


def write_sweep_tables(runs: list[SweepRun], root: Path) -> list[dict[str, Any]]:
    """Write ROOT/sweep.csv and ROOT/sweep.md; returns the rows."""
    rows = sweep_rows(runs, root)
    columns = default_columns(rows)
    columns.insert(columns.index("n_steps") + 1, columns.pop(columns.index("attempts")))
    root.mkdir(parents=True, exist_ok=True)
    write_tables(rows, root / TABLE_NAMES[0], root / TABLE_NAMES[1], columns=columns)
    return rows


def format_counts(rows: list[dict[str, Any]]) -> str:
    """'6 done, 1 failed, 1 not started' in a fixed order of states."""
    counts = Counter(row["status"] for row in rows)
    order = ("done", "running", "failed", "stopped", "not started")
    return ", ".join(f"{counts[state]} {state}" for state in order if counts[state])


def format_status(rows: list[dict[str, Any]]) -> str:
    """A terminal table: run, status, step/n_steps and the reason of failed runs."""
    width = max([len(row["run"]) for row in rows] + [3])
    lines = [f"{'run'.ljust(width)}  {'status':<12} {'step':>13}  reason"]
    for row in rows:
        step = f"{row.get('final_step') or 0}/{row.get('n_steps')}"
        reason = row.get("reason") or ""
        lines.append(f"{row['run'].ljust(width)}  {row['status']:<12} {step:>13}  {reason}")
    return "\n".join(lines)
