"""Ground-truth metrics: hand-computed values, and a constructed two-faced head scores as Janus."""

from __future__ import annotations

import math

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.toy.ground_truth import ground_truth_field, ground_truth_vox_config, orbit_views
from sjc_dsds.toy.metrics import (
    adjacent_difference,
    ground_truth_metrics,
    janus_flags,
    orbit_metrics,
    psnr_from_mse,
    silhouette_iou,
)


def test_psnr_of_hand_computed_errors():
    # -10 log10(0.01) = 20 dB; -10 log10(0.25) = 6.0206 dB.
    psnr = psnr_from_mse(torch.tensor([0.01, 0.25]))
    torch.testing.assert_close(psnr, torch.tensor([20.0, 10 * math.log10(4)]))


def test_silhouette_iou_of_hand_drawn_masks():
    opacity = torch.zeros(2, 1, 2, 3)
    reference = torch.zeros(2, 1, 2, 3)
    opacity[0, 0, 0, :] = 1.0  # three pixels
    reference[0, 0, :, 0] = 0.9  # two pixels, one shared -> IoU 1 / 4
    # View 1: both empty -> IoU 1 by convention (nothing to miss).
    torch.testing.assert_close(silhouette_iou(opacity, reference), torch.tensor([0.25, 1.0]))


def test_adjacent_difference_closes_the_loop():
    frames = torch.tensor([0.0, 1.0, 3.0]).reshape(3, 1, 1, 1)
    # |1 - 0|, |3 - 1|, |0 - 3| -> mean 2.
    assert adjacent_difference(frames) == 2.0


def test_janus_flags_mark_back_views_that_copy_a_front_view():
    generator = torch.Generator().manual_seed(0)
    ground_truth = torch.rand(6, 3, 4, 4, generator=generator)
    labels = ["front", "front", "side", "back", "back", "side"]
    renders = ground_truth + 0.01 * torch.randn(6, 3, 4, 4, generator=generator)
    assert not janus_flags(renders, ground_truth, labels).any()
    renders[3] = ground_truth[1]
    # Non-front order: side(2), back(3), back(4), side(5).
    assert janus_flags(renders, ground_truth, labels).tolist() == [False, True, False, False]
    metrics = orbit_metrics(
        renders, torch.ones(6, 1, 4, 4), ground_truth, torch.ones(6, 1, 4, 4), labels
    )
    assert metrics["gt_janus_rate"] == 0.25
    assert metrics["gt_janus_rate_back"] == 0.5
    assert metrics["gt_silhouette_iou_min"] == 1.0


def _config() -> SJCConfig:
    return SJCConfig.model_validate(
        {"family": "toy", "vox": {"blend_bg_texture": False}, "pose": {"rend_hw": 24}}
    )


def test_ground_truth_field_scores_perfectly_against_itself():
    cfg = _config()
    metrics = ground_truth_metrics(ground_truth_field("head", cfg, torch.device("cpu")), cfg)
    assert metrics["gt_psnr"] == math.inf
    assert metrics["gt_janus_rate"] == 0.0
    assert metrics["gt_silhouette_iou_min"] == 1.0
    assert (
        metrics["gt_orbit_adjacent_difference"] == metrics["gt_orbit_adjacent_difference_reference"]
    )


def _two_faced(field: VoxelRadianceField) -> VoxelRadianceField:
    """The head with its x < 0 half (the face) mirrored onto the x > 0 half (the hair)."""
    raw, features = field.raw_density.detach().clone(), field.feature_grid.detach().clone()
    half = raw.shape[-1] // 2
    raw[..., half:] = raw[..., :half].flip(-1)
    features[..., half:] = features[..., :half].flip(-1)
    return VoxelRadianceField.from_grids(ground_truth_vox_config(_config()), raw, features, None)


def test_a_two_faced_head_is_janus_from_behind_and_still_right_from_the_front():
    cfg = _config()
    janus = _two_faced(ground_truth_field("head", cfg, torch.device("cpu")))
    metrics = ground_truth_metrics(janus, cfg)
    labels = [view.label for view in orbit_views(cfg)]
    assert labels.count("back") == 6
    assert metrics["gt_janus_rate_back"] == 1.0
    # The front half is untouched: front views stay close (hair edges behind the face aside).
    assert metrics["gt_psnr_front"] > 20.0
    assert metrics["gt_psnr_back"] < 15.0
    # Same silhouette from every side: a mirrored head is as round as the head.
    assert metrics["gt_silhouette_iou_min"] > 0.9
