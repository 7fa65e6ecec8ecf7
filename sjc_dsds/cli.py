"""Dotted-flag parser generated from config.py: --help, --config merge, one-line errors, main().

Torch, diffusers and transformers are imported only after parsing, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sjc_dsds.config import (
    SJCConfig,
    build_config,
    dump_config,
    iter_flags,
    resume_changes,
    strip_optional,
    suggest_flag,
)
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


@dataclass
class ParsedArgs:
    """Result of parsing argv: config overrides by dotted name, and the action flags."""

    overrides: dict[str, str] = field(default_factory=dict)
    actions: dict[str, str | bool] = field(default_factory=dict)


def _type_name(annotation: Any) -> str:
    inner, optional = strip_optional(annotation)
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
        derived = value is None and (info.json_schema_extra or {}).get("derived")
        default = "derived" if derived else _format_value(value)
        constraint = _constraint_text(info)
        tail = f"default: {default}" + (f"; {constraint}" if constraint else "")
        described = f"{info.description} [{tail}]"
        rows.append((f"--{name}", _type_name(info.annotation), default, described))
    return rows


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


def parse_args(
    argv: Sequence[str], action_flags: Sequence[ActionFlag] = ACTION_FLAGS
) -> ParsedArgs:
    """Split argv into config overrides and action flags; unknown flags raise ConfigError.

    Every command line of the package goes through here: run_sjc.py with ACTION_FLAGS, and
    `sample2d` / `prompt_debias` with their own action flags.
    """
    known = {name: info for name, info in iter_flags()}
    actions = {flag.name for flag in action_flags}
    bare_actions = {flag.name for flag in action_flags if not flag.metavar}
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
            if name in bare_actions:
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
            raise ConfigError(
                f"unknown flag --{name}{suggest_flag(name, list(known) + list(actions))}"
            )
        if not has_inline:
            next_is_value = index < len(tokens) and not tokens[index].startswith("--")
            if next_is_value:
                value = tokens[index]
                index += 1
            elif strip_optional(known[name].annotation)[0] is bool:
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
