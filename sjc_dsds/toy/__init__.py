"""Synthetic world with an exact score model: toy scenes, a biased captioned prior, its exact
denoiser, a caption view-probe for prompt debiasing, and ground-truth metrics (issue 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sjc_dsds.toy.captions import Caption, CaptionProbe
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.ground_truth import ground_truth_field, ground_truth_orbit, orbit_views
from sjc_dsds.toy.metrics import ground_truth_metrics


def evaluation_metrics(field: Any, model: Any, cfg: Any, out_dir: Path) -> dict[str, Any]:
    """The toy family's metrics after the test orbit: ground truth, and a comparison picture."""
    from sjc_dsds.toy.comparison import save_toy_comparison

    save_toy_comparison(field, model.decode, cfg, out_dir / "ground_truth_comparison.png")
    return ground_truth_metrics(field, cfg)


__all__ = [
    "Caption",
    "CaptionProbe",
    "ToyScoreModel",
    "evaluation_metrics",
    "ground_truth_field",
    "ground_truth_metrics",
    "ground_truth_orbit",
    "orbit_views",
]
