"""SJC's regularisers: the emptiness loss and the centre-versus-border depth loss."""

from __future__ import annotations

import torch


def emptiness_weight_at(
    step: int, n_steps: int, weight: float, switch_frac: float, multiplier: float
) -> float:
    """Emptiness weight at 0-based `step`: `weight`, x `multiplier` once step >= frac * n_steps."""
    return weight * (multiplier if step >= switch_frac * n_steps else 1.0)


def emptiness_loss(weights: torch.Tensor, n_samples_dense: int, scale: float) -> torch.Tensor:
    """mean(log(1 + scale * w)) over SJC's dense k x n sample tensor (spec A.7).

    `weights` lists the evaluated samples; samples not listed have weight 0 and add log(1) = 0,
    so the dense mean is the sum over listed samples divided by `n_samples_dense`.
    """
    return torch.log1p(scale * weights).sum() / n_samples_dense


def center_depth_loss(depth: torch.Tensor, border_px: int = 7) -> torch.Tensor:
    """-log(mean_border - mean_centre): pulls the centre nearer than the border (spec A.7).

    This is the objective SJC intended (pals-ttic/sjc#21); its code had the sign reversed.
    `depth`: [1, 1, h, w]; the centre block is depth[border:-border, border:-border].
    """
    image = depth.reshape(depth.shape[-2], depth.shape[-1])
    centre_mask = torch.zeros_like(image, dtype=torch.bool)
    centre_mask[border_px:-border_px, border_px:-border_px] = True
    gap = image[~centre_mask].mean() - image[centre_mask].mean()
    # sign(x) log|x| keeps the loss finite and its gradient pointing the same way on both sides.
    return -torch.sign(gap) * torch.log(gap.abs() + 1e-12)
