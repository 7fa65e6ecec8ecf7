"""SJC's regularisers against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from sjc_dsds.losses import center_depth_loss, emptiness_loss, emptiness_weight_at


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
