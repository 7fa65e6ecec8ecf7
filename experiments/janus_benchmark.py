"""Janus benchmark v2 (issue 14): validity gates first, then every arm against plain SJC.

    python experiments/janus_benchmark.py --tier quick --scene_seeds 11,12 --out r.json
    python experiments/janus_benchmark.py --tier dev --out experiments/janus_benchmark/dev.json

Scenes are the dev set (head, animal, cube) or procedural held-out scenes (`--scene_seeds`).
Per scene, guidance and seed every arm of sjc_dsds/toy/arms.py runs with the same streams; the
gates of sjc_dsds/toy/gates.py are printed first, and while one fails the method table of that
guidance is replaced by FAIL. Results JSON: commit, world hash, every setting, per-run scores,
per-arm means with 95 % bootstrap intervals (scenes, then seeds) and paired differences to plain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sjc_dsds.config import SJCConfig, ToyConfig
from sjc_dsds.runtime import cpu_model
from sjc_dsds.toy.arms import (
    ARMS,
    ArmRun,
    exact_view_oracle,
    norm_matching,
    train_arm,
    view_prompts,
)
from sjc_dsds.toy.captions import CaptionProbe
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.gates import (
    bootstrap_mean,
    gate_bias,
    gate_fixed_point,
    gate_reachable,
    paired_differences,
)
from sjc_dsds.toy.ground_truth import ground_truth_field
from sjc_dsds.toy.metrics import build_reference, field_scores
from sjc_dsds.toy.prior import world_hash
from sjc_dsds.toy.probes import decision_accuracy, ideal_probe, independent_probe
from sjc_dsds.toy.protocol import DEV_SCENES, WORLD_FLAGS, scene_prompt, world_config

TIERS: dict[str, dict[str, Any]] = {
    "quick": {"scenes": ["head"], "seeds": [0], "guidance": [3.0], "n_steps": 40,
              "fixed_point_steps": 20, "n_images": 128},
    "dev": {"scenes": list(DEV_SCENES), "seeds": [0, 1, 2, 3, 4], "guidance": [3.0],
            "n_steps": 300, "fixed_point_steps": 300, "n_images": 2048},
    "full": {"scenes": list(DEV_SCENES), "seeds": [0, 1, 2, 3, 4], "guidance": [3.0, 100.0],
             "n_steps": 300, "fixed_point_steps": 300, "n_images": 2048},
}  # fmt: skip
FIXED_POINT_ARMS = ("plain", "score_dynamic", "score_static")
PROBE_DISAGREEMENTS = (0.0, 0.1, 0.3, 0.5)
TABLE_KEYS = ("face_f1", "janus_rate", "faceless_rate", "pose_error_deg", "psnr", "iou")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=list(TIERS), default="quick")
    parser.add_argument("--scene_seeds", default=None, help="held-out scenes, e.g. 11,12")
    parser.add_argument("--scenes", nargs="+", default=None, choices=DEV_SCENES)
    parser.add_argument("--seeds", default=None, help="run seeds, e.g. 0,1,2")
    parser.add_argument("--n_steps", type=int, default=None)
    parser.add_argument("--guidance", default=None, help="guidance scales, e.g. 100 or 3,100")
    parser.add_argument("--disagreement", type=float, default=0.3, help="independent probe")
    parser.add_argument("--out", default="janus_results.json")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def commit() -> str:
    """The git commit of this checkout (with '-dirty' for uncommitted changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def fields_equal(a: ArmRun, b: ArmRun) -> bool:
    """Bit-for-bit equality of two trained fields."""
    return torch.equal(a.field.raw_density, b.field.raw_density) and torch.equal(
        a.field.feature_grid, b.field.feature_grid
    )


def run_scene(scene: str, size: dict, args: argparse.Namespace, record: dict) -> None:
    """Every run of one scene: probes, G1, arms per guidance and seed, G3's control, G4."""
    cpu = torch.device("cpu")
    base = world_config(scene, n_steps=size["n_steps"], **{"toy.n_images": size["n_images"]})
    model = ToyScoreModel.from_config(base, cpu)
    reference = build_reference(scene, base, cpu)
    ideal = ideal_probe(base)
    probes = {"independent": independent_probe(base, args.disagreement),
              "oracle": CaptionProbe(model.captions, model.view_words)}  # fmt: skip
    accuracy = {str(d): decision_accuracy(independent_probe(base, d), ideal, base)["accuracy"]
                for d in PROBE_DISAGREEMENTS}  # fmt: skip
    accuracy["oracle"] = decision_accuracy(probes["oracle"], ideal, base)["accuracy"]
    record["probe_accuracy"][scene] = accuracy
    prompts = {name: view_prompts(base, cpu, probes.get(arm.probe)) for name, arm in ARMS.items()}
    record["prompts"][scene] = {name: p.texts for name, p in prompts.items()}
    start = field_scores(ground_truth_field(scene, base, cpu, side=32), reference, base)
    unbiased_cfg = world_config(scene, **{"toy.n_images": size["n_images"], "toy.front_bias": 0.0})
    unbiased = ToyScoreModel.from_config(unbiased_cfg, cpu)
    neutral = view_prompts(base.model_copy(update={"toy": neutral_toy(base, scene)}), cpu, None)
    for guidance in size["guidance"]:
        g = str(guidance)
        model_g = model.with_guidance(guidance)
        for name in FIXED_POINT_ARMS:
            cfg = base.model_copy(update={"n_steps": size["fixed_point_steps"], **ARMS[name].flags})
            run = train_arm(cfg, model_g, prompts["plain"], start_from=scene,
                            view_condition=exact_view_oracle(model_g))  # fmt: skip
            end = field_scores(run.field, reference, cfg)
            row = {"scene": scene, "arm": name, "start_psnr": start["psnr"]}
            row.update(end_psnr=end["psnr"], end_pose_error_deg=end["pose_error_deg"])
            record["fixed_point"].setdefault(g, []).append(row)
        for seed in size["seeds"]:
            runs: dict[str, ArmRun] = {}
            for name, arm in ARMS.items():
                cfg = base.model_copy(update={"seed": seed, **arm.flags})
                oracle = exact_view_oracle(model_g) if arm.oracle_views else None
                transform = norm_matching(runs["score_dynamic"].score_abs_mean) if (
                    arm.norm_matched) else None  # fmt: skip
                runs[name] = train_arm(cfg, model_g, prompts[name], score_transform=transform,
                                       view_condition=oracle)  # fmt: skip
                scores = field_scores(runs[name].field, reference, cfg)
                scores["clipped_frac"] = sum(runs[name].clipped_frac) / cfg.n_steps
                record["runs"].setdefault(g, {}).setdefault(name, {}).setdefault(scene, {})[
                    str(seed)] = scores  # fmt: skip
            control = train_arm(base.model_copy(update={"seed": seed}),
                                unbiased.with_guidance(guidance), neutral)  # fmt: skip
            janus = field_scores(control.field, reference, base)["janus_rate"]
            record["unbiased_janus"].setdefault(g, {}).setdefault(scene, {})[str(seed)] = janus
    short = base.model_copy(update={"n_steps": 10, "toy": neutral_toy(base, scene)})
    neutral_runs = [
        train_arm(short, model, view_prompts(short, cpu, probes.get(probe)))
        for probe in (None, "independent", "oracle")
    ]
    record["neutral_equal"][scene] = all(fields_equal(neutral_runs[0], r) for r in neutral_runs[1:])


def neutral_toy(cfg: SJCConfig, scene: str) -> ToyConfig:
    """The toy settings of `cfg` with the neutral prompt 'a <noun>'."""
    return cfg.toy.model_copy(update={"prompt": scene_prompt(scene, neutral=True)})


def gates(record: dict) -> dict[str, dict[str, bool]]:
    """Every gate per guidance (G4 is guidance-free and repeated)."""
    result = {}
    for g, per_arm in record["runs"].items():
        face = {s: {k: v["face_f1"] for k, v in seeds.items()}
                for s, seeds in per_arm["oracle_captions"].items()}  # fmt: skip
        janus = {s: {k: v["janus_rate"] for k, v in seeds.items()}
                 for s, seeds in per_arm["plain"].items()}  # fmt: skip
        result[g] = {
            "G1_fixed_point": gate_fixed_point(record["fixed_point"][g]),
            "G2_reachable": gate_reachable(face),
            "G3_bias_present_and_removable": gate_bias(janus, record["unbiased_janus"][g]),
            "G4_neutral_prompt_bit_equal": all(record["neutral_equal"].values()),
        }
    return result


def summaries(record: dict) -> dict:
    """Per guidance, arm and metric: mean [low, high], and the paired difference to plain."""
    out: dict = {}
    for g, per_arm in record["runs"].items():
        for arm, per_scene in per_arm.items():
            for key in (*TABLE_KEYS, "clipped_frac"):
                values = {
                    s: {k: v[key] for k, v in seeds.items()} for s, seeds in per_scene.items()
                }
                plain = {s: {k: v[key] for k, v in seeds.items()}
                         for s, seeds in per_arm["plain"].items()}  # fmt: skip
                entry = {
                    "mean": bootstrap_mean(values),
                    "minus_plain": bootstrap_mean(paired_differences(values, plain)),
                }
                out.setdefault(g, {}).setdefault(arm, {})[key] = entry  # fmt: skip
    return out


def format_tables(record: dict) -> str:
    """Gates, then per guidance either FAIL or a markdown table (mean [95 % interval])."""
    lines = []
    for g, passed in record["gates"].items():
        lines.append(f"guidance {g}: " + ", ".join(
            f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in passed.items()))  # fmt: skip
    for g, per_arm in record["summary"].items():
        if not all(record["gates"][g].values()):
            lines.append(f"\nguidance {g}: FAIL (a gate failed; no method table)")
            continue
        lines.append(f"\nguidance {g}\n| arm | " + " | ".join(TABLE_KEYS) + " |")
        lines.append("|" + " --- |" * (len(TABLE_KEYS) + 1))
        for arm, metrics in per_arm.items():
            cells = ["{:.3f} [{:.3f}, {:.3f}]".format(*metrics[k]["mean"]) for k in TABLE_KEYS]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    size = dict(TIERS[args.tier])
    if args.scene_seeds:
        size["scenes"] = [f"seed{int(s)}" for s in args.scene_seeds.split(",")]
    elif args.scenes:
        size["scenes"] = args.scenes
    if args.seeds:
        size["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.guidance:
        size["guidance"] = [float(g) for g in args.guidance.split(",")]
    if args.n_steps:
        size["n_steps"] = size["fixed_point_steps"] = args.n_steps
    record: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]), "commit": commit(), "world_hash": world_hash(),
        "machine": f"{cpu_model()}, {torch.get_num_threads()} torch threads", "tier": args.tier,
        "settings": {**size, "world_flags": WORLD_FLAGS, "disagreement": args.disagreement,
                     "arms": {n: vars(a) for n, a in ARMS.items()}},
        "runs": {}, "fixed_point": {}, "unbiased_janus": {}, "neutral_equal": {},
        "probe_accuracy": {}, "prompts": {},
    }  # fmt: skip
    start = time.perf_counter()
    for scene in size["scenes"]:
        run_scene(scene, size, args, record)
        print(f"{scene} done ({time.perf_counter() - start:.0f} s)", flush=True)
    record["gates"] = gates(record)
    record["summary"] = summaries(record)
    record["wall_seconds"] = time.perf_counter() - start
    text = format_tables(record)
    print(text)
    print(f"probe decision accuracy: {record['probe_accuracy']}")
    print(f"total {record['wall_seconds']:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
