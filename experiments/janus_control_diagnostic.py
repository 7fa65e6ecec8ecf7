"""Plain SJC with view-word prompts on one scene, per seed, for chosen world flags (issue 14).

    python experiments/janus_control_diagnostic.py --scene cube --view_caption_frac 0.8 1.0

Gate G3's control asks whether Janus needs the prior's front bias. This runs plain SJC (no
debiasing) at the benchmark's settings for each front bias (0: the unbiased control with the
neutral prompt 'a <noun>'; 0.8: the benchmark's prior and prompt) and each share of captions
that name their view, and prints Janus rate, face-F1 and pose error per seed.
"""

from __future__ import annotations

import argparse
import time

import torch

from sjc_dsds.toy.arms import PLAIN, train_arm, view_prompts
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.metrics import build_reference, field_scores
from sjc_dsds.toy.protocol import DEV_SCENES, scene_prompt, world_config


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="cube", choices=DEV_SCENES)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--n_steps", type=int, default=300)
    parser.add_argument("--front_bias", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--view_caption_frac", type=float, nargs="+", default=[0.8, 1.0])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    start = time.perf_counter()
    for share in args.view_caption_frac:
        for bias in args.front_bias:
            prompt = scene_prompt(args.scene, neutral=bias == 0.0)
            flags = {"toy.front_bias": bias, "toy.view_caption_frac": share, "toy.prompt": prompt}
            cfg = world_config(args.scene, n_steps=args.n_steps, **flags)
            model = ToyScoreModel.from_config(cfg, cpu)
            reference = build_reference(args.scene, cfg, cpu)
            prompts = view_prompts(cfg, cpu, None)
            rows = []
            for seed in seeds:
                run = train_arm(cfg.model_copy(update={"seed": seed, **PLAIN}), model, prompts)
                scores = field_scores(run.field, reference, cfg)
                rows.append(
                    f"{scores['janus_rate']:.2f} / {scores['face_f1']:.2f} / "
                    f"{scores['pose_error_deg']:.0f}"
                )
            print(
                f"{args.scene} view_caption_frac {share} front_bias {bias} ({prompt!r}); "
                f"Janus / face-F1 / pose error per seed {args.seeds}: {'; '.join(rows)} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
