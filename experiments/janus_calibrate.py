"""Calibrate the Janus benchmark v2's optimisation settings on its controls only (issue 14).

    python experiments/janus_calibrate.py              # the shipped world: lr 0.5, 300 steps
    python experiments/janus_calibrate.py --lr 1.0 --n_steps 150 --n_images 512 --label_oracle

Runs, per dev scene and seed, only the runs that no debiasing method takes part in: the
exact-view oracle arm from fog (the reachability control of gate G2; `--label_oracle` adds the
oracle that only knows the view label) and, from the ground truth, plain SJC under the
exact-view oracle (the fixed-point control of gate G1). Every run is scored
at several part-colour tolerances on the same trained field, next to the ground truth sampled at
the training grid (the best answer the field can represent) and two hand-built wrong answers
(a faceless and a two-faced field), so that a tolerance is picked where the representable
answer reads right and the wrong ones still read wrong. No debiasing arm is run or read here:
the benchmark's settings are chosen from this output before any method runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from sjc_dsds.toy import parts
from sjc_dsds.toy.arms import PLAIN, exact_view_oracle, train_arm, view_prompts
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.ground_truth import ground_truth_field
from sjc_dsds.toy.metrics import build_reference, field_scores
from sjc_dsds.toy.protocol import DEV_SCENES, world_config
from sjc_dsds.toy.scenes import build_scene
from sjc_dsds.toy.wrong_answers import faceless_scene, two_faced_scene

KEYS = ("face_f1", "janus_rate", "faceless_rate", "pose_error_deg", "psnr", "iou")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(DEV_SCENES), choices=DEV_SCENES)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--lr", type=float, default=None, help="default: the world's")
    parser.add_argument("--n_steps", type=int, default=300)
    parser.add_argument("--fixed_point_steps", type=int, default=None, help="default: n_steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--n_images", type=int, default=None, help="prior size (--toy.n_images)")
    parser.add_argument("--tolerances", default="0.2,0.3,0.4")
    parser.add_argument(
        "--label_oracle", action="store_true", help="also run the view-label oracle from fog"
    )
    parser.add_argument("--out", default=None, help="JSON of every score")
    return parser.parse_args(argv)


def scores_at(field, reference, cfg, tolerances: list[float]) -> dict[str, dict[str, float]]:
    """`field_scores` of one field at each part-colour tolerance (same render, same field)."""
    result = {}
    for tolerance in tolerances:
        with mock.patch.object(parts, "PART_COLOR_TOLERANCE", tolerance):
            result[str(tolerance)] = field_scores(field, reference, cfg)
    return result


def summary_line(label: str, runs: list[dict[str, float]]) -> str:
    """Median of each key over runs, and face-F1 >= 0.8 in how many runs."""
    cells = [f"{key} {statistics.median(run[key] for run in runs):.2f}" for key in KEYS]
    reached = sum(run["face_f1"] >= 0.8 for run in runs)
    return f"{label:34s} " + "  ".join(cells) + f"  F1>=0.8 in {reached}/{len(runs)}"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    tolerances = [float(value) for value in args.tolerances.split(",")]
    record: dict = {"settings": vars(args), "scenes": {}}
    start = time.perf_counter()
    for scene in args.scenes:
        world = {"toy.n_images": args.n_images} if args.n_images else {}
        world.update({"lr": args.lr} if args.lr else {})
        base = world_config(scene, n_steps=args.n_steps, **world)
        model = ToyScoreModel.from_config(base, cpu).with_guidance(args.guidance)
        label_oracle = model.oracle_copy()
        oracle = exact_view_oracle(model)
        reference = build_reference(scene, base, cpu)
        prompts = view_prompts(base, cpu, None)
        side = base.vox.grid_size[0]
        hand_built = {"truth_at_grid": build_scene(scene)}
        hand_built["faceless"] = faceless_scene(hand_built["truth_at_grid"])
        hand_built["two_faced"] = two_faced_scene(hand_built["truth_at_grid"])
        entry: dict = {
            name: scores_at(ground_truth_field(built, base, cpu, side=side), reference, base,
                            tolerances)
            for name, built in hand_built.items()
        }  # fmt: skip
        entry["oracle_from_fog"] = {}
        entry["label_oracle_from_fog"] = {}
        for seed in seeds:
            cfg = base.model_copy(update={"seed": seed, **PLAIN})
            run = train_arm(cfg, model, prompts, view_condition=oracle)
            entry["oracle_from_fog"][str(seed)] = scores_at(run.field, reference, cfg, tolerances)
            if args.label_oracle:
                run = train_arm(cfg, label_oracle, prompts)
                scored = scores_at(run.field, reference, cfg, tolerances)
                entry["label_oracle_from_fog"][str(seed)] = scored
        steps = args.fixed_point_steps or args.n_steps
        fixed = base.model_copy(update={"n_steps": steps, **PLAIN})
        run = train_arm(fixed, model, prompts, start_from=scene, view_condition=oracle)
        entry["fixed_point"] = scores_at(run.field, reference, fixed, tolerances)
        record["scenes"][scene] = entry
        print(f"\n{scene} (lr {base.lr}, {base.toy.n_images} images, {args.n_steps} steps, "
              f"guidance {args.guidance}, {time.perf_counter() - start:.0f} s)")  # fmt: skip
        for tolerance in map(str, tolerances):
            print(f"  colour tolerance {tolerance}")
            for name in ("truth_at_grid", "faceless", "two_faced", "fixed_point"):
                print("    " + summary_line(name, [entry[name][tolerance]]))
            for name in ("oracle_from_fog", "label_oracle_from_fog"):
                runs = [entry[name][str(seed)][tolerance] for seed in seeds if entry[name]]
                if runs:
                    print("    " + summary_line(f"{name}, seeds {args.seeds}", runs))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
