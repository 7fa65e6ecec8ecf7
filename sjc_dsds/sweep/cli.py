"""Command line of `python -m sjc_dsds.sweep`: expand, skip done runs, run or submit the rest.

Exit codes: 0 every run done (or, for slurm, submitted); 1 some run failed (the others went on);
2 bad input (one line `error: ...`); 130 stopped by Ctrl-C, 75 by SIGTERM (a re-run continues).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sjc_dsds.errors import ConfigError, UserError
from sjc_dsds.sweep.spec import SweepRun, SweepSpec, expand_runs, load_spec
from sjc_dsds.sweep.status import DONE, FAILED, RUNNING, RunStatus, run_status
from sjc_dsds.sweep.table import format_counts, format_status, write_sweep_tables

EXECUTORS = ("local", "slurm", "debug")
SLURM_FLAGS = (
    "partition",
    "account",
    "qos",
    "time_min",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
)
EXIT_FAILED, EXIT_USER, EXIT_TERM, EXIT_INTERRUPT = 1, 2, 75, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sjc_dsds.sweep", description="Run a sweep spec locally or on SLURM."
    )
    parser.add_argument("spec", help="Sweep spec (YAML).")
    parser.add_argument("--executor", default="local", help="local (default), slurm or debug.")
    parser.add_argument("--dry_run", action="store_true", help="Print the plan; submit nothing.")
    parser.add_argument("--status", action="store_true", help="Write and print the status table.")
    parser.add_argument("--max_parallel", type=int, help="Runs at once (workers / array tasks).")
    parser.add_argument("--root", help="Output root (overrides the spec's root:).")
    parser.add_argument("--workers", type=int, help="Local worker processes (overrides local:).")
    parser.add_argument("--gpus", help="Local GPU ids, e.g. 0,1, or 'none' for CPU workers.")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FLAG=VALUE", help="Add to base: flags."
    )
    for name in SLURM_FLAGS:
        parser.add_argument(f"--slurm.{name}", dest=f"slurm_{name}", help=f"slurm: {name}.")
    return parser


def _load(args: argparse.Namespace) -> tuple[SweepSpec, list[SweepRun]]:
    if args.executor not in EXECUTORS:
        allowed = ", ".join(EXECUTORS)
        raise ConfigError(f"--executor must be one of {allowed} (got {args.executor!r})")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise ConfigError(f"--max_parallel must be >= 1 (got {args.max_parallel})")
    sets = {}
    for item in args.set:
        flag, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--set needs FLAG=VALUE (got {item!r})")
        sets[flag.strip().removeprefix("--")] = value
    spec = load_spec(args.spec, root=args.root, sets=sets)
    slurm = {name: getattr(args, f"slurm_{name}") for name in SLURM_FLAGS}
    slurm = {name: value for name, value in slurm.items() if value is not None}
    local = {"workers": args.workers} if args.workers is not None else {}
    if args.gpus is not None:
        local["gpus"] = [] if args.gpus.lower() == "none" else _int_list(args.gpus)
    if slurm or local:
        try:
            spec = spec.model_validate(
                {
                    **spec.model_dump(),
                    "slurm": {**spec.slurm.model_dump(), **slurm},
                    "local": {**spec.local.model_dump(), **local},
                }
            )
        except ValueError as error:
            raise ConfigError(f"--slurm.*/--workers/--gpus: {error}".splitlines()[0]) from None
    return spec, expand_runs(spec)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"--gpus must be a comma list of GPU ids or none (got {text!r})"
        raise ConfigError(message) from None


def _plan(runs: list[SweepRun], root: Path) -> list[tuple[SweepRun, RunStatus]]:
    """Print what will happen to each run; returns the runs to do with their status."""
    todo = []
    for run in runs:
        status = run_status(run, root)
        if status.state == DONE:
            action = "skip (done)"
        elif status.state == RUNNING:
            action = "skip (running elsewhere)"
        elif status.step:
            action = f"resume from step {status.step}"
        else:
            action = "retry (failed)" if status.state == FAILED else "start"
        print(f"{run.name}: {action}")
        if status.state not in (DONE, RUNNING):
            todo.append((run, status))
    print(f"{len(todo)} of {len(runs)} runs to do")
    return todo


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    package_logger = logging.getLogger("sjc_dsds")
    if not package_logger.handlers:
        package_logger.addHandler(logging.StreamHandler())
        package_logger.setLevel(logging.INFO)
    try:
        spec, runs = _load(args)
        root = Path(spec.root)
        if args.status:
            rows = write_sweep_tables(runs, root)
            print(format_status(rows))
            print(f"{format_counts(rows)}; wrote {root / 'sweep.csv'} and {root / 'sweep.md'}")
            return 0
        todo = [run for run, _ in _plan(runs, root)]
        if args.executor == "local":
            return _run_local(spec, runs, todo, root, args)
        return _run_submitit(spec, runs, todo, root, args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER


def _finish(runs: list[SweepRun], root: Path) -> int:
    rows = write_sweep_tables(runs, root)
    print(format_status(rows))
    print(f"{format_counts(rows)}; wrote {root / 'sweep.csv'} and {root / 'sweep.md'}")
    return EXIT_FAILED if any(row["status"] == FAILED for row in rows) else 0


def _run_local(spec, runs, todo, root: Path, args: argparse.Namespace) -> int:
    from sjc_dsds.sweep.local import SweepTerminated, plan_workers, run_local

    slots = plan_workers(spec.local.workers, spec.local.gpus, spec.local.threads_per_worker)
    if args.max_parallel:
        slots = slots[: args.max_parallel]
    for slot in slots:
        devices = slot.cuda_visible_devices or "'' (CPU)"
        print(f"worker {slot.index}: CUDA_VISIBLE_DEVICES={devices} threads={slot.threads}")
    if args.dry_run or not todo:
        return _finish(runs, root) if not args.dry_run else 0

    def report(outcome) -> None:
        tail = f": {outcome.reason}" if outcome.reason else ""
        print(f"{outcome.name}: {outcome.state} at step {outcome.step}{tail}", flush=True)
        write_sweep_tables(runs, root)

    try:
        run_local(todo, root, slots, on_outcome=report)
    except KeyboardInterrupt as interrupt:
        _finish(runs, root)
        print("stopped; run the same command again to continue", file=sys.stderr)
        return EXIT_TERM if isinstance(interrupt, SweepTerminated) else EXIT_INTERRUPT
    return _finish(runs, root)


def _run_submitit(spec, runs, todo, root: Path, args: argparse.Namespace) -> int:
    from sjc_dsds.sweep import cluster
    from sjc_dsds.sweep.execute import prepare_run_dir

    if args.executor == "slurm":
        params = cluster.slurm_parameters(spec.slurm, args.max_parallel)
        print(f"array size: {len(todo)}")
        for key, value in params.items():
            print(f"sbatch {key}: {value}")
        if args.dry_run:
            if todo:
                print(cluster.sbatch_script(todo, root, spec.slurm, args.max_parallel))
            return 0
    elif args.dry_run:
        return 0
    if not todo:
        return _finish(runs, root)
    executor = cluster.make_executor(args.executor, root, spec.slurm, args.max_parallel)
    for run in todo:
        prepare_run_dir(run, run.config())
    jobs = cluster.submit_runs(executor, todo, root)
    if args.executor == "slurm":
        print(f"submitted job array {str(jobs[0].job_id).split('_')[0]} with {len(jobs)} tasks")
        print(f"follow it with: python -m sjc_dsds.sweep {args.spec} --status")
        write_sweep_tables(runs, root)
        return 0
    cluster.wait_for(jobs)
    return _finish(runs, root)
