"""Dotted-flag parser generated from config.py: --help, --config merge, one-line errors, main().

Torch, diffusers and transformers are imported only after parsing, so `--help` stays fast.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import traceback
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from sjc_dsds.config import SJCConfig, dump_config, resume_changes
from sjc_dsds.errors import ConfigError, RunStopped, UserError

PROGRAM = "run_sjc.py"


@dataclass(frozen=True)
class ActionFlag:
    """A flag that steers the command instead of configuring the run (never saved)."""

    name: str
    metavar: str
    help: str


ACTION_FLAGS: tuple[ActionFlag, ...] = (
    ActionFlag("config", "FILE", "Load a saved config.yaml; flags given with it override it."),
    ActionFlag("resume", "RUN_DIR", "Continue the run in RUN_DIR from its last checkpoint."),
    ActionFlag("eval_only", "RUN_DIR", "Render the test orbit of RUN_DIR's last checkpoint."),
    ActionFlag("overwrite", "", "Replace an existing run directory instead of refusing."),
    ActionFlag("print_config", "", "Print the resolved config as YAML and exit."),
    ActionFlag("verbose", "", "Show the full traceback of any error (also SJC_DSDS_VERBOSE=1)."),
    ActionFlag("help", "", "Show this help and exit."),
    ActionFlag("help_markdown", "", "Print the README's flag table (Markdown) and exit."),
)
_BARE_ACTIONS = {flag.name for flag in ACTION_FLAGS if not flag.metavar}


@dataclass
class ParsedArgs:
    """Result of parsing argv: config overrides by dotted name, and the action flags."""

    overrides: dict[str, str] = field(default_factory=dict)
    actions: dict[str, str | bool] = field(default_factory=dict)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
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
        inner, _ = _strip_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            groups.append((name, inner))
        else:
            yield prefix + name, info
    for name, inner in groups:
        yield from iter_flags(inner, prefix + name + ".")


def _type_name(annotation: Any) -> str:
    inner, optional = _strip_optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        text = "{" + ",".join(str(a) for a in typing.get_args(inner)) + "}"
    elif origin is tuple:
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            text = f"{_type_name(args[0])},..."
        else:
            text = ",".join(_type_name(a) for a in args)
    else:
        text = {int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}.get(inner, str(inner))
    return text + ("|None" if optional else "")


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _constraint_text(info: FieldInfo) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for item in info.metadata:
        for attr, symbol in symbols.items():
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
    return " and ".join(parts)


def flag_rows() -> list[tuple[str, str, str, str]]:
    """(flag, type, default, description with range) for every config flag."""
    rows = []
    defaults = SJCConfig.model_construct()
    for name, info in iter_flags():
        value: Any = defaults
        for part in name.split("."):
            value = getattr(value, part)
        if isinstance(value, BaseModel):
            value = None
        default = "derived" if value is None and name in _DERIVED else _format_value(value)
        constraint = _constraint_text(info)
        tail = f"default: {default}" + (f"; {constraint}" if constraint else "")
        described = f"{info.description} [{tail}]"
        rows.append((f"--{name}", _type_name(info.annotation), default, described))
    return rows


_DERIVED = {
    "vox.c",
    "vox.model_type",
    "vox.blend_bg_texture",
    "sd.model_id",
    "out_dir",
    "save_every",
    "vis_every",
}


def help_text() -> str:
    """The --help page: usage, action flags and one line per config flag."""
    lines = [
        f"usage: {PROGRAM} [--group.flag VALUE | --flag=VALUE ...] [--config FILE]",
        "",
        "Text-to-3D with Score Jacobian Chaining and D-SDS debiasing.",
        "Booleans: True/False/true/false/1/0.",
        "Lists: comma-separated (e.g. --vox.grid_size 64,64,32).",
        "Optional values accept None.",
        "",
        "actions:",
    ]
    for flag in ACTION_FLAGS:
        lines.append(f"  {('--' + flag.name + ' ' + flag.metavar).ljust(36)}{flag.help}")
    lines += ["", "config flags:"]
    for flag, type_name, _, description in flag_rows():
        lines.append(f"  {(flag + ' ' + type_name).ljust(36)}{description}")
    return "\n".join(lines)


def flag_table_markdown() -> str:
    """The README's flag table, from the same source as --help."""
    lines = ["| flag | type | default | description |", "| --- | --- | --- | --- |"]
    # The plain field description, not the help text with its "[default: ...]" tail: splitting
    # that on " [" cut descriptions that contain a bracket, such as --lm.template's [MASK].
    infos = dict(iter_flags())
    for flag, type_name, default, _ in flag_rows():
        cells = (type_name, f"`{default}`", infos[flag.removeprefix("--")].description or "")
        type_text, default_text, text = (cell.replace("|", "\\|") for cell in cells)
        lines.append(f"| `{flag}` | {type_text} | {default_text} | {text} |")
    return "\n".join(lines)


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean --{close[0]}?)" if close else ""


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Split argv into config overrides and action flags; unknown flags raise ConfigError."""
    known = {name: info for name, info in iter_flags()}
    actions = {flag.name for flag in ACTION_FLAGS}
    parsed = ParsedArgs()
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token in ("-h",):
            parsed.actions["help"] = True
            continue
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}; flags look like --group.name VALUE")
        name, has_inline, value = token[2:].partition("=")
        name = name.replace("-", "_") if name not in known else name
        if name in actions:
            if name in _BARE_ACTIONS:
                parsed.actions[name] = True if not has_inline else _parse_bool(name, value)
                continue
            if not has_inline:
                if index >= len(tokens):
                    raise ConfigError(f"--{name} needs a value")
                value = tokens[index]
                index += 1
            parsed.actions[name] = value
            continue
        if name not in known:
            raise ConfigError(f"unknown flag --{name}{_suggest(name, list(known) + list(actions))}")
        if not has_inline:
            next_is_value = index < len(tokens) and not tokens[index].startswith("--")
            if next_is_value:
                value = tokens[index]
                index += 1
            elif _strip_optional(known[name].annotation)[0] is bool:
                value = "True"
            else:
                raise ConfigError(f"--{name} needs a value")
        parsed.overrides[name] = value
    return parsed


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{name} must be True/False/true/false/1/0 (got {value!r})")


def _coerce(name: str, raw: Any, info: FieldInfo) -> Any:
    """Turn a flag's text into what pydantic validates: lists, None and lenient integers."""
    if not isinstance(raw, str):
        return raw
    inner, optional = _strip_optional(info.annotation)
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


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
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
        return f"unknown flag {where}{_suggest(loc, known)}"
    return f"{where} {allowed} (got {got!r})"


