"""SJC's regularisers: the emptiness loss and the centre-versus-border depth loss."""

from __future__ import annotations

import torch

from sjc_dsds.errors import ConfigError


def emptiness_weight_at(
    step: int, n_steps: int, weight: float, switch_frac: float, multiplier: float
) -> float:
    """Emptiness weight at 0-based `step`: `weight`, x `multiplier` once step >= frac * n_steps."""
    return weight * (multiplier if step >= switch_frac * n_steps else 1.0)


def emptiness_loss(weights: torch.Tensor, n_samples_dense: int, scale: float) -> torch.Tensor:
    """mean(log(1 + scale * w)) over SJC's dense k x n sample tensor (docs/method.md A.7).

    `weights` lists the evaluated samples; samples not listed have weight 0 and add log(1) = 0,
    so the dense mean is the sum over listed samples divided by `n_samples_dense`.
    """
    return torch.log1p(scale * weights).sum() / n_samples_dense


# SJC's 64-pixel depth map has a 7-pixel border around a 50x50 centre (docs/method.md A.7);
# other render sizes keep that proportion (threestudio's center_ratio 50/64; decision 9).
BORDER_FRACTION = 7 / 64


def border_width(side: int) -> int:
    """Border width in pixels for an image side: round(side * 7/64), at least 1, centre kept.

    Equals SJC's 7 at 64 px; needs side >= 3 so that both the border and the centre exist.
    """
    if side < 3:
        raise ConfigError(
            f"--depth_weight > 0 needs renders of at least 3x3 pixels (got side {side}); "
            "raise --pose.rend_hw or set --depth_weight 0"
        )
    return min(max(1, int(side * BORDER_FRACTION + 0.5)), (side - 1) // 2)


def center_depth_loss(depth: torch.Tensor) -> torch.Tensor:
    """-log(mean_border - mean_centre): pulls the centre nearer than the border.

    The objective SJC intended (pals-ttic/sjc#21; its code had the sign reversed), docs/method.md
    A.7.
    `depth`: [1, 1, h, w]; the border is `border_width` pixels wide on each axis.
    """
    height, width = depth.shape[-2], depth.shape[-1]
    image = depth.reshape(height, width)
    rows, cols = border_width(height), border_width(width)
    centre_mask = torch.zeros_like(image, dtype=torch.bool)
    centre_mask[rows:-rows, cols:-cols] = True
    gap = image[~centre_mask].mean() - image[centre_mask].mean()
    # sign(x) log|x| keeps the loss finite and its gradient pointing the same way on both sides.
    return -torch.sign(gap) * torch.log(gap.abs() + 1e-12)
