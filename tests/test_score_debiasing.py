"""D-SDS score debiasing: threshold schedules and elementwise clipping."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.score_debiasing import clip_score, score_threshold


@pytest.mark.parametrize(
    "step,expected",
    # docs/method.md B.3 table: 8 * (0.25 + 0.75 * i / 10000)
    [(0, 2.0), (2500, 3.5), (5000, 5.0), (7500, 6.5), (9999, 7.9994)],
)
def test_dynamic_schedule_matches_authors_table(step: int, expected: float) -> None:
    assert score_threshold(step, 10000, 8.0, True, 0.25) == pytest.approx(expected, abs=1e-9)


def test_threestudio_settings_are_expressed_by_start_fraction() -> None:
    # threestudio [0, 2.0, 8.0, 10000] = start 2/8 of 8 at step 0, 8 at step 10000 (decision 3).
    assert score_threshold(0, 10000, 8.0, True, 0.25) == 2.0
    assert score_threshold(10000, 10000, 8.0, True, 0.25) == 8.0
    # DeepFloyd-IF [0, 0.5, 2.0, 10000] with score_thres 2: half-way 1.25.
    assert score_threshold(5000, 10000, 2.0, True, 0.25) == pytest.approx(1.25)
    # A different start: 0.5 -> 4 + 4 * 0.3 at 30 % of the run.
    assert score_threshold(3, 10, 8.0, True, 0.5) == pytest.approx(5.2)


def test_static_and_off() -> None:
    assert score_threshold(1234, 10000, 8.0, False) == 8.0
    assert score_threshold(0, 10000, 0.0, True) is None
    assert score_threshold(0, 10000, -1.0, False) is None


def test_default_config_really_clamps() -> None:
    # Regression for the authors' first script, which tested `score_thres < 0` and never clipped.
    cfg = SJCConfig()
    threshold = score_threshold(
        0, cfg.n_steps, cfg.score_thres, cfg.score_dynamic, cfg.score_thres_start
    )
    assert threshold == 2.0
    score = torch.tensor([[-5.0, -2.0, 0.5, 1.999, 2.5, 40.0]])
    clipped, fraction = clip_score(score, threshold)
    assert torch.equal(clipped, torch.tensor([[-2.0, -2.0, 0.5, 1.999, 2.0, 2.0]]))
    assert float(fraction) == pytest.approx(3 / 6)  # -5, 2.5 and 40 exceed 2 in absolute value


def test_clipping_off_returns_score_unchanged() -> None:
    score = torch.randn(1, 4, 8, 8) * 10
    clipped, fraction = clip_score(score, None)
    assert clipped is score and float(fraction) == 0.0
