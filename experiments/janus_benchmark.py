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
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sjc_dsds.config import SJCConfig, ToyConfig
from sjc_dsds.prompts import ViewPrompts
from sjc_dsds.runtime import cpu_model
from sjc_dsds.toy.arms import (
    ARMS,
    Arm,
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
    metric_values,
    paired_differences,
)
from sjc_dsds.toy.ground_truth import ground_truth_field
from sjc_dsds.toy.metrics import Reference, build_reference, field_scores
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
TABLE_KEYS = (
    "face_f1", "janus_rate", "faceless_rate", "two_faced_rate", "turned_rate", "pose_error_deg",
    "psnr", "iou",
)  # fmt: skip


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
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (one torch thread each); same results"
    )
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


@dataclass
class SceneSetup:
    """What every run of one scene needs: its configs, models, reference and prompts."""

    scene: str
    base: SJCConfig
    model: ToyScoreModel
    unbiased: ToyScoreModel
    reference: Reference
    prompts: dict[str, ViewPrompts]
    neutral: ViewPrompts
    probes: dict[str, CaptionProbe]
    probe_accuracy: dict[str, float]


def scene_setup(scene: str, size: dict, disagreement: float) -> SceneSetup:
    """Render the scene's prior (biased, and unbiased for G3's control) and build its prompts."""
    cpu = torch.device("cpu")
    base = world_config(scene, n_steps=size["n_steps"], **{"toy.n_images": size["n_images"]})
    model = ToyScoreModel.from_config(base, cpu)
    ideal = ideal_probe(base)
    probes = {"independent": independent_probe(base, disagreement),
              "oracle": CaptionProbe(model.captions, model.view_words)}  # fmt: skip
    accuracy = {str(d): decision_accuracy(independent_probe(base, d), ideal, base)["accuracy"]
                for d in PROBE_DISAGREEMENTS}  # fmt: skip
    accuracy["oracle"] = decision_accuracy(probes["oracle"], ideal, base)["accuracy"]
    prompts = {name: view_prompts(base, cpu, probes.get(arm.probe)) for name, arm in ARMS.items()}
    unbiased_cfg = world_config(scene, **{"toy.n_images": size["n_images"], "toy.front_bias": 0.0})
    neutral = view_prompts(base.model_copy(update={"toy": neutral_toy(base, scene)}), cpu, None)
    return SceneSetup(scene, base, model, ToyScoreModel.from_config(unbiased_cfg, cpu),
                      build_reference(scene, base, cpu), prompts, neutral, probes,
                      accuracy)  # fmt: skip


def run_gate_unit(setup: SceneSetup, size: dict) -> dict:
    """G1's runs (ground-truth start, exact-view oracle) per guidance, and G4's neutral runs."""
    cpu = torch.device("cpu")
    base, scene = setup.base, setup.scene
    start = field_scores(ground_truth_field(scene, base, cpu, side=32), setup.reference, base)
    fixed_point: dict[str, list] = {}
    for guidance in size["guidance"]:
        model_g = setup.model.with_guidance(guidance)
        for name in FIXED_POINT_ARMS:
            cfg = base.model_copy(update={"n_steps": size["fixed_point_steps"], **ARMS[name].flags})
            run = train_arm(cfg, model_g, setup.prompts["plain"], start_from=scene,
                            view_condition=exact_view_oracle(model_g))  # fmt: skip
            end = field_scores(run.field, setup.reference, cfg)
            row = {"scene": scene, "arm": name, "start_psnr": start["psnr"]}
            row.update(end_psnr=end["psnr"], end_pose_error_deg=end["pose_error_deg"])
            fixed_point.setdefault(str(guidance), []).append(row)
    short = plain_config(base, base.seed).model_copy(
        update={"n_steps": 10, "toy": neutral_toy(base, scene)}
    )
    neutral_runs = [
        train_arm(short, setup.model, view_prompts(short, cpu, setup.probes.get(probe)))
        for probe in (None, "independent", "oracle")
    ]
    equal = all(fields_equal(neutral_runs[0], r) for r in neutral_runs[1:])
    return {"fixed_point": fixed_point, "neutral_equal": equal}


