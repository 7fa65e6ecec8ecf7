"""Janus benchmark in the synthetic world: plain SJC vs score / prompt / both D-SDS debiasings.

    python experiments/janus_benchmark.py --out_dir outputs/janus --out results.json
    python experiments/janus_benchmark.py --quick --out_dir outputs/janus_quick

For each scene and seed, runs the four methods with the same step budget on the same biased prior
(`--family toy`, prompt "a <front word> <noun>", e.g. "a smiling head"), reads the ground-truth
metrics of each run, prints a table of mean and spread over seeds, writes every number as JSON
and draws one orbit strip per method under the ground truth (`<out_dir>/orbits_<scene>.png`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sjc_dsds import build_config, run_sjc
from sjc_dsds.evaluate import load_field
from sjc_dsds.runtime import cpu_model
from sjc_dsds.toy import ToyScoreModel, ground_truth_orbit, orbit_views
from sjc_dsds.toy.ground_truth import render_views
from sjc_dsds.toy.scenes import build_scene
from sjc_dsds.visualize import save_png, side_by_side

# The four arms; everything else is shared. Score debiasing uses D-SDS's SD values (spec B.3).
METHODS: dict[str, dict[str, Any]] = {
    "sjc": {"score_thres": 0.0, "prompt_debias": False},
    "sjc+score": {"score_thres": 8.0, "score_dynamic": True, "prompt_debias": False},
    "sjc+prompt": {"score_thres": 0.0, "prompt_debias": True},
    "sjc+both": {"score_thres": 8.0, "score_dynamic": True, "prompt_debias": True},
}

# Shared flags of every run. Why each differs from the SJC default:
# - grid 32 and 32x32 renders: CPU budget;
# - emptiness_weight 1000: SJC's 1e4 is a mean over n_rays * n_samples, which is ~12x smaller
#   here (32^2 rays x ~110 samples vs 64^2 x ~250), so 1e4 would weigh ~12x more than in SJC;
# - blend_bg_texture False: the prior's renders have SJC's constant white background;
# - one training field of view (60 deg, the test FoV): the prior's cameras follow the training
#   distribution, and a fixed FoV keeps 512 images dense enough in pose.
SHARED_FLAGS: dict[str, Any] = {
    "family": "toy",
    "device": "cpu",
    "vox.grid_size": 32,
    "vox.blend_bg_texture": False,
    "pose.rend_hw": 32,
    "pose.train_fov_min_deg": 60.0,
    "pose.train_fov_max_deg": 60.0,
    "emptiness_weight": 1000.0,
    "toy.front_bias": 0.8,
    "toy.n_images": 512,
    "log_every": 10,
    "vis_every": 10**9,
    "save_every": 10**9,
}

# Width of the method-name column of the orbit picture.
LABEL_WIDTH_PX = 70

DEFAULTS = {"scenes": ["head", "animal", "cube"], "seeds": [0, 1, 2], "n_steps": 800}
QUICK = {"scenes": ["head"], "seeds": [0], "n_steps": 150, "n_images": 128}

# Columns of the printed table: (metric key, header, better direction).
COLUMNS = (
    ("gt_janus_rate", "Janus", "lower"),
    ("gt_janus_rate_back", "Janus(back)", "lower"),
    ("gt_psnr", "PSNR", "higher"),
    ("gt_psnr_front", "PSNR(front)", "higher"),
    ("gt_psnr_back", "PSNR(back)", "higher"),
    ("gt_silhouette_iou", "IoU", "higher"),
    ("gt_orbit_adjacent_difference", "adj.diff", "lower"),
    ("score_clipped_frac_mean", "clipped", "info"),
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="outputs/janus_benchmark", help="run directories")
    parser.add_argument("--out", default=None, help="results JSON (default <out_dir>/results.json)")
    parser.add_argument("--quick", action="store_true", help="one scene, one seed, 150 steps")
    parser.add_argument("--scenes", nargs="+", default=None, choices=("head", "animal", "cube"))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--n_steps", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--front_bias", type=float, default=SHARED_FLAGS["toy.front_bias"], help="control runs"
    )
    parser.add_argument(
        "--neutral_prompt", action="store_true", help="prompt 'a <noun>' without the front word"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser.parse_args(argv)


def machine_line() -> str:
    """CPU model, thread count and torch version."""
    cpu = cpu_model()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def scene_prompt(scene: str, neutral: bool = False) -> str:
    """The benchmark prompt of a scene: its front word and noun ('a smiling head'), or only the
    noun ('a head') for the neutral control."""
    built = build_scene(scene)
    return f"a {built.noun}" if neutral else f"a {built.front_word} {built.noun}"


def run_flags(
    args: argparse.Namespace, scene: str, seed: int, method: str, n_steps: int, n_images: int
) -> dict:
    """Every flag of one benchmark run."""
    return {
        **SHARED_FLAGS,
        **METHODS[method],
        "toy.scene": scene,
        "toy.prompt": scene_prompt(scene, args.neutral_prompt),
        "toy.front_bias": args.front_bias,
        "toy.n_images": n_images,
        "n_steps": n_steps,
        "seed": seed,
        "out_dir": str(Path(args.out_dir) / scene / method / f"seed{seed}"),
    }


def mean_logged(run_dir: Path, key: str) -> float:
    """Mean of one per-step value over the rows of a run's metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    values = [float(json.loads(line)[key]) for line in lines if line.strip()]
    return statistics.fmean(values) if values else float("nan")


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def format_table(results: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    """Markdown table: one row per scene and method, mean +- std over seeds per column."""
    header = "| scene | method | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + " --- |" * (len(COLUMNS) + 2)]
    scenes = sorted({scene for per_scene in results.values() for scene in per_scene})
    for scene in scenes:
        for method, per_scene in results.items():
            runs = list(per_scene.get(scene, {}).values())
            if not runs:
                continue
            cells = []
            for key, _, _ in COLUMNS:
                values = [run[key] for run in runs if key in run]
                mean, spread = summarize(values)
                cells.append(f"{mean:.3f} ± {spread:.3f}")
            lines.append(f"| {scene} | {method} | " + " | ".join(cells) + " |")
    arrows = ", ".join(
        f"{title} {direction} is better" for _, title, direction in COLUMNS if direction != "info"
    )
    return "\n".join(lines) + (
        f"\n\n({arrows}; clipped: mean share of score elements clipped per logged step; "
        "mean ± std over seeds)"
    )


def label_image(text: str, height: int, width: int = LABEL_WIDTH_PX) -> torch.Tensor:
    """A white [3, height, width] tile with `text` written in black (PIL's default font)."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(tile).text((2, height // 2 - 6), text, fill="black")
    return torch.from_numpy(np.array(tile)).permute(2, 0, 1).float() / 255


def orbit_strip(cfg: Any, run_dirs: dict[str, Path]) -> torch.Tensor:
    """Picture [3, H, W]: the ground-truth orbit on top, then one orbit row per method."""
    cameras = [view.camera for view in orbit_views(cfg)]
    rows = {"ground truth": list(ground_truth_orbit(cfg))}
    for method, run_dir in run_dirs.items():
        _, field, _ = load_field(run_dir)
        renders = render_views(field, cameras).image
        rows[method] = [((image + 1) / 2).clamp(0, 1) for image in renders]
    lines = []
    for name, frames in rows.items():
        strip = side_by_side(frames)
        lines.append(torch.cat([label_image(name, strip.shape[1]), strip], dim=2))
    return torch.cat(lines, dim=1)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = QUICK if args.quick else DEFAULTS
    scenes = args.scenes or size["scenes"]
    seeds = args.seeds if args.seeds is not None else size["seeds"]
    n_steps = args.n_steps or size["n_steps"]
    n_images = size.get("n_images", SHARED_FLAGS["toy.n_images"])
    root = Path(args.out_dir)
    out_path = Path(args.out) if args.out else root / "results.json"
    command = " ".join(["python", *sys.argv])
    print(f"command: {command}\nmachine: {machine_line()}", flush=True)

    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {m: {} for m in args.methods}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for scene in scenes:
        scene_start = time.perf_counter()
        base = build_config(run_flags(args, scene, seeds[0], args.methods[0], n_steps, n_images))
        model = ToyScoreModel.from_config(base, torch.device("cpu"))
        timings[f"prior_{scene}_s"] = time.perf_counter() - scene_start
        strip_dirs: dict[str, Path] = {}
        for seed in seeds:
            for method in args.methods:
                cfg = build_config(run_flags(args, scene, seed, method, n_steps, n_images))
                run_start = time.perf_counter()
                result = run_sjc(cfg, overwrite=True, model=model, progress=False)
                seconds = time.perf_counter() - run_start
                metrics = {k: v for k, v in result.metrics.items() if k.startswith("gt_")}
                metrics["run_seconds"] = seconds
                metrics["score_clipped_frac_mean"] = mean_logged(
                    result.run_dir, "score_clipped_frac"
                )
                results[method].setdefault(scene, {})[str(seed)] = metrics
                print(
                    f"{scene} {method} seed {seed}: Janus {metrics['gt_janus_rate']:.3f}, "
                    f"PSNR {metrics['gt_psnr']:.2f}, IoU {metrics['gt_silhouette_iou']:.3f} "
                    f"({seconds:.0f} s)",
                    flush=True,
                )
                if seed == seeds[0]:
                    strip_dirs[method] = result.run_dir
        save_png(root / f"orbits_{scene}.png", orbit_strip(base, strip_dirs))
        timings[f"scene_{scene}_s"] = time.perf_counter() - scene_start
    timings["total_s"] = time.perf_counter() - start

    table = format_table(results)
    print(table)
    print(f"total {timings['total_s']:.0f} s")
    record = {
        "command": command,
        "machine": machine_line(),
        "shared_flags": SHARED_FLAGS,
        "methods": METHODS,
        "scenes": scenes,
        "seeds": seeds,
        "n_steps": n_steps,
        "n_images": n_images,
        "front_bias": args.front_bias,
        "prompts": {scene: scene_prompt(scene, args.neutral_prompt) for scene in scenes},
        "results": results,
        "timings": timings,
        "table": table,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {out_path} and {root}/orbits_<scene>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
