"""Validity gates of the Janus benchmark v2 and its interval arithmetic (issue 14).

G1 fixed point: started at the ground truth with oracle view captions, every score arm loses
< 1 dB PSNR and ends under 10 degrees pose error. G2 reachable: from fog, the oracle-caption arm
reaches face-F1 >= 0.8 in >= 80 % of seeds (4 of 5) on every scene. G3 bias present and
removable: plain SJC has Janus >= 0.5 in >= 60 % of seeds (3 of 5) on >= 2 scenes (every scene
when there are fewer), and mean Janus <= 0.1 on every scene with an unbiased prior and no front
word. G4: with a neutral prompt, prompt debiasing leaves the run bit for bit equal to plain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

G1_MAX_PSNR_LOSS_DB = 1.0
G1_MAX_POSE_ERROR_DEG = 10.0
G2_MIN_FACE_F1 = 0.8
G2_MIN_SEED_SHARE = 0.8
G3_MIN_JANUS = 0.5
G3_MIN_SEED_SHARE = 0.6
G3_MIN_SCENES = 2
G3_MAX_UNBIASED_JANUS = 0.1

# {scene: {seed: value}}
PerScene = Mapping[str, Mapping[str, float]]


def metric_values(runs: Mapping[str, Mapping[str, Mapping[str, float]]], key: str) -> PerScene:
    """{scene: {seed: scores[key]}} of per-run score dicts {scene: {seed: scores}}."""
    return {scene: {seed: scores[key] for seed, scores in seeds.items()}
            for scene, seeds in runs.items()}  # fmt: skip


def gate_fixed_point(rows: Sequence[Mapping[str, float]]) -> bool:
    """G1 over rows {'start_psnr', 'end_psnr', 'end_pose_error_deg'} (one per scene and arm)."""
    return bool(rows) and all(
        row["end_psnr"] > row["start_psnr"] - G1_MAX_PSNR_LOSS_DB
        and row["end_pose_error_deg"] < G1_MAX_POSE_ERROR_DEG
        for row in rows
    )


def gate_reachable(oracle_face_f1: PerScene) -> bool:
    """G2: on every scene, >= G2_MIN_SEED_SHARE of seeds reach face-F1 >= G2_MIN_FACE_F1."""
    return bool(oracle_face_f1) and all(
        _share(seeds.values(), lambda v: v >= G2_MIN_FACE_F1) >= G2_MIN_SEED_SHARE
        for seeds in oracle_face_f1.values()
    )


def gate_bias(plain_janus: PerScene, unbiased_janus: PerScene) -> bool:
    """G3: the bias shows on enough scenes, and vanishes with an unbiased prior."""
    biased = sum(
        _share(seeds.values(), lambda v: v >= G3_MIN_JANUS) >= G3_MIN_SEED_SHARE
        for seeds in plain_janus.values()
    )
    needed = min(G3_MIN_SCENES, len(plain_janus))
    removable = all(
        _nanmean(seeds.values()) <= G3_MAX_UNBIASED_JANUS for seeds in unbiased_janus.values()
    )
    return bool(plain_janus) and bool(unbiased_janus) and biased >= needed and removable


def _share(values, condition) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(condition(v) for v in values) / len(values) if values else 0.0


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def bootstrap_mean(
    values: PerScene, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over scenes of the mean over seeds, with a 95 % percentile interval from resampling
    scenes, then seeds within each drawn scene (nan values are left out)."""
    groups = [
        [v for v in seeds.values() if not math.isnan(v)] for seeds in values.values()
    ]  # fmt: skip
    groups = [group for group in groups if group]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    point = sum(sum(g) / len(g) for g in groups) / len(groups)
    rng = random.Random(seed)
    means = []
    for _ in range(n_resamples):
        drawn = [rng.choice(groups) for _ in groups]
        means.append(sum(sum(rng.choices(g, k=len(g))) / len(g) for g in drawn) / len(drawn))
    means.sort()
    return point, means[int(0.025 * n_resamples)], means[int(0.975 * n_resamples) - 1]


def paired_differences(arm: PerScene, baseline: PerScene) -> dict[str, dict[str, float]]:
    """arm - baseline per scene and seed (the pairs share field, camera and noise streams)."""
    return {
        scene: {seed: arm[scene][seed] - baseline[scene][seed] for seed in seeds}
        for scene, seeds in arm.items()
        if scene in baseline
    }