def plain_config(base: SJCConfig, seed: int) -> SJCConfig:
    """The run config of plain SJC for one seed (SJC's default config clips the score, as
    D-SDS does; the controls must not)."""
    return base.model_copy(update={"seed": seed, **ARMS["plain"].flags})


def run_key(arm: Arm, prompts: ViewPrompts) -> tuple | None:
    """What decides an arm's run, for arms that depend on nothing else (None: always run)."""
    if arm.norm_matched or arm.oracle_views:
        return None
    return tuple(sorted(arm.flags.items())), tuple(sorted(prompts.texts.items()))


def run_seed_unit(setup: SceneSetup, size: dict, seed: int) -> dict:
    """Every arm and G3's unbiased control for one seed, per guidance. An arm whose flags and
    prompts equal an earlier arm's is not trained again: the streams are shared, so its run
    would be the same bit for bit (G4 checks that); it is listed under 'reused'."""
    base = setup.base
    out: dict[str, dict] = {"scores": {}, "reused": {}, "unbiased": {}}
    for guidance in size["guidance"]:
        g = str(guidance)
        model_g = setup.model.with_guidance(guidance)
        runs: dict[str, ArmRun] = {}
        scores: dict[str, dict] = {}
        trained: dict[tuple, str] = {}
        for name, arm in ARMS.items():
            key = run_key(arm, setup.prompts[name])
            if key is not None and key in trained:
                scores[name] = dict(scores[trained[key]])
                out["reused"].setdefault(g, {})[name] = trained[key]
                continue
            cfg = base.model_copy(update={"seed": seed, **arm.flags})
            oracle = exact_view_oracle(model_g) if arm.oracle_views else None
            transform = norm_matching(runs["score_dynamic"].score_abs_mean) if (
                arm.norm_matched) else None  # fmt: skip
            runs[name] = train_arm(cfg, model_g, setup.prompts[name], score_transform=transform,
                                   view_condition=oracle)  # fmt: skip
            scores[name] = field_scores(runs[name].field, setup.reference, cfg)
            scores[name]["clipped_frac"] = sum(runs[name].clipped_frac) / cfg.n_steps
            if key is not None:
                trained[key] = name
        out["scores"][g] = scores
        control = train_arm(plain_config(base, seed), setup.unbiased.with_guidance(guidance),
                            setup.neutral)  # fmt: skip
        out["unbiased"][g] = field_scores(control.field, setup.reference, base)
    return out


Unit = tuple[str, str, int]  # ('gates', scene, -1) or ('seed', scene, seed)


def run_units(units: list[Unit], size: dict, disagreement: float) -> list[tuple[Unit, dict]]:
    """Run units in order, building each scene's setup once (one worker's share)."""
    torch.set_num_threads(1)
    setups: dict[str, SceneSetup] = {}
    results = []
    start = time.perf_counter()
    for unit in units:
        kind, scene, seed = unit
        if scene not in setups:
            setups.clear()  # units come scene by scene: one setup in memory at a time
            setups[scene] = scene_setup(scene, size, disagreement)
        setup = setups[scene]
        if kind == "gates":
            result = run_gate_unit(setup, size)
            result["probe_accuracy"] = setup.probe_accuracy
            result["prompts"] = {name: p.texts for name, p in setup.prompts.items()}
        else:
            result = run_seed_unit(setup, size, seed)
        results.append((unit, result))
        label = f"{scene} gates" if kind == "gates" else f"{scene} seed {seed}"
        elapsed = time.perf_counter() - start
        print(f"  [pid {os.getpid()}] {label} done ({elapsed:.0f} s)", flush=True)
    return results


def split_units(units: list[Unit], n_chunks: int) -> list[list[Unit]]:
    """Contiguous chunks of about equal cost (a seed unit runs 9 arms, a gate unit about 4),
    so that each worker renders as few scene priors as possible."""
    cost = [4.0 if kind == "gates" else 9.0 for kind, _, _ in units]
    total, chunks, current, spent = sum(cost), [], [], 0.0
    for unit, c in zip(units, cost):
        current.append(unit)
        spent += c
        if spent >= total * (len(chunks) + 1) / n_chunks and len(chunks) < n_chunks - 1:
            chunks.append(current)
            current = []
    chunks.append(current)
    return [chunk for chunk in chunks if chunk]


