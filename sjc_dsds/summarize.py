"""One row per run directory under a folder: status, key flags that differ, final metrics.

`collect_runs(root)` finds every run (a folder with config.yaml), `write_tables` writes CSV and a
markdown table, `plot_curves` draws chosen metrics.jsonl curves across runs (matplotlib extra).
CLI: `python -m sjc_dsds.summarize ROOT [--out table.csv] [--out table.md] [--plot KEYS]`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sjc_dsds.errors import UserError
from sjc_dsds.run_dir import CHECKPOINT_PATTERN, RunDir, atomic_write_bytes, run_is_locked

# Always-present columns, in table order; differing flags and final metrics follow.
BASE_COLUMNS: tuple[str, ...] = ("run", "prompt", "seed", "status", "final_step", "n_steps")
# Config keys that differ between runs by nature and say nothing about the setting.
IGNORED_FLAGS = frozenset({"out_dir", "version", "device", "seed"})
DEFAULT_PLOT_KEYS: tuple[str, ...] = ("loss_emptiness", "score_clipped_frac", "opacity_mean")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'vox': {'grid_size': [8, 8, 8]}} -> {'vox.grid_size': '8,8,8'} (lists joined)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _prompt_of(config: dict[str, Any]) -> str:
    """The user prompt as `SJCConfig.prompt` defines it, read from the raw config dict."""
    if config.get("family") == "toy":
        toy = config.get("toy") or {}
        return toy.get("prompt") or f"a {toy.get('scene', 'head')}"
    return (config.get("sd") or {}).get("prompt", "")


def _checkpoint_steps(run: RunDir) -> list[int]:
    if not run.checkpoints.is_dir():
        return []
    matches = (CHECKPOINT_PATTERN.search(path.name) for path in run.checkpoints.iterdir())
    return sorted(int(match.group(1)) for match in matches if match)


def run_status(run_dir: Path) -> tuple[str, str | None, int | None]:
    """(state, one-line reason, step) from RUN/status.json, else from summary.json/checkpoints.

    States: finished, stopped, failed, running, killed (status says running but no process holds
    the run's lock) and unknown (nothing says how it ended).
    """
    run = RunDir(run_dir)
    status = _read_json(run_dir / "status.json")
    if status is not None and status.get("state"):
        state, reason, step = status["state"], status.get("reason"), status.get("step")
        if state == "running" and not run_is_locked(run_dir):
            state = "killed"
            reason = reason or "status.json says running but no live process holds RUN/.lock"
        return state, reason, step
    summary = _read_json(run.summary)
    steps = _checkpoint_steps(run)
    if summary is not None:
        state = "finished" if summary.get("finished") else "stopped"
        return state, None, summary.get("final_step")
    if steps:
        return "stopped", f"no summary.json; last checkpoint at step {steps[-1]}", steps[-1]
    return "unknown", "no status.json, summary.json or checkpoint", None


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """Scalar final metrics: summary.json's `final_metrics`, then RUN/test/metrics.json on top."""
    metrics: dict[str, Any] = {}
    summary = _read_json(RunDir(run_dir).summary) or {}
    sources = [summary.get("final_metrics") or {}, _read_json(run_dir / "test" / "metrics.json")]
    for source in sources:
        for key, value in (source or {}).items():
            if value is None or isinstance(value, (bool, int, float, str)):
                metrics[key] = value
    return metrics


def _one_run(run_dir: Path, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(row without flags, flattened config) of one run directory."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    state, reason, step = run_status(run_dir)
    relative = run_dir.relative_to(root).as_posix() if run_dir != root else "."
    row = {
        "run": relative,
        "prompt": _prompt_of(config),
        "seed": config.get("seed"),
        "status": state,
        "final_step": step,
        "n_steps": config.get("n_steps"),
        "reason": reason,
    }
    return row, _flatten(config)


def collect_runs(root: Path) -> list[dict[str, Any]]:
    """One flat row per run directory under `root` (sorted by path).

    Keys: run (path relative to root), prompt, seed, status, reason, final_step, n_steps, one
    `--flag` key per config flag whose value differs between the runs, and final metrics by name.
    """
    root = Path(root)
    run_dirs = sorted({path.parent for path in root.rglob("config.yaml")})
    found = [_one_run(run_dir, root) for run_dir in run_dirs]
    keys = sorted({key for _, config in found for key in config} - IGNORED_FLAGS)
    differing = [
        key
        for key in keys
        if len({json.dumps(config.get(key), sort_keys=True) for _, config in found}) > 1
    ]
    rows = []
    for (row, config), run_dir in zip(found, run_dirs, strict=True):
        row.update({f"--{key}": config.get(key) for key in differing})
        row.update(final_metrics(run_dir))
        rows.append(row)
    return rows


def default_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Base columns, then differing flags, then metrics (first-seen order), then the reason."""
    columns = list(BASE_COLUMNS)
    for row in rows:
        for key in row:
            if key.startswith("--") and key not in columns:
                columns.append(key)
    for row in rows:
        for key in row:
            if key not in columns and key != "reason":
                columns.append(key)
    return columns + ["reason"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def write_tables(
    rows: Sequence[dict[str, Any]],
    csv_path: Path | None,
    md_path: Path | None,
    columns: Sequence[str] | None = None,
) -> list[str]:
    """Write the rows as CSV (full precision) and/or a markdown table; returns the columns."""
    columns = list(columns) if columns is not None else default_columns(rows)
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        atomic_write_bytes(Path(csv_path), buffer.getvalue().encode())
    if md_path is not None:
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for row in rows:
            cells = [_cell(row.get(c)).replace("|", "\\|") for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        atomic_write_bytes(Path(md_path), ("\n".join(lines) + "\n").encode())
    return columns


def read_curves(run_dir: Path, keys: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Per key, (steps, values) of the numeric entries in RUN/metrics.jsonl."""
    curves: dict[str, tuple[list[int], list[float]]] = {key: ([], []) for key in keys}
    path = RunDir(run_dir).metrics
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        for key in keys:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                curves[key][0].append(int(record.get("step", len(curves[key][0]))))
                curves[key][1].append(float(value))
    return curves


def plot_curves(
    root: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str], out_path: Path
) -> Path:
    """One panel per metric key, one line per run; needs matplotlib (`pip install .[plot]`)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "the plot needs matplotlib: pip install 'sjc-dsds[plot]' (or pass --no_plot)"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for row in rows:
        curves = read_curves(Path(root) / row["run"], keys)
        for axis, key in zip(axes[0], keys, strict=True):
            steps, values = curves[key]
            if steps:
                axis.plot(steps, values, label=row["run"], linewidth=1)
    for axis, key in zip(axes[0], keys, strict=True):
        axis.set_title(key)
        axis.set_xlabel("step")
    axes[0][0].legend(fontsize="x-small")
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)
    pyplot.close(figure)
    return out_path


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sjc_dsds.summarize", description="Table (and plot) of the runs under ROOT."
    )
    parser.add_argument("root", type=Path, help="Folder searched for run directories.")
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        help="table.csv and/or table.md (repeatable); default ROOT/summary.csv and ROOT/summary.md",
    )
    parser.add_argument(
        "--plot",
        default=",".join(DEFAULT_PLOT_KEYS),
        help="Comma list of metrics.jsonl keys plotted to ROOT/summary.png.",
    )
    parser.add_argument("--no_plot", action="store_true", help="Write no plot.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 with one line on bad input)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        if not args.root.is_dir():
            raise UserError(f"summarize: no such folder {str(args.root)!r}")
        outs = args.out or [args.root / "summary.csv", args.root / "summary.md"]
        bad = [str(path) for path in outs if path.suffix not in (".csv", ".md")]
        if bad:
            raise UserError(f"--out must end in .csv or .md (got {', '.join(bad)})")
        rows = collect_runs(args.root)
        if not rows:
            raise UserError(f"summarize: no run directory (with config.yaml) under {args.root}")
        csv_path = next((p for p in outs if p.suffix == ".csv"), None)
        md_path = next((p for p in outs if p.suffix == ".md"), None)
        write_tables(rows, csv_path, md_path)
        written = [str(p) for p in (csv_path, md_path) if p is not None]
        if not args.no_plot:
            keys = [key.strip() for key in args.plot.split(",") if key.strip()]
            written.append(str(plot_curves(args.root, rows, keys, args.root / "summary.png")))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} runs: wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
