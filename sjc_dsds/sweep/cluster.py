"""`--executor slurm|debug` through submitit: one job array, checkpointable jobs that requeue.

On SLURM's pre-emption or time-limit signal (USR2, `signal_delay_s` before the kill) submitit
calls `RunJob.checkpoint`: the run finishes its step, writes a checkpoint and stops; submitit
requeues the task, and the requeued task resumes the run from that checkpoint.
submitit is the optional extra `sweep`: `pip install -e ".[sweep]"`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from sjc_dsds.errors import UserError
from sjc_dsds.sweep.execute import ModelCache, Outcome, execute_run
from sjc_dsds.sweep.spec import SlurmSettings, SweepRun
from sjc_dsds.sweep.status import sweep_folder

JOBS_FILE = "slurm_jobs.json"


def import_submitit() -> Any:
    """The submitit module, or a one-line error naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--executor slurm/debug needs submitit: pip install 'sjc-dsds[sweep]' "
            "(or pip install submitit); --executor local does not"
        ) from None
    return submitit


def submitit_folder(root: Path) -> Path:
    """Where submitit keeps its pickles and the tasks' stdout/stderr (one folder per job)."""
    return (sweep_folder(root) / "submitit" / "%j").absolute()


class RunJob:
    """One sweep run as a submitit job; `checkpoint` is submitit's pre-emption hook."""

    def __init__(self, run: SweepRun, root: str) -> None:
        self.run, self.root = run, str(root)
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run": self.run, "root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run"], state["root"])

    def __call__(self) -> Outcome:
        """Run or resume the run; the run works in a thread so the signal hook can wait for it."""
        job_id = _link_logs(self.run)
        self._stop = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["outcome"] = execute_run(
                    self.run, Path(self.root), ModelCache(), stop=self._stop, job_id=job_id
                )
            except BaseException as error:  # noqa: BLE001 - re-raised in the job's main thread
                box["error"] = error

        self._thread = threading.Thread(target=work, name=f"run-{self.run.name}")
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(0.5)
        if "error" in box:
            raise box["error"]
        return box["outcome"]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Pre-emption: stop the run at a checkpoint, then hand submitit a fresh job to requeue."""
        submitit = import_submitit()
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
        return submitit.helpers.DelayedSubmission(RunJob(self.run, self.root))


def _link_logs(run: SweepRun) -> str | None:
    """Symlink the task's submitit stdout/stderr into the run directory; returns the job id."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        paths, job_id = env.paths, env.job_id
    except (ImportError, RuntimeError, KeyError):
        return None
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for source, suffix in ((paths.stdout, "out"), (paths.stderr, "err")):
        link = run.run_dir / f"slurm-{job_id}.{suffix}"
        if not link.is_symlink():
            os.symlink(source, link)
    return job_id


def slurm_parameters(settings: SlurmSettings, max_parallel: int | None = None) -> dict[str, Any]:
    """sbatch-level parameters for submitit's SlurmExecutor.update_parameters."""
    params: dict[str, Any] = {
        "job_name": settings.job_name,
        "time": settings.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_task,
        "mem": _mem_text(settings.mem_gb),
        "signal_delay_s": settings.signal_delay_s,
    }
    if settings.gpus_per_node:
        params["gpus_per_node"] = settings.gpus_per_node
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(settings, name):
            params[name] = getattr(settings, name)
    parallel = max_parallel or settings.max_parallel
    if parallel:
        params["array_parallelism"] = parallel
    if settings.setup:
        params["setup"] = list(settings.setup)
    if settings.additional:
        params["additional_parameters"] = dict(settings.additional)
    return params


def _mem_text(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if float(mem_gb).is_integer() else f"{int(mem_gb * 1024)}MB"


def make_executor(kind: str, root: Path, settings: SlurmSettings, max_parallel: int | None):
    """A submitit executor: 'slurm' (needs srun on PATH) or 'debug' (in this process)."""
    submitit = import_submitit()
    folder = submitit_folder(root)
    if kind == "debug":
        return submitit.DebugExecutor(folder)
    try:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=settings.max_requeues)
    except RuntimeError as error:
        message = f"--executor slurm: {error} (try --dry_run to see the submission)"
        raise UserError(message) from None
    executor.update_parameters(**slurm_parameters(settings, max_parallel))
    return executor


def sbatch_script(runs: list[SweepRun], root: Path, settings: SlurmSettings, max_parallel=None):
    """The sbatch file submitit would submit for `runs` as one array (no SLURM needed)."""
    submitit = import_submitit()
    from submitit.slurm import slurm

    class _NoSrunCheck(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    executor = _NoSrunCheck(submitit_folder(root), max_num_timeout=settings.max_requeues)
    executor.update_parameters(**slurm_parameters(settings, max_parallel))
    params = {**executor.parameters, "map_count": len(runs)}
    return slurm._make_sbatch_string(
        command=executor._submitit_command_str, folder=executor.folder, **params
    )


def submit_runs(executor: Any, runs: list[SweepRun], root: Path) -> list[Any]:
    """Submit the runs as one job array; records their job ids in ROOT/.sweep/slurm_jobs.json."""
    jobs = []
    with executor.batch():
        for run in runs:
            jobs.append(executor.submit(RunJob(run, str(root))))
    ids = {run.name: str(job.job_id) for run, job in zip(runs, jobs)}
    path = sweep_folder(root) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **ids}, indent=2) + "\n")
    return jobs


def wait_for(jobs: list[Any]) -> list[Outcome]:
    """Results of submitted jobs (runs the debug executor's jobs here, one after the other)."""
    outcomes = []
    for job in jobs:
        outcomes.extend(job.results())
    sys.stdout.flush()
    return outcomes