def run_all(size: dict, args: argparse.Namespace, record: dict) -> None:
    """Every unit of every scene, on `args.workers` processes, merged into `record` in order."""
    units: list[Unit] = []
    for scene in size["scenes"]:
        units.append(("gates", scene, -1))
        units.extend(("seed", scene, seed) for seed in size["seeds"])
    chunks = split_units(units, max(1, args.workers))
    jobs = [(chunk, size, args.disagreement) for chunk in chunks]
    if len(chunks) == 1:
        results = run_units(*jobs[0])
    else:
        with multiprocessing.get_context("fork").Pool(len(chunks)) as pool:
            results = [item for part in pool.starmap(run_units, jobs) for item in part]
    for (kind, scene, seed), result in results:
        if kind == "gates":
            record["probe_accuracy"][scene] = result["probe_accuracy"]
            record["prompts"][scene] = result["prompts"]
            for g, rows in result["fixed_point"].items():
                record["fixed_point"].setdefault(g, []).extend(rows)
            record["neutral_equal"][scene] = result["neutral_equal"]
            continue
        for g, per_arm in result["scores"].items():
            for name, scores in per_arm.items():
                record["runs"].setdefault(g, {}).setdefault(name, {}).setdefault(scene, {})[
                    str(seed)] = scores  # fmt: skip
            record["unbiased_scores"].setdefault(g, {}).setdefault(scene, {})[str(seed)] = (
                result["unbiased"][g])  # fmt: skip
        for g, reused in result["reused"].items():
            record["reused_runs"].setdefault(g, {}).setdefault(scene, {})[str(seed)] = reused


def neutral_toy(cfg: SJCConfig, scene: str) -> ToyConfig:
    """The toy settings of `cfg` with the neutral prompt 'a <noun>'."""
    return cfg.toy.model_copy(update={"prompt": scene_prompt(scene, neutral=True)})


def gates(record: dict) -> dict[str, dict[str, bool]]:
    """Every gate per guidance (G4 is guidance-free and repeated)."""
    result = {}
    for g, per_arm in record["runs"].items():
        result[g] = {
            "G1_fixed_point": gate_fixed_point(record["fixed_point"][g]),
            "G2_reachable": gate_reachable(metric_values(per_arm["oracle_captions"], "face_f1")),
            "G3_bias_present_and_removable": gate_bias(
                metric_values(per_arm["plain"], "janus_rate"),
                metric_values(record["unbiased_scores"][g], "janus_rate"),
            ),
            "G4_neutral_prompt_bit_equal": all(record["neutral_equal"].values()),
        }
    return result


def gate_diagnostics(record: dict) -> dict[str, dict[str, bool]]:
    """G3's rule read on the two-faced rate instead of the Janus rate (not a gate): a turned-
    around object counts as Janus, but not as two-faced."""
    result = {}
    for g, per_arm in record["runs"].items():
        plain = metric_values(per_arm["plain"], "two_faced_rate")
        unbiased = metric_values(record["unbiased_scores"][g], "two_faced_rate")
        result[g] = {"G3_on_two_faced_rate": gate_bias(plain, unbiased)}
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
        lines.append(f"guidance {g} (diagnostic, not a gate): " + ", ".join(
            f"{name} {'PASS' if ok else 'FAIL'}"
            for name, ok in record["gate_diagnostics"][g].items()))  # fmt: skip
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
    if args.workers < 1:
        raise SystemExit(f"--workers must be a positive integer; got {args.workers}")
    torch.set_num_threads(1)
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
        "machine": f"{cpu_model()}, {args.workers} workers of 1 torch thread", "tier": args.tier,
        "settings": {**size, "world_flags": WORLD_FLAGS, "disagreement": args.disagreement,
                     "arms": {n: vars(a) for n, a in ARMS.items()}},
        "runs": {}, "fixed_point": {}, "neutral_equal": {},
        "probe_accuracy": {}, "prompts": {}, "unbiased_scores": {}, "reused_runs": {},
    }  # fmt: skip
    start = time.perf_counter()
    run_all(size, args, record)
    record["gates"] = gates(record)
    record["gate_diagnostics"] = gate_diagnostics(record)
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
