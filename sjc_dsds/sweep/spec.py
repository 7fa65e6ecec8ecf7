"""Sweep specs (YAML): base flags, a grid and/or explicit variants, seeds, an output root.

`expand_runs` turns a spec into one `SweepRun` per run, each with a stable, filesystem-safe and
unique name built from the values that vary (`prompt=a_smiling_rabbit__score_thres=2__seed=0`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sjc_dsds.cli import read_yaml
from sjc_dsds.config import SJCConfig, build_config, iter_flags
from sjc_dsds.errors import ConfigError
from sjc_dsds.run_dir import slugify

# Flags the sweep sets itself for every run.
SWEEP_OWNED_FLAGS = ("out_dir", "seed")
NAME_SEPARATOR = "__"
VALUE_SLUG_LEN = 40


class SweepSpecError(ConfigError):
    """A sweep spec is invalid (unknown key, bad flag, clashing run names)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalSettings(_Section):
    """`local:` block: worker processes of `--executor local`."""

    workers: int | None = Field(None, ge=1, description="Worker processes; default one per GPU.")
    gpus: list[int] | None = Field(None, description="GPU ids; default all visible; [] = CPU.")
    threads_per_worker: int | None = Field(None, ge=1, description="Torch threads of a CPU worker.")


class SlurmSettings(_Section):
    """`slurm:` block: resources of each array task of `--executor slurm`."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_min: int = Field(60, ge=1, description="Wall-clock limit of one task in minutes.")
    gpus_per_node: int = Field(1, ge=0)
    cpus_per_task: int = Field(8, ge=1)
    mem_gb: float = Field(32, gt=0)
    max_parallel: int | None = Field(None, ge=1, description="Array tasks running at once.")
    max_requeues: int = Field(3, ge=0, description="Time-outs after which a task is not requeued.")
    signal_delay_s: int = Field(120, ge=10, description="Seconds between USR2 and the kill.")
    job_name: str = "sjc_sweep"
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the task.")
    additional: dict[str, str] = Field(default_factory=dict, description="Extra sbatch options.")


class SweepSpec(_Section):
    """The whole spec file."""

    root: str = Field(description="Output root; run directories are ROOT/<run name>.")
    base: dict[str, Any] = Field(default_factory=dict, description="Flags of every run.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Cartesian product.")
    variants: list[dict[str, Any]] = Field(default_factory=list, description="Explicit flag sets.")
    seeds: list[int] | int = Field(default_factory=lambda: [0], description="Seeds (or a count).")
    labels: dict[str, str] = Field(default_factory=dict, description="Short names of flags.")
    local: LocalSettings = Field(default_factory=LocalSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its name, directory and the flags given to `build_config`."""

    name: str
    run_dir: Path
    flags: dict[str, Any]
    varying: dict[str, Any]

    def config(self) -> SJCConfig:
        """The run's validated config (out_dir and seed included)."""
        return build_config(self.flags)


def load_spec(path: str | Path, root: str | None = None, sets: dict[str, str] | None = None):
    """Read and validate a spec file; `root` and `sets` (flag=value) override it."""
    data = read_yaml(path, flag="SPEC")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SweepSpecError(f"{path}: {where}: {first['msg']}") from None
    update: dict[str, Any] = {}
    if root is not None:
        update["root"] = root
    if sets:
        update["base"] = {**spec.base, **sets}
    return spec.model_copy(update=update) if update else spec


def format_value(value: Any) -> str:
    """A flag value as a filesystem-safe name part: 0.5 -> '0.5', 'A toucan!' -> 'a_toucan'."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        text = format(value, "g")
        return text.replace("+", "")
    if isinstance(value, list | tuple):
        return "-".join(format_value(item) for item in value)
    return slugify(str(value), VALUE_SLUG_LEN)


def _labels(keys: list[str], explicit: dict[str, str]) -> dict[str, str]:
    """Short label per varying flag: its last dotted part, unless two flags share it."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    labels = {}
    for key, short in zip(keys, last):
        label = explicit.get(key) or (short if last.count(short) == 1 else key)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
            raise SweepSpecError(f"labels.{key}: {label!r} is not filesystem-safe ([A-Za-z0-9_.-])")
        labels[key] = label
    return labels


def _check_flags(spec: SweepSpec) -> None:
    known = {name for name, _ in iter_flags()}
    sources = [("base", spec.base), ("grid", spec.grid)]
    sources += [(f"variants[{index}]", variant) for index, variant in enumerate(spec.variants)]
    for where, flags in sources:
        for name in flags:
            if where.startswith("variants") and name == "name":
                continue
            if name in SWEEP_OWNED_FLAGS:
                raise SweepSpecError(f"{where}.{name}: set by the sweep (use root: and seeds:)")
            if name not in known:
                raise SweepSpecError(f"{where}.{name}: unknown flag --{name}")
    for name, values in spec.grid.items():
        if not values:
            raise SweepSpecError(f"grid.{name}: needs at least one value")
        clash = [index for index, variant in enumerate(spec.variants) if name in variant]
        if clash:
            raise SweepSpecError(f"grid.{name}: also set by variants[{clash[0]}]; set it in one")


def _variant_parts(variant: dict[str, Any], labels: dict[str, str]) -> list[str]:
    if "name" in variant:
        name = str(variant["name"])
        if not re.fullmatch(r"[A-Za-z0-9_.=-]+", name):
            raise SweepSpecError(f"variants: name {name!r} is not filesystem-safe")
        return [name]
    return [f"{labels[key]}={format_value(value)}" for key, value in variant.items()]


def _make_run(
    spec: SweepSpec, variant: dict[str, Any], grid_flags: dict[str, Any], seed: int, labels
) -> SweepRun:
    variant_flags = {key: value for key, value in variant.items() if key != "name"}
    varying = {**variant_flags, **grid_flags, "seed": seed}
    parts = _variant_parts(variant, labels) if variant else []
    parts += [f"{labels[key]}={format_value(value)}" for key, value in grid_flags.items()]
    name = NAME_SEPARATOR.join(parts + [f"seed={seed}"])
    run_dir = Path(spec.root) / name
    return SweepRun(name, run_dir, {**spec.base, **varying, "out_dir": str(run_dir)}, varying)


def expand_runs(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the spec, in a stable order: variants x grid x seeds; configs validated."""
    _check_flags(spec)
    variant_keys = [key for variant in spec.variants for key in variant if key != "name"]
    labels = _labels(list(dict.fromkeys(variant_keys + list(spec.grid))), spec.labels)
    runs: list[SweepRun] = []
    seen: dict[str, dict[str, Any]] = {}
    for variant in spec.variants or [{}]:
        for point in itertools.product(*spec.grid.values()):
            for seed in spec.seed_list:
                run = _make_run(spec, variant, dict(zip(spec.grid, point)), seed, labels)
                if run.name in seen:
                    raise SweepSpecError(
                        f"two runs get the name {run.name!r} ({seen[run.name]} and "
                        f"{run.varying}); give the variants a name: or set labels:"
                    )
                seen[run.name] = run.varying
                try:
                    run.config()
                except ConfigError as error:
                    raise SweepSpecError(f"run {run.name}: {error}") from None
                runs.append(run)
    return runs
