"""The biased captioned prior: front share, captions, distractors, independence of the seed."""

from __future__ import annotations

import math

import pytest
import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import ConfigError
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.prior import build_caption_probe, build_prior_from_config, plan_prior
from sjc_dsds.toy.scenes import procedural_scene
from sjc_dsds.toy.world import BACK_WORD_RATE, FRONT_WORD_RATE

# SJC's cameras are front with probability P(not overhead) * 1/4 = 0.7 * 0.25 (spec A.8).
SJC_FRONT_SHARE = 0.175


def _config(**toy: object) -> SJCConfig:
    return SJCConfig.model_validate(
        {
            "family": "toy",
            "vox": {"blend_bg_texture": False},
            "pose": {"rend_hw": 8},
            "toy": {"n_images": 2000, **toy},
        }
    )


def _binomial_tolerance(p: float, n: int) -> float:
    """Five standard deviations of a share estimated from n Bernoulli(p) draws."""
    return 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("front_bias", [0.0, 0.8])
def test_front_share_is_bias_plus_unbiased_remainder_times_sjc_front_share(front_bias):
    plan = plan_prior(_config(front_bias=front_bias))
    share = sum(view.label == "front" for view in plan.views) / len(plan.views)
    expected = front_bias + (1 - front_bias) * SJC_FRONT_SHARE
    assert abs(share - expected) < _binomial_tolerance(expected, len(plan.views))


@pytest.mark.parametrize(
    ("word", "rates"), [("smiling", FRONT_WORD_RATE), ("braided", BACK_WORD_RATE)]
)
def test_caption_words_follow_their_per_view_rates(word, rates):
    plan = plan_prior(_config(view_caption_frac=0.3, front_bias=0.25, n_images=4000))
    for view in ("front", "side", "back", "overhead"):
        captions = [c for v, c in zip(plan.views, plan.captions) if v.label == view]
        share = sum(word in caption.words for caption in captions) / len(captions)
        assert abs(share - rates[view]) < _binomial_tolerance(rates[view], len(captions)) + 1e-9
    for view, caption in zip(plan.views, plan.captions):
        assert "head" in caption.words
        assert caption.view in (None, view.label)
    named = sum(caption.view is not None for caption in plan.captions) / len(plan.captions)
    assert abs(named - 0.3) < _binomial_tolerance(0.3, len(plan.captions))


def test_procedural_scenes_are_distinct_and_reproducible_per_seed():
    first, again, other = procedural_scene(11), procedural_scene(11), procedural_scene(12)
    assert [p.name for p in first.parts] == [p.name for p in again.parts]
    assert [p.color for p in first.parts] == [p.color for p in again.parts]
    assert {p.role for p in first.parts} == {"body", "front", "back"}
    points = torch.rand(500, 3) * 2 - 1
    assert not torch.equal(first.parts[-1].shape(points), other.parts[-1].shape(points))
    plan = plan_prior(_config(scene_seed=11, n_images=50))
    assert set(plan.scenes) == {"seed11"}
    assert all(first.noun in caption.words for caption in plan.captions)


def test_distractors_are_other_scenes_captioned_with_their_own_noun():
    plan = plan_prior(_config(distractor_frac=0.25, scene="cube"))
    others = [scene for scene in plan.scenes if scene != "cube"]
    assert set(others) == {"head", "animal"}
    assert abs(len(others) / len(plan.scenes) - 0.25) < _binomial_tolerance(0.25, 2000)
    for scene, caption in zip(plan.scenes, plan.captions):
        assert scene in caption.words


def test_prior_is_the_same_for_every_run_seed():
    first = plan_prior(_config().model_copy(update={"seed": 0}))
    second = plan_prior(_config().model_copy(update={"seed": 7}))
    assert first.captions == second.captions
    assert [view.azimuth_deg for view in first.views] == [view.azimuth_deg for view in second.views]


def test_caption_probe_of_a_config_sees_the_front_word_mostly_in_front_captions():
    probe = build_caption_probe(_config(front_bias=0.5))
    probabilities = probe.p_view(["a smiling head", "a head"])
    # P(front | smiling) = 0.9 * 0.59 / (0.9 * 0.59 + 0.3 * 0.36 + 0.02 * 0.05) ~ 0.83 with
    # front share 0.5 + 0.5 * 0.175 and side+overhead ~ 0.36: well above P(front | head).
    assert probabilities[0, 0] > 0.75
    assert probabilities[1, 0] < probabilities[0, 0]


def test_prior_images_are_renders_in_range_with_white_background_corners():
    cfg = _config().model_copy(update={"toy": _config().toy.model_copy(update={"n_images": 6})})
    prior = build_prior_from_config(cfg, torch.device("cpu"))
    assert prior.images.shape == (6, 3, 8, 8)
    assert prior.images.min() >= -1 and prior.images.max() <= 1
    # Objects sit inside a 1.5-unit-away camera's 40-70 degree view; corner rays miss them and
    # show SJC's constant background 1 (white).
    torch.testing.assert_close(prior.images[:, :, 0, 0], torch.ones(6, 3), atol=1e-3, rtol=0)


def test_toy_model_refuses_a_learned_background_texture():
    cfg = SJCConfig.model_validate({"family": "toy", "vox": {"blend_bg_texture": True}})
    with pytest.raises(ConfigError, match="--vox.blend_bg_texture False"):
        ToyScoreModel.from_config(cfg, torch.device("cpu"))
