"""The D-SDS paper's metrics on a test orbit: A-LPIPS and CLIP score / CLIP R-precision.

A-LPIPS (Hong et al.): LPIPS (VGG, v0.1; the `lpips` package) between consecutive orbit frames,
averaged; as in the authors' script, frames first go through CLIP's 224 px transform (bicubic
resize of the short side, centre crop, CLIP mean/std). CLIP score: 100 x mean cosine between
each frame and the prompt (clamped at 0, torchmetrics' convention); R-precision: share of frames
whose best-matching text among the prompt and `--metrics.clip_distractors` is the prompt.
Missing packages or weights make a metric unavailable (null plus a one-line reason), never a
number. CLI: `python -m sjc_dsds.evaluate_metrics RUN [--metrics a_lpips,clip]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import MissingModelError, UserError
from sjc_dsds.run_dir import write_json

logger = logging.getLogger(__name__)

METRIC_NAMES = ("a_lpips", "clip")
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 (IMAGENET1K_V1) weights


class MetricUnavailable(Exception):
    """A metric cannot be computed here (package or weights missing); the message says why."""


def orbit_frame_paths(frames_dir: Path) -> list[Path]:
    """Orbit frames in orbit order (by the frame number in the name, not by string order)."""
    paths = [path for path in Path(frames_dir).glob("*.png")]
    numbers = [re.findall(r"\d+", path.stem) for path in paths]
    return [path for _, path in sorted(zip([int(n[-1]) if n else -1 for n in numbers], paths))]


def load_frames(frames_dir: Path) -> list[Any]:
    """The orbit frames as RGB PIL images, in orbit order."""
    from PIL import Image

    paths = orbit_frame_paths(frames_dir)
    if len(paths) < 2:
        raise UserError(f"{frames_dir}: needs at least 2 orbit frames (found {len(paths)})")
    return [Image.open(path).convert("RGB") for path in paths]


def clip_transform() -> Any:
    """CLIP's 224 px image transform (transformers' CLIP image processor with its defaults)."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    return Processor()


