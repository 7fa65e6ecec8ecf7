"""D-SDS score debiasing: the static or dynamic clip threshold and elementwise score clipping."""

from __future__ import annotations

import torch


def score_threshold(
    step: int, n_steps: int, score_thres: float, dynamic: bool, start: float = 0.25
) -> float | None:
    """Clip threshold at 0-based `step`, or None when score debiasing is off.

    docs/method.md B.3 and decision 3.

    Dynamic: score_thres * (start + (1 - start) * step / n_steps); static: score_thres.
    `score_thres <= 0` turns clipping off (the authors' first script tested `< 0` by mistake).
    """
    if score_thres <= 0:
        return None
    if not dynamic:
        return float(score_thres)
    return float(score_thres * (start + (1.0 - start) * step / n_steps))


def clip_score(score: torch.Tensor, threshold: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp every element of the 2D score to [-threshold, threshold] (docs/method.md B.2).

    Returns the clipped score and the fraction of elements that were clipped, as a 0-d tensor on
    the score's device (0 when off), so that the loop reads it with its other statistics.
    """
    if threshold is None:
        return score, score.new_zeros(())
    clipped_fraction = (score.abs() > threshold).float().mean()
    return score.clamp(-threshold, threshold), clipped_fraction