def build_config(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> SJCConfig:
    """Validate `base` (a loaded YAML dict) updated by flag overrides; errors are ConfigErrors.

    `overrides` maps dotted flag names to flag text or Python values:
    `build_config({"sd.prompt": "a toucan", "score_thres": 4.0})`.
    """
    known = dict(iter_flags())
    for name in overrides:
        if name not in known:
            raise ConfigError(f"unknown flag --{name}{_suggest(name, list(known))}")
    coerced = {name: _coerce(name, raw, known[name]) for name, raw in overrides.items()}
    data = _merge(base or {}, _nest(coerced))
    try:
        return SJCConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe_error(error.errors()[0])) from None


def read_yaml(path: str | Path, flag: str = "--config") -> dict[str, Any]:
    """Load a YAML mapping or raise a ConfigError naming the flag."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = error.__class__.__name__
        raise ConfigError(f"{flag}: {path} is not valid YAML text ({problem})") from None
    except OSError as error:
        raise ConfigError(f"{flag}: cannot read {path} ({error.strerror})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{flag}: {path} must hold a mapping of config groups")
    return data


def resolve(parsed: ParsedArgs) -> SJCConfig:
    """The run's config: a saved config (--config, or the resumed run's) updated by the flags.

    On --resume / --eval_only the run directory's config.yaml is the authority: only the flags
    of `config.SAFE_ON_RESUME` may change it. A run's config.yaml used with --config is a
    preset: the new run gets a fresh output folder unless --out_dir is given.
    """
    for action in ("resume", "eval_only"):
        if action in parsed.actions:
            if "config" in parsed.actions:
                raise ConfigError(f"--{action} cannot be combined with --config")
            run_dir = Path(str(parsed.actions[action]))
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"--{action} {run_dir}: not a run directory (no config.yaml)")
            base = read_yaml(run_dir / "config.yaml", f"--{action}")
            base.pop("version", None)
            base["out_dir"] = str(run_dir)
            if "out_dir" in parsed.overrides:
                raise ConfigError(f"--out_dir cannot be combined with --{action} (it is the run)")
            saved = build_config({}, base)
            cfg = build_config(parsed.overrides, base)
            resume_changes(saved, cfg)
            return cfg
    base = {}
    if "config" in parsed.actions:
        base = read_yaml(str(parsed.actions["config"]))
        if base.pop("version", None) is not None:
            base.pop("out_dir", None)
    return build_config(parsed.overrides, base)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of run_sjc.py; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = os.environ.get("SJC_DSDS_VERBOSE", "") not in ("", "0")
    try:
        parsed = parse_args(argv)
        verbose = verbose or bool(parsed.actions.get("verbose"))
        if parsed.actions.get("help"):
            print(help_text())
            return 0
        if parsed.actions.get("help_markdown"):
            print(flag_table_markdown())
            return 0
        if "resume" in parsed.actions and "eval_only" in parsed.actions:
            raise ConfigError("--resume and --eval_only cannot be combined")
        cfg = resolve(parsed)
        if parsed.actions.get("print_config"):
            print(dump_config(cfg), end="")
            return 0
        return _execute(cfg, parsed)
    except UserError as error:
        if verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stopped:
        print(str(stopped), file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class _StderrHandler(logging.StreamHandler):
    """Log to whatever sys.stderr is at the time of each message (it may be replaced)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _execute(cfg: SJCConfig, parsed: ParsedArgs) -> int:
    """Run training or evaluation; heavy imports happen here, after the config is valid."""
    package_logger = logging.getLogger("sjc_dsds")
    if not package_logger.handlers:
        package_logger.addHandler(_StderrHandler())
        package_logger.setLevel(logging.INFO)
    from sjc_dsds import optimize

    if "eval_only" in parsed.actions:
        from sjc_dsds import evaluate

        result = evaluate.evaluate_run(Path(str(parsed.actions["eval_only"])), cfg=cfg)
        print(f"orbit written to {result}")
        return 0
    result = optimize.run_sjc(
        cfg, resume="resume" in parsed.actions, overwrite=bool(parsed.actions.get("overwrite"))
    )
    print(f"run finished: {result.run_dir}")
    return 0
