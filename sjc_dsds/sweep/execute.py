"""Running one sweep run inside a worker or a cluster job: prepare, run or resume, record.

A worker keeps its last score model in a `ModelCache` and hands it to `run_sjc(cfg, model=...)`
while the next run has the same model settings. Every failure becomes a one-line reason in the
ledger and the run's `sweep.log`; the caller goes on with the next run.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sjc_dsds.config import SJCConfig
from sjc_dsds.families import FAMILIES
from sjc_dsds.run_dir import RunDir, write_config
from sjc_dsds.sweep.spec import SweepRun
from sjc_dsds.sweep.status import DONE, FAILED, RUNNING, STOPPED, run_status, write_ledger

logger = logging.getLogger(__name__)

RUN_LOG_NAME = "sweep.log"


@dataclass(frozen=True)
class Outcome:
    """What one attempt at a run ended with."""

    name: str
    state: str
    step: int | None = None
    reason: str | None = None


def model_key(cfg: SJCConfig) -> str:
    """Text that is equal for two configs exactly when their score models are the same."""
    data = cfg.model_dump(mode="json")
    # The family's group (without the prompt, read per run; the negative prompt is part of the
    # model's conditioning and stays) and the groups its builder also reads (families.py).
    family = FAMILIES[cfg.family]
    groups = (cfg.family, *family.model_groups)
    parts = {group: {k: v for k, v in data[group].items() if k != "prompt"} for group in groups}
    return json.dumps({"family": cfg.family, "device": cfg.device, **parts}, sort_keys=True)


class ModelCache:
    """The last loaded score model of a worker, reused while the model settings stay the same."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.model: Any = None
        self.loads = 0

    def model_for(self, cfg: SJCConfig) -> Any:
        """The score model of `cfg`: the cached one if its key matches, else a new load."""
        key = model_key(cfg)
        if key != self.key:
            from sjc_dsds.families import build_score_model
            from sjc_dsds.runtime import resolve_device

            self.model, self.key = None, None
            gc.collect()
            self.model = build_score_model(cfg, resolve_device(cfg.device))
            self.key = key
            self.loads += 1
            logger.info("loaded the %s score model (load %d here)", cfg.family, self.loads)
        return self.model


def prepare_run_dir(run: SweepRun, cfg: SJCConfig) -> None:
    """Create RUN with its config.yaml (as run_sjc writes it) unless it exists already."""
    if not RunDir(run.run_dir).config.exists():
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(RunDir(run.run_dir), cfg)


def _one_line(error: BaseException) -> str:
    from sjc_dsds.errors import UserError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}".rstrip(": ")


class _RunLog:
    """Attach a handler writing the package's log records to RUN/sweep.log for one attempt."""

    def __init__(self, run_dir: Path) -> None:
        self.handler = logging.FileHandler(run_dir / RUN_LOG_NAME)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.package = logging.getLogger("sjc_dsds")

    def __enter__(self) -> _RunLog:
        self.package.addHandler(self.handler)
        if self.package.level == logging.NOTSET or self.package.level > logging.INFO:
            self.package.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.package.removeHandler(self.handler)
        self.handler.close()


def _call_run_sjc(cfg: SJCConfig, run: SweepRun, model: Any, stop: threading.Event | None):
    """run_sjc on a prepared run directory: a resume (from step 0 when it has no checkpoint)."""
    from sjc_dsds.optimize import run_sjc

    return run_sjc(cfg, resume=True, model=model, progress=False, stop=stop)


def execute_run(
    run: SweepRun,
    root: Path,
    cache: ModelCache,
    stop: threading.Event | None = None,
    job_id: str | None = None,
) -> Outcome:
    """Run or resume `run` unless it is done; never raises for a failing run (KeyboardInterrupt
    and SystemExit pass through after recording the run as stopped)."""
    status = run_status(run, root)
    if status.state == DONE:
        return Outcome(run.name, DONE, status.step)
    cfg = run.config()
    prepare_run_dir(run, cfg)
    write_ledger(root, run.name, RUNNING, job_id=job_id)
    with _RunLog(run.run_dir):
        logger.info("sweep run %s: %s from step %s", run.name, status.state, status.step or 0)
        try:
            model = cache.model_for(cfg)
            result = _call_run_sjc(cfg, run, model, stop)
        except (KeyboardInterrupt, SystemExit):
            write_ledger(root, run.name, STOPPED, job_id=job_id, reason="interrupted")
            raise
        except Exception as error:  # noqa: BLE001 - one failure must not end the sweep
            return _stopped_or_failed(run, root, error, job_id)
    final = DONE if result.final_step >= cfg.n_steps else STOPPED
    write_ledger(root, run.name, final, job_id=job_id, step=result.final_step)
    return Outcome(run.name, final, result.final_step)


def _stopped_or_failed(run: SweepRun, root: Path, error: Exception, job_id: str | None) -> Outcome:
    from sjc_dsds import errors

    if isinstance(error, errors.RunStopped):
        step = getattr(error, "step", None)
        logger.warning("sweep run %s stopped at step %s (resumable)", run.name, step)
        write_ledger(root, run.name, STOPPED, job_id=job_id, step=step)
        return Outcome(run.name, STOPPED, step)
    reason = _one_line(error)
    logger.error("sweep run %s failed: %s\n%s", run.name, reason, traceback.format_exc())
    write_ledger(root, run.name, FAILED, job_id=job_id, reason=reason)
    return Outcome(run.name, FAILED, reason=reason)
