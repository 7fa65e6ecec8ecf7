"""Gate G3's controls on both backbones: plain SJC on the biased prior and on the unbiased one.

    python experiments/janus_backbone_controls.py --backbones exact learned --workers 2

Issue 14 asks for a learned denoiser next to the exact posterior mean because the exact model
memorises its images: at low noise it pulls a render to the nearest compatible image, which
may create attractors (a turned-around object) that a model which generalises would not have.
This runs only the controls of gate G3 (no debiasing arm): per scene and seed, plain SJC with
the benchmark prompt on the front-biased prior and with the neutral prompt on the unbiased
prior, and prints the Janus, two-faced and turned-around rates, face-F1 and pose error, then
G3's rule on the Janus rate and on the two-faced rate, per backbone. The learned models must be
trained first (`experiments/train_toy_denoiser.py --scene S --n_steps N [--front_bias 0]`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

from sjc_dsds.runtime import cpu_model
from sjc_dsds.toy.arms import PLAIN, train_arm, view_prompts
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.gates import gate_bias, metric_values
from sjc_dsds.toy.learned import (
    DEFAULT_CACHE_DIR,
    LearnedToyScoreModel,
    model_path,
    training_settings,
    training_world,
)
from sjc_dsds.toy.metrics import build_reference, field_scores
from sjc_dsds.toy.prior import prior_cache_key
from sjc_dsds.toy.protocol import DEV_SCENES, scene_prompt, world_config

KEYS = ("janus_rate", "two_faced_rate", "turned_rate", "face_f1", "pose_error_deg")
PRIORS = {"biased": None, "unbiased": 0.0}  # front bias override (None: the world's)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(DEV_SCENES), choices=DEV_SCENES)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--n_steps", type=int, default=300)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--backbones", nargs="+", default=["exact", "learned"],
                        choices=["exact", "learned"])  # fmt: skip
    parser.add_argument("--train_steps", type=int, default=1200, help="learned model's steps")
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    return parser.parse_args(argv)


def load_backbone(backbone: str, scene: str, prior: str, args: argparse.Namespace):
    """The score model of one scene's prior, and the config with its prompt."""
    bias = PRIORS[prior]
    flags = {"toy.prompt": scene_prompt(scene, neutral=bias is not None)}
    if bias is not None:
        flags["toy.front_bias"] = bias
    cfg = world_config(scene, n_steps=args.n_steps, **flags)
    if backbone == "exact":
        return ToyScoreModel.from_config(cfg, torch.device("cpu")).with_guidance(args.guidance), cfg
    settings = training_settings(args.train_steps)
    path = model_path(args.cache_dir, scene, prior_cache_key(training_world(scene, bias)), settings)
    if not path.exists():
        bias_flag = "" if bias is None else f" --front_bias {bias}"
        raise SystemExit(
            f"error: no learned model for {scene} ({prior} prior) at {path}; train it with "
            f"python experiments/train_toy_denoiser.py --scene {scene} "
            f"--n_steps {args.train_steps}{bias_flag}"
        )
    return LearnedToyScoreModel.load(path, args.guidance, torch.device("cpu")), cfg


def run_cell(backbone: str, scene: str, prior: str, args: argparse.Namespace) -> dict:
    """Plain SJC for every seed of one (backbone, scene, prior): {seed: scores}."""
    torch.set_num_threads(1)
    model, cfg = load_backbone(backbone, scene, prior, args)
    reference = build_reference(scene, cfg, torch.device("cpu"))
    prompts = view_prompts(cfg, torch.device("cpu"), None)
    out = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = train_arm(cfg.model_copy(update={"seed": seed, **PLAIN}), model, prompts)
        out[str(seed)] = field_scores(run.field, reference, cfg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cells = [(b, s, p, args) for b in args.backbones for s in args.scenes for p in PRIORS]
    for backbone, scene, prior, _ in cells:  # fail before any run on a missing model
        if backbone == "learned":
            load_backbone(backbone, scene, prior, args)
    start = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            results = pool.starmap(run_cell, cells)
    else:
        results = [run_cell(*cell) for cell in cells]
    record = {"command": " ".join(["python", *sys.argv]), "machine": cpu_model(), "runs": {}}
    for (backbone, scene, prior, _), scores in zip(cells, results):
        record["runs"].setdefault(backbone, {}).setdefault(prior, {})[scene] = scores
        rows = "; ".join(" / ".join(f"{s[k]:.2f}" for k in KEYS) for s in scores.values())
        print(f"{backbone} {prior} {scene}, {' / '.join(KEYS)} per seed: {rows}")
    for backbone, per_prior in record["runs"].items():
        verdict = {}
        for key in ("janus_rate", "two_faced_rate"):
            biased, unbiased = (metric_values(per_prior[prior], key) for prior in PRIORS)
            verdict[key] = gate_bias(biased, unbiased)
        record.setdefault("g3", {})[backbone] = verdict
        print(f"{backbone}: G3 rule on janus_rate {'PASS' if verdict['janus_rate'] else 'FAIL'}, "
              f"on two_faced_rate {'PASS' if verdict['two_faced_rate'] else 'FAIL'}")  # fmt: skip
    record["wall_seconds"] = time.perf_counter() - start
    print(f"total {record['wall_seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
