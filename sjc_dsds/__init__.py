"""sjc-dsds: Score Jacobian Chaining with Debiased Score Distillation Sampling for text-to-3D.

Python API for ablations and sweeps::

    from sjc_dsds import build_config, run_sjc
    cfg = build_config({"family": "toy", "n_steps": 300, "out_dir": "outputs/ablation/a"})
    result = run_sjc(cfg)          # RunResult(run_dir, final_step, metrics)
"""

from __future__ import annotations

from typing import Any

from sjc_dsds.config import SJCConfig, build_config, dump_config, load_config

__version__ = "0.1.0"

__all__ = [
    "RunResult",
    "SJCConfig",
    "__version__",
    "build_config",
    "dump_config",
    "evaluate_run",
    "load_config",
    "run_sjc",
]

_LAZY = {"run_sjc": "optimize", "RunResult": "optimize", "evaluate_run": "evaluate"}


def __getattr__(name: str) -> Any:
    """Import torch-heavy parts only when used, so `run_sjc.py --help` stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sjc_dsds.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sjc_dsds' has no attribute {name!r}")
