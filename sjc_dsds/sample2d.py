"""2D sanity check of a score model: a deterministic Euler/Heun sampler on its sigma ladder.

`python -m sjc_dsds.sample2d --sd.prompt "a photo of a horse" --out horse.png` draws one image
with SJC's Karras sampler (rho = 7 schedule snapped to the ladder, no churn), so that a model can be
checked end to end before a 3D run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sjc_dsds.cli import ActionFlag
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import ConfigError, UserError
from sjc_dsds.families import FAMILIES
from sjc_dsds.run_dir import slugify
from sjc_dsds.score import Conditioning, ScoreModel

PROGRAM = "python -m sjc_dsds.sample2d"
DEFAULT_GUIDANCE = 7.5
# Flags of this command; every other flag is a run_sjc.py config flag.
OWN_FLAGS = (
    ActionFlag("out", "FILE", "PNG to write [default: outputs/sample2d/<prompt>_seed<seed>.png]."),
    ActionFlag(
        "n_steps_sample", "INT", "Karras steps before deduplication on the ladder [default: 40]."
    ),
    ActionFlag(
        "sampler", "{heun,euler}", "Second-order Heun (SJC's default) or Euler [default: heun]."
    ),
    ActionFlag("help", "", "Show this help and exit."),
)
# The families' groups, --family, --seed and --device apply here; the 3D flags do not.
ALLOWED_CONFIG_PREFIXES = (*(f"{name}." for name in FAMILIES), "family", "seed", "device")


def karras_sigmas(
    sigma_min: float, sigma_max: float, n_steps: int, rho: float = 7.0
) -> list[float]:
    """Karras et al.'s rho schedule from sigma_max down to sigma_min, [n_steps] descending.

    sigma_i = (max^(1/rho) + i / (n - 1) (min^(1/rho) - max^(1/rho)))^rho, EDM's time steps.
    """
    if n_steps == 1:
        return [sigma_max]
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(inv_max + i / (n_steps - 1) * (inv_min - inv_max)) ** rho for i in range(n_steps)]


def sampling_indices(sigmas: torch.Tensor, n_steps: int) -> list[int]:
    """DDPM indices of the Karras schedule snapped to the ladder, descending, repeats removed.

    Repeated ticks are zero-length steps that change nothing, so they are dropped.
    """
    schedule = karras_sigmas(float(sigmas[0]), float(sigmas[-1]), n_steps)
    indices: list[int] = []
    for value in schedule:
        t = int((sigmas - value).abs().argmin())
        if not indices or t != indices[-1]:
            indices.append(t)
    return indices


@torch.no_grad()
def sample(
    model: ScoreModel,
    cond: Conditioning,
    indices: Sequence[int],
    generator: torch.Generator,
    batch_size: int = 1,
    heun: bool = True,
) -> torch.Tensor:
    """Deterministic Karras sampling from sigma_max * noise to sigma 0 [batch_size, *data_shape].

    Each step moves along d = (x - D(x, sigma)) / sigma; Heun averages it with the slope at the
    next level, except on the last step to sigma 0 (SJC's `Karras.inference`, EDM's Heun sampler).
    """
    levels = [float(model.sigmas[t]) for t in indices] + [0.0]
    shape = (batch_size, *model.data_shape)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    x = noise.to(model.device) * levels[0]
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        slope = (x - model.denoise(x, sigma, cond)) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if heun and sigma_next > 0:
            slope_next = (x_next - model.denoise(x_next, sigma_next, cond)) / sigma_next
            x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
        x = x_next
    return x


def _help_text() -> str:
    from sjc_dsds.cli import flag_rows

    lines = [
        f"usage: {PROGRAM} [--family F] [--F.prompt TEXT] [--F.model_id ID] [--out FILE] ...",
        "",
        "Draw one image from the score model with a deterministic Karras sampler and write a PNG.",
        f"--<family>.scale defaults to {DEFAULT_GUIDANCE} here (run_sjc.py's are for SJC's score).",
        "",
        "flags:",
    ]
    for flag in OWN_FLAGS:
        lines.append(f"  {('--' + flag.name + ' ' + flag.metavar).ljust(36)}{flag.help}")
    for flag, type_name, _, description in flag_rows():
        if flag[2:].startswith(ALLOWED_CONFIG_PREFIXES):
            lines.append(f"  {(flag + ' ' + type_name).ljust(36)}{description}")
    return "\n".join(lines)


def _parse_own(own: dict[str, str | bool]) -> tuple[int, bool]:
    n_steps_text = str(own.get("n_steps_sample", "40"))
    if not n_steps_text.isdigit() or int(n_steps_text) < 1:
        raise ConfigError(f"--n_steps_sample must be an integer >= 1 (got {n_steps_text!r})")
    sampler = str(own.get("sampler", "heun"))
    if sampler not in ("heun", "euler"):
        raise ConfigError(f"--sampler must be one of heun, euler (got {sampler!r})")
    return int(n_steps_text), sampler == "heun"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse flags, load the model, sample, write the PNG; returns the exit code."""
    from sjc_dsds.cli import parse_args
    from sjc_dsds.config import build_config

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parsed = parse_args(argv, OWN_FLAGS)
        if parsed.actions.get("help"):
            print(_help_text())
            return 0
        own = parsed.actions
        n_steps, heun = _parse_own(own)
        for name in parsed.overrides:
            if not name.startswith(ALLOWED_CONFIG_PREFIXES):
                raise ConfigError(f"--{name} does not apply to {PROGRAM}; see --help")
        family = FAMILIES.get(str(parsed.overrides.get("family", "sd")), FAMILIES["sd"])
        guidance = {f"{family.name}.scale": str(DEFAULT_GUIDANCE)}
        has_scale = "scale" in family.group.model_fields
        cfg = build_config({**(guidance if has_scale else {}), **parsed.overrides})
        out = Path(
            str(own.get("out") or f"outputs/sample2d/{slugify(cfg.prompt)}_seed{cfg.seed}.png")
        )
        path = _sample_to_png(cfg, out, n_steps, heun)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _sample_to_png(cfg: SJCConfig, out: Path, n_steps: int, heun: bool) -> Path:
    """Load the model, sample once with the config's seed, decode and write `out` atomically."""
    import imageio.v3 as iio

    from sjc_dsds.families import build_score_model
    from sjc_dsds.runtime import make_generator, resolve_device

    device = resolve_device(cfg.device)
    model = build_score_model(cfg, device)
    cond = model.condition(cfg.prompt)
    indices = sampling_indices(model.sigmas, n_steps)
    latents = sample(model, cond, indices, make_generator(cfg.seed), heun=heun)
    image = model.decode(latents)[0].permute(1, 2, 0)  # [height, width, 3] in [0, 1]
    pixels = (image * 255).round().to(torch.uint8).cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    iio.imwrite(partial, pixels, extension=".png")
    os.replace(partial, out)
    return out


if __name__ == "__main__":
    sys.exit(main())
