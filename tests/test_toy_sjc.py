"""End to end: plain SJC with the exact toy prior recovers the ground-truth silhouette."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds import build_config, run_sjc
from sjc_dsds.toy import ToyScoreModel
from sjc_dsds.toy.ground_truth import orbit_views, render_scene_views
from sjc_dsds.toy.metrics import silhouette_iou

# Run flags (see experiments/janus_benchmark.py for why each differs from SJC's default).
FLAGS = {
    "family": "toy",
    "device": "cpu",
    "n_steps": 300,
    "score_thres": 0.0,
    "emptiness_weight": 1000.0,
    "vox.grid_size": 32,
    "pose.rend_hw": 32,
    "pose.train_fov_min_deg": 60.0,
    "pose.train_fov_max_deg": 60.0,
    "toy.scene": "head",
    "toy.front_bias": 0.0,
    "toy.n_images": 256,
    "vis_every": 10_000,
    "save_every": 10_000,
}

# A recovered silhouette must beat a wrong object of about the same size: on this orbit at 32 px,
# the cube's silhouette overlaps the head's with IoU <= WRONG_OBJECT_IOU_MAX from every view
# (0.775 measured; asserted below), so the threshold sits above that and below a perfect 1.
WRONG_OBJECT_IOU_MAX = 0.8
SILHOUETTE_IOU_THRESHOLD = 0.82
# One seed is not evidence: with separate random streams, 300 steps gave a worst-view IoU of
# 0.754 / 0.831 / 0.829 / 0.824 and a back-view Janus rate of 1/3, 0, 1/3, 0 for seeds 0-3
# (the seed the test used to pass on was lucky). The claim tested is what holds for most seeds.
SEEDS = (0, 1, 2)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="world v2 (issue 14): plain SJC with view-word prompts does not reliably recover the "
    "silhouette (median worst-view IoU 0.768 at these flags; 0.551 at the benchmark's lr 0.5 and "
    "2048 images); the exact-view oracle does (benchmark gate G2), so the view-word prompts, "
    "not the optimiser, are what fails (experiments/README.md, Janus benchmark v2)",
    strict=False,
)
def test_plain_sjc_on_an_unbiased_prior_recovers_the_silhouette_from_every_side(tmp_path):
    cfg = build_config({**FLAGS, "out_dir": str(tmp_path / "run")})
    cameras = [view.camera for view in orbit_views(cfg)]
    head = render_scene_views("head", cameras, cfg, torch.device("cpu")).opacity
    cube = render_scene_views("cube", cameras, cfg, torch.device("cpu")).opacity
    assert float(silhouette_iou(cube, head).max()) <= WRONG_OBJECT_IOU_MAX
    assert {view.label for view in orbit_views(cfg)} == {"front", "side", "back"}

    model = ToyScoreModel.from_config(cfg, torch.device("cpu"))
    results = [
        run_sjc(
            build_config({**FLAGS, "seed": seed, "out_dir": str(tmp_path / f"s{seed}")}),
            model=model,
            progress=False,
        ).metrics
        for seed in SEEDS
    ]
    ious = sorted(metrics["gt_iou_min"] for metrics in results)
    assert ious[len(ious) // 2] >= SILHOUETTE_IOU_THRESHOLD, ious
    # The head is nearly round, so also check its orientation: back views rarely show a face
    # (a front-biased prior makes every back view a face: rate 1.0 in the Janus benchmark).
    back_janus = [metrics["gt_janus_rate"] for metrics in results]
    assert sum(back_janus) / len(back_janus) <= 0.5, back_janus
