"""`python -m sjc_dsds.prompt_debias --prompt TEXT`: inspect D-SDS prompt debiasing without a run.

Prints P(view | prompt), every candidate word's ratio per view and the resulting per-view
prompts (or the prompts.json record with --json). Accepts the run's --lm.*, --view.* and
--device flags, and --config FILE to read them from a saved config.yaml.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from sjc_dsds.cli import ActionFlag
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import ConfigError, UserError

PROGRAM = "python -m sjc_dsds.prompt_debias"
_GROUPS = ("lm.", "view.")
_SINGLE_FLAGS = ("device", "sd.prompt", "toy.prompt")
OWN_FLAGS = (
    ActionFlag("prompt", "TEXT", "User prompt (default: the family's --<family>.prompt default)."),
    ActionFlag("config", "FILE", "Read the flags from a saved config.yaml first."),
    ActionFlag("json", "", "Print the prompts.json record instead of the table."),
    ActionFlag("help", "", "Show this help and exit."),
)


def help_text() -> str:
    """Usage and one line per accepted flag, from the same rows as run_sjc.py --help."""
    from sjc_dsds.cli import flag_rows

    lines = [
        f"usage: {PROGRAM} --prompt TEXT [--lm.FLAG VALUE ...] [--view.FLAG VALUE ...] [--json]",
        "",
        "Score P(view | prompt) with a masked LM, show each word's D-SDS ratio per view and the",
        "per-view prompts a run with --prompt_debias True would use.",
        "",
        f"  {'--prompt TEXT'.ljust(36)}User prompt (default: --sd.prompt's default).",
        f"  {'--config FILE'.ljust(36)}Read the flags from a saved config.yaml first.",
        f"  {'--json'.ljust(36)}Print the prompts.json record instead of the table.",
    ]
    for flag, type_name, _, description in flag_rows():
        manual = flag.startswith("--view.prompt_")  # refused together with debiasing
        if (flag[2:].startswith(_GROUPS) or flag[2:] in _SINGLE_FLAGS) and not manual:
            lines.append(f"  {(flag + ' ' + type_name).ljust(36)}{description}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error for bad flags or models)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from sjc_dsds.cli import parse_args, resolve

        parsed = parse_args(argv, OWN_FLAGS)
        if parsed.actions.pop("help", False):
            print(help_text())
            return 0
        prompt = parsed.actions.pop("prompt", None)
        as_json = bool(parsed.actions.pop("json", False))
        for name in parsed.overrides:
            if not (name.startswith(_GROUPS) or name in _SINGLE_FLAGS):
                raise ConfigError(
                    f"--{name} has no effect here; use --prompt, --lm.*, --view.*, --device"
                )
        extra_actions = sorted(set(parsed.actions) - {"config"})
        if extra_actions:
            raise ConfigError(f"--{extra_actions[0]} is not accepted here; see --help")
        parsed.overrides["prompt_debias"] = "True"
        cfg = resolve(parsed)
        if prompt is not None:
            parsed.overrides[f"{cfg.family}.prompt"] = str(prompt)
            cfg = resolve(parsed)
        return _report(cfg, as_json)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _report(cfg: SJCConfig, as_json: bool) -> int:
    """Run debiasing for `cfg` and print the report; heavy imports happen here."""
    from sjc_dsds.prompts import build_view_prompts, format_prompts_report, prompts_record
    from sjc_dsds.runtime import resolve_device

    prompts, debias = build_view_prompts(cfg, resolve_device(cfg.device))
    if as_json:
        print(json.dumps(prompts_record(prompts, debias), indent=2))
    else:
        print(f"masked LM: {cfg.lm.model_id}   template: {cfg.lm.template!r}")
        print(format_prompts_report(prompts, debias))
    return 0


if __name__ == "__main__":
    sys.exit(main())
