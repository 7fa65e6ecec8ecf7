"""The whole run's config: `SJCConfig`, `build_config` from flags, YAML dump/load, resume rules.

Imports no torch. The shared flag groups are in `config_groups.py`, the families' groups in
`families.py`; both are re-exported here.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from sjc_dsds.config_groups import (
    MAX_GRID_SIDE,
    POLAR_PARAMETER_CLIP_RAD,
    SJC_OVERHEAD_ELEVATION_DEG,
    VIEW_LABELS,
    EvalConfig,
    Group,
    LogConfig,
    MetricsConfig,
    PoseConfig,
    PromptDebiasConfig,
    ViewLabel,
    ViewPromptConfig,
    VoxConfig,
)
from sjc_dsds.errors import ConfigError
from sjc_dsds.families import FAMILIES, SDConfig, ToyConfig

__all__ = [
    "MAX_GRID_SIDE",
    "POLAR_PARAMETER_CLIP_RAD",
    "SJC_OVERHEAD_ELEVATION_DEG",
    "VIEW_LABELS",
    "EvalConfig",
    "Group",
    "LogConfig",
    "MetricsConfig",
    "PoseConfig",
    "PromptDebiasConfig",
    "SDConfig",
    "SJCConfig",
    "ToyConfig",
    "ViewLabel",
    "ViewPromptConfig",
    "VoxConfig",
    "build_config",
    "dump_config",
    "iter_flags",
    "load_config",
    "load_config_text",
]

FamilyName = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]


class RunConfig(Group):
    """Every flag of a run except the families' groups (`SJCConfig` adds one per family)."""

    family: FamilyName = Field(  # type: ignore[valid-type]
        "sd", description="Score model family: " + ", ".join(FAMILIES) + "."
    )
    lr: float = Field(0.05, gt=0, le=10, description="Adamax learning rate of the voxel grids.")
    bg_lr: float = Field(1e-4, ge=0, le=10, description="Adamax learning rate of the background.")
    n_steps: int = Field(10_000, gt=0, le=10_000_000, description="Optimisation steps.")
    emptiness_scale: float = Field(10.0, ge=0, le=1e6, description="k in log(1 + k w).")
    emptiness_weight: float = Field(
        10_000.0, ge=0, le=1e9, description="Weight of the emptiness loss."
    )
    emptiness_step: float = Field(
        0.5, ge=0, le=1, description="Fraction of n_steps after which the multiplier applies."
    )
    emptiness_multiplier: float = Field(
        20.0, ge=0, le=1e6, description="Emptiness weight multiplier from emptiness_step on."
    )
    depth_weight: float = Field(
        0.0,
        ge=0,
        le=1e6,
        description="Centre-depth loss weight; intended sign (centre nearer), fixing sjc#21.",
    )
    var_red: bool = Field(True, description="Score (D - y)/sigma (True) or (D - z)/sigma (False).")
    score_thres: float = Field(
        8.0,
        ge=-1e6,
        le=1e6,
        description="D-SDS elementwise score clip; <= 0 turns score debiasing off.",
    )
    score_dynamic: bool = Field(True, description="Grow the score threshold linearly over the run.")
    score_thres_start: float = Field(
        0.25, ge=0, le=1, description="Fraction of score_thres at step 0 when dynamic."
    )
    prompt_debias: bool = Field(False, description="D-SDS prompt debiasing with a masked LM.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of every random stream of the run.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    out_dir: str | None = Field(
        None,
        json_schema_extra={"derived": True},
        description="Run directory; default outputs/<prompt-slug>/<time>-seed<S>-<random>.",
    )
    save_every: int | None = Field(
        None,
        ge=1,
        le=10**9,
        json_schema_extra={"derived": True},
        description="Checkpoint cadence in steps; default n_steps / 10.",
    )
    vis_every: int | None = Field(
        None,
        ge=1,
        le=10**9,
        json_schema_extra={"derived": True},
        description="Snapshot cadence in steps; default n_steps / 100 (SJC).",
    )
    log_every: int = Field(
        1, ge=1, le=10**9, description="Write metrics.jsonl every this many steps."
    )
    keep_checkpoints: int = Field(
        2,
        ge=1,
        le=100_000,
        description="Keep the newest this many checkpoints (and the final one); older are pruned.",
    )
    time_stages: bool = Field(
        False,
        description="Synchronise the device between stages so metrics.jsonl's time_* are exact "
        "on a GPU (costs speed; on a CPU they are exact anyway).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of torch; default picks one that holds up on a busy small CPU.",
    )
    vox: VoxConfig = Field(default_factory=VoxConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    view: ViewPromptConfig = Field(default_factory=ViewPromptConfig)
    lm: PromptDebiasConfig = Field(default_factory=PromptDebiasConfig)
    export_mesh: bool = Field(
        False, description="Write RUN/export/mesh.* (marching cubes) at the end of the run."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"must be one of auto, cpu, cuda, cuda:N, mps (got {value!r})")

    @model_validator(mode="before")
    @classmethod
    def _family_score_defaults(cls, data: Any) -> Any:
        """A family's D-SDS defaults apply where the user gives none (e.g. IF's 0.5 -> 2 ramp)."""
        if isinstance(data, dict):
            family = FAMILIES.get(str(data.get("family", "sd")))
            if family is not None:
                data = {**family.score_defaults, **data}
        return data

    @model_validator(mode="after")
    def _field_follows_family(self) -> RunConfig:
        family = FAMILIES[self.family]
        if self.vox.c is None:
            self.vox.c = family.channels
        elif self.vox.c != family.channels:
            raise ValueError(
                f"--vox.c must be {family.channels} with --family {self.family} (got {self.vox.c})"
            )
        if self.vox.model_type is None:
            self.vox.model_type = family.model_type
        if self.vox.blend_bg_texture is None:
            self.vox.blend_bg_texture = family.blend_bg_texture
        if family.check is not None:
            family.check(self)
        manual = [self.view.prompt_front, self.view.prompt_side, self.view.prompt_back]
        if self.prompt_debias and any(p is not None for p in manual + [self.view.prompt_overhead]):
            raise ValueError(
                "--prompt_debias True cannot be combined with manual --view.prompt_* prompts"
            )
        return self

    @property
    def prompt(self) -> str:
        """The user prompt of the active family."""
        return FAMILIES[self.family].prompt(self)

    @property
    def negative_prompt(self) -> str:
        """The active family's unconditional text ('' when it has none)."""
        return FAMILIES[self.family].negative_prompt(self)

    @property
    def vis_interval(self) -> int:
        """Snapshot cadence in steps (SJC: 1 % of the run)."""
        return self.vis_every or max(1, self.n_steps // 100)

    @property
    def save_interval(self) -> int:
        """Checkpoint cadence in steps."""
        return self.save_every or max(1, self.n_steps // 10)


# One flag group per registered family, after the shared fields.
SJCConfig = create_model(
    "SJCConfig",
    __base__=RunConfig,
    __module__=__name__,
    __doc__="Everything one run needs; saved as <run_dir>/config.yaml.",
    **{
        name: (family.group, Field(default_factory=family.group))
        for name, family in FAMILIES.items()
    },
)


def dump_config(cfg: SJCConfig) -> str:
    """YAML text of a config; `load_config_text(dump_config(cfg)) == cfg`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load_config_text(text: str) -> SJCConfig:
    """Parse YAML text (a dump, or a run's config.yaml with its version) into a config."""
    data = yaml.safe_load(text) or {}
    data.pop("version", None)
    return SJCConfig.model_validate(data)


def load_config(path: str | Path) -> SJCConfig:
    """Read a config.yaml written by `dump_config`."""
    return load_config_text(Path(path).read_text())


# Flags a resumed or re-evaluated run may change: they steer how or how long it runs, or how it
# is evaluated, not what it computes up to its current step.
SAFE_ON_RESUME: frozenset[str] = frozenset(
    {
        "n_steps",
        "device",
        "threads",
        "save_every",
        "vis_every",
        "log_every",
        "time_stages",
        "keep_checkpoints",
        "pose.n_test_frames",
        "pose.test_rounds",
        "export_mesh",
        # Each family's weights, e.g. --sd.model_id pointing at a local copy.
        *(family.model_id_flag for family in FAMILIES.values() if family.model_id_flag),
    }
)
SAFE_GROUPS_ON_RESUME: tuple[str, ...] = ("eval.", "metrics.", "log.")


def flat_values(cfg: BaseModel, prefix: str = "") -> dict[str, object]:
    """Every leaf value of a config by dotted flag name."""
    values: dict[str, object] = {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            values.update(flat_values(value, f"{prefix}{name}."))
        else:
            values[prefix + name] = value
    return values


def is_safe_on_resume(name: str) -> bool:
    """Whether flag `name` may be changed on --resume / --eval_only."""
    return name in SAFE_ON_RESUME or name.startswith(SAFE_GROUPS_ON_RESUME)


def resume_changes(saved: SJCConfig, new: SJCConfig) -> dict[str, list[object]]:
    """Flags whose value differs between a run's saved config and `new`, as [old, new].

    Raises ConfigError for a flag that may not change: the run directory's config is the
    authority on what the run computes.
    """
    old_values, new_values = flat_values(saved), flat_values(new)
    changes = {
        name: [old_values.get(name), value]
        for name, value in new_values.items()
        if name != "out_dir" and old_values.get(name) != value
    }
    unsafe = sorted(name for name in changes if not is_safe_on_resume(name))
    if unsafe:
        allowed = ", ".join(f"--{name}" for name in sorted(SAFE_ON_RESUME))
        raise ConfigError(
            f"--{unsafe[0]} cannot change on --resume/--eval_only (the run directory's "
            f"config.yaml is the authority; start a new run instead); allowed: {allowed}, "
            "--eval.*, --metrics.*, --log.*"
        )
    return changes


def strip_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) of `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def iter_flags(
    model: type[BaseModel] = SJCConfig, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """Yield (dotted flag name, field info) for every leaf field, groups after top-level flags."""
    groups = []
    for name, info in model.model_fields.items():
        inner, _ = strip_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            groups.append((name, inner))
        else:
            yield prefix + name, info
    for name, inner in groups:
        yield from iter_flags(inner, prefix + name + ".")


def _coerce(name: str, raw: Any, info: FieldInfo) -> Any:
    """Turn a flag's text into what pydantic validates: lists, None and lenient integers."""
    if not isinstance(raw, str):
        return raw
    inner, optional = strip_optional(info.annotation)
    if optional and raw.lower() in ("none", "null"):
        return None
    if typing.get_origin(inner) is tuple:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        return tuple(_lenient_int(p) for p in parts) if name != "vox.grid_size" else raw
    if inner is int:
        return _lenient_int(raw)
    return raw


def _lenient_int(raw: str) -> str | int:
    """Accept '1e4' or '100.0' for an integer flag when the value is integral."""
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() and not raw.lstrip("-").isdigit() else raw


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        target = nested
        *groups, leaf = dotted.split(".")
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = value
    return nested


def merge_mappings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe_error(error: dict[str, Any]) -> str:
    """One readable sentence for one pydantic error, naming the flag and what is allowed."""
    loc = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
    kind, ctx = error["type"], error.get("ctx", {})
    got = error.get("input")
    allowed = {
        "greater_than": f"must be > {ctx.get('gt')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_parsing": "must be a number",
        "bool_parsing": "must be True/False/true/false/1/0",
        "literal_error": f"must be one of {ctx.get('expected', '').replace(chr(39), '')}",
        "extra_forbidden": "is not a known flag",
        "string_type": "must be text",
        "tuple_type": "must be a comma-separated list",
    }.get(kind)
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return message if message.startswith("--") else f"--{loc} {message}".strip()
    if allowed is None:
        allowed = error["msg"].lower()
    where = f"--{loc}" if loc else "config"
    if kind == "extra_forbidden":
        known = [name for name, _ in iter_flags()]
        return f"unknown flag {where}{suggest_flag(loc, known)}"
    return f"{where} {allowed} (got {got!r})"


def suggest_flag(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean --{close[0]}?)" if close else ""


def build_config(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> SJCConfig:
    """Validate `base` (a loaded YAML dict) updated by flag overrides; errors are ConfigErrors.

    `overrides` maps dotted flag names to flag text or Python values:
    `build_config({"sd.prompt": "a toucan", "score_thres": 4.0})`.
    """
    known = dict(iter_flags())
    for name in overrides:
        if name not in known:
            raise ConfigError(f"unknown flag --{name}{suggest_flag(name, list(known))}")
    coerced = {name: _coerce(name, raw, known[name]) for name, raw in overrides.items()}
    data = merge_mappings(base or {}, _nest(coerced))
    try:
        return SJCConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe_error(error.errors()[0])) from None
