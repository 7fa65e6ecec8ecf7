"""SJC's regularisers against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from sjc_dsds.errors import ConfigError
from sjc_dsds.losses import border_width, center_depth_loss, emptiness_loss, emptiness_weight_at


def test_emptiness_loss_is_mean_over_dense_samples() -> None:
    weights = torch.tensor([0.1, 0.0, 0.5])
    # Dense tensor of 10 samples: 3 listed + 7 implicit zeros; mean of log(1 + 10 w).
    expected = (math.log(2.0) + 0.0 + math.log(6.0)) / 10
    assert float(emptiness_loss(weights, 10, 10.0)) == pytest.approx(expected)


def test_emptiness_weight_switches_at_fraction_of_run() -> None:
    assert emptiness_weight_at(4999, 10000, 1e4, 0.5, 20.0) == 1e4
    assert emptiness_weight_at(5000, 10000, 1e4, 0.5, 20.0) == 2e5


def test_center_depth_loss_pulls_centre_nearer() -> None:
    depth = torch.full((1, 1, 64, 64), 2.0)
    depth[..., 7:-7, 7:-7] = 1.5  # centre nearer: border - centre = 0.5
    assert float(center_depth_loss(depth)) == pytest.approx(-math.log(0.5))
    for centre in (1.5, 2.5):  # nearer and farther than the border
        depth = torch.full((1, 1, 64, 64), 2.0)
        depth[..., 7:-7, 7:-7] = centre
        depth.requires_grad_(True)
        center_depth_loss(depth).backward()
        # Gradient descent must lower the centre depth (positive gradient on centre pixels).
        assert (depth.grad[..., 7:-7, 7:-7] > 0).all()
        assert torch.isfinite(depth.grad).all()


@pytest.mark.parametrize("side", [3, 4, 5, 8, 13, 14, 15, 16, 32, 33])
def test_center_depth_loss_is_finite_at_small_render_sizes(side: int) -> None:
    # A fixed 7-pixel border left no centre at <= 14 px (mean of nothing = NaN).
    border = border_width(side)
    assert 1 <= border and side - 2 * border >= 1
    depth = torch.full((1, 1, side, side), 2.0)
    depth[..., border:-border, border:-border] = 1.5
    depth.requires_grad_(True)
    loss = center_depth_loss(depth)
    assert float(loss) == pytest.approx(-math.log(0.5))
    loss.backward()
    assert torch.isfinite(depth.grad).all()
    assert (depth.grad[..., border:-border, border:-border] > 0).all()


def test_depth_border_keeps_sjc_proportion() -> None:
    # SJC: 7 px at 64 (docs/method.md A.7); the same 7/64 share of each side at other sizes.
    assert border_width(64) == 7
    assert border_width(128) == 14
    assert border_width(96) in (10, 11)  # 10.5 px
    # Non-square: rows and columns each get their own border; hand-computed means.
    depth = torch.full((1, 1, 128, 64), 3.0)
    depth[..., 14:-14, 7:-7] = 1.0
    assert float(center_depth_loss(depth)) == pytest.approx(-math.log(2.0))
    with pytest.raises(ConfigError, match="--pose.rend_hw"):
        border_width(2)
