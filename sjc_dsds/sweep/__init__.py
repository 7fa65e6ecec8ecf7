"""Sweeps: a YAML spec of runs, executed locally (worker processes) or on SLURM via submitit.

`python -m sjc_dsds.sweep SPEC.yaml --executor local|slurm|debug [--dry_run] [--status]`; see the
README section "Sweeps on one machine or a SLURM cluster".
"""

from sjc_dsds.sweep.spec import SweepRun, SweepSpec, expand_runs, load_spec

__all__ = ["SweepRun", "SweepSpec", "expand_runs", "load_spec"]
