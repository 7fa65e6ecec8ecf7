"""`--executor local`: N worker processes on this machine, one per GPU (pinned with
CUDA_VISIBLE_DEVICES) or CPU processes; each reuses its score model across runs.

Ctrl-C (or SIGTERM) in the driver tells every worker to stop: the running run finishes its step,
writes a checkpoint and the worker exits; a re-run continues. A worker whose driver died (SIGKILL)
stops the same way. Workers run in their own process group, so one Ctrl-C reaches each run once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sjc_dsds.sweep.spec import SweepRun

logger = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass(frozen=True)
class WorkerSlot:
    """One worker: its CUDA_VISIBLE_DEVICES value ('' for a CPU worker) and torch threads."""

    index: int
    cuda_visible_devices: str
    threads: int | None


def plan_workers(
    workers: int | None, gpus: Sequence[int] | None, threads: int | None
) -> list[WorkerSlot]:
    """Worker slots: one per GPU by default (cycled if more workers than GPUs), else CPU ones."""
    if gpus is None:
        gpus = _visible_gpus()
    if gpus:
        count = workers or len(gpus)
        return [WorkerSlot(i, str(gpus[i % len(gpus)]), threads) for i in range(count)]
    count = workers or 1
    per_worker = threads or max(1, (os.cpu_count() or 1) // count)
    return [WorkerSlot(i, "", per_worker) for i in range(count)]


def _visible_gpus() -> list[int]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(part) for part in visible.split(",") if part.strip().isdigit()]
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _watch(stop_all, run_stop: threading.Event, parent_pid: int) -> None:
    """Set the run's stop event when the driver asks for it or has died."""
    while not run_stop.is_set():
        if stop_all.is_set() or os.getppid() != parent_pid:
            run_stop.set()
            return
        time.sleep(POLL_S)


def worker_main(slot: WorkerSlot, root: str, tasks, results, stop_all, parent_pid: int) -> None:
    """A worker process: take runs from `tasks` until none is left or it is told to stop."""
    # Own process group: a terminal's Ctrl-C reaches only the driver, which asks each worker once.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
    if slot.threads:
        os.environ["OMP_NUM_THREADS"] = str(slot.threads)
    import torch

    from sjc_dsds.sweep.execute import ModelCache, Outcome, execute_run

    if slot.threads:
        torch.set_num_threads(slot.threads)
    run_stop = threading.Event()
    threading.Thread(target=_watch, args=(stop_all, run_stop, parent_pid), daemon=True).start()
    cache = ModelCache()
    while not run_stop.is_set():
        try:
            run = tasks.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if run is None:
            break
        results.put(("started", run.name, os.getpid(), slot.index))
        try:
            outcome = execute_run(run, Path(root), cache, stop=run_stop)
        except KeyboardInterrupt:
            outcome = Outcome(run.name, "stopped")
        results.put(("finished", outcome, os.getpid(), cache.loads))
    if os.getppid() != parent_pid:
        os._exit(0)  # the driver is gone: do not wait to flush results nobody reads


def run_local(
    runs: list[SweepRun],
    root: Path,
    slots: list[WorkerSlot],
    on_outcome: Callable[[object], None] | None = None,
) -> list[object]:
    """Run `runs` on worker processes; returns their outcomes. KeyboardInterrupt (Ctrl-C or
    SIGTERM) stops the workers cleanly and is re-raised once they have exited."""
    from sjc_dsds.sweep.execute import model_key

    context = multiprocessing.get_context("spawn")
    tasks, results, stop_all = context.Queue(), context.Queue(), context.Event()
    keys = {run.name: model_key(run.config()) for run in runs}
    # Runs sharing a score model follow each other, so a worker's loaded model gets reused.
    for run in sorted(runs, key=lambda run: keys[run.name]):
        tasks.put(run)
    for _ in slots:
        tasks.put(None)
    processes = [
        context.Process(
            target=worker_main,
            args=(slot, str(root), tasks, results, stop_all, os.getpid()),
            name=f"sweep-worker-{slot.index}",
        )
        for slot in slots[: max(1, min(len(slots), len(runs)))]
    ]
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    outcomes: list[object] = []
    try:
        for process in processes:
            process.start()
        try:
            _collect(processes, results, outcomes, on_outcome)
        except KeyboardInterrupt:
            logger.warning("stopping: each running run saves a checkpoint; re-run to continue")
            stop_all.set()
            _collect(processes, results, outcomes, on_outcome, kill_on_interrupt=True)
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return outcomes


class SweepTerminated(KeyboardInterrupt):
    """SIGTERM reached the driver: stop like Ctrl-C (the CLI exits 75 instead of 130)."""


def _raise_interrupt(signum: int, frame: object) -> None:
    raise SweepTerminated


def _collect(processes, results, outcomes, on_outcome, kill_on_interrupt: bool = False) -> None:
    """Gather results until every worker process has exited."""
    while True:
        try:
            kind, payload, pid, _ = results.get(timeout=POLL_S)
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                _drain(results, outcomes, on_outcome)
                return
            continue
        except KeyboardInterrupt:
            if not kill_on_interrupt:
                raise
            for process in processes:
                process.kill()
            return
        _record(kind, payload, pid, outcomes, on_outcome)


def _drain(results, outcomes, on_outcome) -> None:
    while True:
        try:
            kind, payload, pid, _ = results.get_nowait()
        except queue.Empty:
            return
        _record(kind, payload, pid, outcomes, on_outcome)


def _record(kind, payload, pid, outcomes, on_outcome) -> None:
    if kind == "started":
        logger.info("run %s on worker pid %d", payload, pid)
    elif kind == "finished":
        outcomes.append(payload)
        if on_outcome is not None:
            on_outcome(payload)
