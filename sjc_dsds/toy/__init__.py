"""Synthetic world with an exact score model: toy scenes, a biased captioned prior, its exact
denoiser, a caption view-probe for prompt debiasing, and ground-truth metrics (issue 6)."""

from __future__ import annotations

from sjc_dsds.toy.captions import Caption, CaptionProbe
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.ground_truth import ground_truth_field, ground_truth_orbit, orbit_views
from sjc_dsds.toy.metrics import ground_truth_metrics

__all__ = [
    "Caption",
    "CaptionProbe",
    "ToyScoreModel",
    "ground_truth_field",
    "ground_truth_metrics",
    "ground_truth_orbit",
    "orbit_views",
]