def a_lpips(
    pixel_values: torch.Tensor, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> float:
    """Mean of distance(frame_i, frame_i+1) over consecutive frames [n, 3, h, w] (orbit order)."""
    if pixel_values.shape[0] < 2:
        raise ValueError("A-LPIPS needs at least 2 frames")
    return float(distance(pixel_values[:-1], pixel_values[1:]).flatten().mean())


def default_vgg16_path() -> Path:
    """Where torchvision caches VGG16 ($TORCH_HOME/hub/checkpoints/vgg16-397923af.pth)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def load_lpips_vgg(trunk_path: Path | None, device: torch.device) -> torch.nn.Module:
    """lpips.LPIPS (VGG, v0.1 linear layers from the package) with its trunk loaded from a
    torchvision VGG16 state dict (`features.N.*` keys) at `trunk_path`."""
    trunk_path = Path(trunk_path) if trunk_path else default_vgg16_path()
    if not trunk_path.is_file():
        raise MetricUnavailable(
            f"A-LPIPS needs torchvision's VGG16 weights {VGG16_FILE} (what torchvision.models."
            f"vgg16(weights='IMAGENET1K_V1') downloads): put it at {trunk_path} or pass "
            "--metrics.lpips_trunk PATH"
        )
    try:
        import lpips
    except Exception as error:  # a torchvision not built for this torch raises RuntimeError
        raise MetricUnavailable(
            "A-LPIPS needs the lpips package and a torchvision built for this torch: "
            f"pip install 'sjc-dsds[metrics]' ({type(error).__name__}: {str(error)[:80]})"
        ) from None
    model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    trunk = torch.load(trunk_path, map_location="cpu", weights_only=True)
    mapped = {
        name: trunk[re.sub(r"^slice\d+\.", "features.", name)] for name in model.net.state_dict()
    }
    model.net.load_state_dict(mapped)
    return model.eval().to(device)


def load_clip(model_id: str, revision: str | None, device: torch.device) -> tuple[Any, Any]:
    """transformers' CLIPModel and CLIPProcessor from a hub id or folder (HF cache, offline)."""
    from transformers import CLIPModel, CLIPProcessor

    from sjc_dsds.pretrained import load_pretrained

    where = {"what": "CLIP", "flag": "--metrics.clip_model_id", "revision": revision}
    try:
        model = load_pretrained(CLIPModel.from_pretrained, model_id, **where)
        processor = load_pretrained(CLIPProcessor.from_pretrained, model_id, **where)
    except MissingModelError as error:
        raise MetricUnavailable(str(error)) from None
    return model.eval().to(device), processor


@torch.no_grad()
def clip_scores(
    model: Any, processor: Any, frames: Sequence[Any], prompt: str, distractors: Sequence[str]
) -> dict[str, float]:
    """CLIP score (100 x mean clamped cosine) and R-precision of the frames against `prompt`."""
    device = next(model.parameters()).device
    texts = [prompt, *[text for text in distractors if text != prompt]]
    inputs = processor(text=texts, images=list(frames), return_tensors="pt", padding=True)
    outputs = model(**{key: value.to(device) for key, value in inputs.items()})
    image = outputs.image_embeds / outputs.image_embeds.norm(dim=-1, keepdim=True)
    text = outputs.text_embeds / outputs.text_embeds.norm(dim=-1, keepdim=True)
    cosine = image @ text.t()  # [frames, texts]
    return {
        "clip_score": float((100.0 * cosine[:, 0]).clamp_min(0).mean()),
        "clip_cosine_mean": float(cosine[:, 0].mean()),
        "clip_r_precision": float((cosine.argmax(dim=1) == 0).float().mean()),
    }


@torch.no_grad()
def _a_lpips_of_frames(frames: Sequence[Any], cfg: SJCConfig, device: torch.device) -> float:
    model = load_lpips_vgg(cfg.metrics.lpips_trunk, device)
    pixels = clip_transform()(images=list(frames), return_tensors="pt")["pixel_values"]
    return a_lpips(pixels.to(device), lambda a, b: model(a, b, normalize=False))


def compute_metrics(
    frames_dir: Path, cfg: SJCConfig, names: Sequence[str], device: torch.device | None = None
) -> dict[str, Any]:
    """The named metrics of the orbit frames in `frames_dir`; unavailable ones are None, with
    their reason under "unavailable" (and one logged line each)."""
    device = device or torch.device("cpu")
    frames = load_frames(frames_dir)
    results: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            if name == "a_lpips":
                results["a_lpips"] = _a_lpips_of_frames(frames, cfg, device)
            elif name == "clip":
                metrics = cfg.metrics
                model, processor = load_clip(metrics.clip_model_id, metrics.clip_revision, device)
                distractors = metrics.clip_distractors
                results.update(clip_scores(model, processor, frames, cfg.prompt, distractors))
        except MetricUnavailable as error:
            keys = ("clip_score", "clip_cosine_mean", "clip_r_precision")
            keys = keys if name == "clip" else (name,)
            results.update(dict.fromkeys(keys))
            unavailable[name] = str(error)
            logger.warning("%s unavailable: %s", name, error)
    if unavailable:
        results["unavailable"] = unavailable
    return results


def read_run_config(run_dir: Path) -> SJCConfig:
    """A run directory's config.yaml (written with the package version) as a config."""
    import yaml
    from pydantic import ValidationError

    data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    data.pop("version", None)
    try:
        return SJCConfig.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise UserError(f"{run_dir}/config.yaml: {where}: {problem['msg']}") from None


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sjc_dsds.evaluate_metrics",
        description="A-LPIPS and CLIP metrics of a run's test orbit into RUN/test/metrics.json.",
    )
    parser.add_argument("run", type=Path, help="Run directory (with config.yaml).")
    parser.add_argument("--metrics", default="a_lpips,clip", help="Comma list of a_lpips,clip.")
    parser.add_argument("--frames", type=Path, help="Frames folder; default RUN/test/frames.")
    parser.add_argument("--lpips_trunk", help="VGG16 state dict (as --metrics.lpips_trunk).")
    parser.add_argument("--clip_model_id", help="CLIP hub id or folder (--metrics.clip_model_id).")
    parser.add_argument("--device", default="cpu", help="Device of the metric networks.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit code 2 with one line on bad input."""
    from sjc_dsds.runtime import resolve_device

    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        names = [name.strip() for name in args.metrics.split(",") if name.strip()]
        bad = [name for name in names if name not in METRIC_NAMES]
        if bad or not names:
            raise UserError(
                f"--metrics must be a comma list of a_lpips,clip (got {args.metrics!r})"
            )
        if not (args.run / "config.yaml").is_file():
            raise UserError(f"{args.run}: not a run directory (no config.yaml)")
        cfg = read_run_config(args.run)
        updates = {"lpips_trunk": args.lpips_trunk, "clip_model_id": args.clip_model_id}
        updates = {key: value for key, value in updates.items() if value is not None}
        cfg.metrics = cfg.metrics.model_copy(update=updates)
        frames_dir = args.frames or args.run / "test" / "frames"
        results = compute_metrics(frames_dir, cfg, names, resolve_device(args.device))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out_path = frames_dir.parent / "metrics.json"
    existing = json.loads(out_path.read_text()) if out_path.exists() else {}
    existing.pop("unavailable", None)  # reasons are this run's only
    write_json(out_path, {**existing, **results})
    shown = {key: value for key, value in results.items() if key != "unavailable"}
    print(f"{json.dumps(shown)} written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
