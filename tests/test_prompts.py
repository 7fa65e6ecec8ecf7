"""View-dependent prompts: per-view texts, manual and debiased prompts, cached conditioning."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from sjc_dsds.config import VIEW_LABELS, PoseConfig, SJCConfig, ViewPromptConfig
from sjc_dsds.prompts import (
    ViewPrompts,
    build_view_prompts,
    format_prompts_report,
    prompts_record,
    view_prompt_text,
)
from sjc_dsds.score import Conditioning, ScoreModel

BURGER = "A high quality photo of a delicious burger"


def test_prefix_style_reproduces_sjc_view_prefixes() -> None:
    # Spec A.8: f"{prefix} {prompt}" with prefixes front/side/backside/overhead "view of".
    view = ViewPromptConfig()
    assert view_prompt_text(BURGER, "front", view) == f"front view of {BURGER}"
    assert view_prompt_text(BURGER, "side", view) == f"side view of {BURGER}"
    assert view_prompt_text(BURGER, "back", view) == f"backside view of {BURGER}"
    assert view_prompt_text(BURGER, "overhead", view) == f"overhead view of {BURGER}"


def test_suffix_style_and_custom_view_words() -> None:
    view = ViewPromptConfig(style="suffix", back="back", overhead="top")
    assert view_prompt_text("a smiling rabbit", "front", view) == "a smiling rabbit, front view"
    assert view_prompt_text("a smiling rabbit", "back", view) == "a smiling rabbit, back view"
    assert view_prompt_text("a smiling rabbit", "overhead", view) == "a smiling rabbit, top view"


def test_empty_prompt_gives_the_bare_view_phrase() -> None:
    assert view_prompt_text("", "back", ViewPromptConfig()) == "backside view"


def test_unknown_view_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="front, side, back, overhead"):
        view_prompt_text("a rabbit", "left", ViewPromptConfig())
    with pytest.raises(ValueError, match="got 'left'"):
        ViewPrompts.from_config(SJCConfig()).text("left")


def test_from_config_uses_the_user_prompt_for_every_view() -> None:
    prompts = ViewPrompts.from_config(SJCConfig())
    assert prompts.texts == {
        "front": f"front view of {BURGER}",
        "side": f"side view of {BURGER}",
        "back": f"backside view of {BURGER}",
        "overhead": f"overhead view of {BURGER}",
    }
    assert prompts.user_prompts == dict.fromkeys(VIEW_LABELS, BURGER)
    assert prompts.manual == ()


def test_manual_prompt_replaces_only_its_view() -> None:
    cfg = SJCConfig.model_validate({"view": {"prompt_back": "the back of a burger, no text"}})
    prompts = ViewPrompts.from_config(cfg)
    assert prompts.text("back") == "the back of a burger, no text"
    assert prompts.text("front") == f"front view of {BURGER}"
    assert prompts.manual == ("back",)


def test_debiased_prompts_replace_the_user_prompt_per_view() -> None:
    cfg = SJCConfig.model_validate({"sd": {"prompt": "a smiling rabbit"}})
    debiased = {"front": "a smiling rabbit", "side": "a rabbit", "back": "a rabbit", "overhead": ""}
    prompts = ViewPrompts.from_config(cfg, debiased)
    assert prompts.text("back") == "backside view of a rabbit"  # docs/method.md C.6
    assert prompts.text("front") == "front view of a smiling rabbit"
    assert prompts.text("overhead") == "overhead view"
    assert prompts.user_prompts == debiased


class CountingScoreModel(ScoreModel):
    """Stub score model whose 'embedding' of a text is its length; counts encoded texts."""

    guidance_scale = 100.0

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        self.encoded.extend(prompts)
        return torch.tensor([[float(len(p))] for p in prompts])

    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def test_condition_encodes_each_view_text_once() -> None:
    prompts = ViewPrompts.from_config(SJCConfig())
    model = CountingScoreModel()
    first = {label: model.condition(prompts.text(label)) for label in VIEW_LABELS}
    second = {label: model.condition(prompts.text(label)) for label in VIEW_LABELS}
    for label in VIEW_LABELS:
        assert first[label].prompt == prompts.text(label)
        assert first[label].cond.item() == len(prompts.text(label))
        assert first[label].uncond.item() == 0  # the "" guidance branch
        assert second[label] is first[label]
    # Four view texts, each with its "" branch, encoded once for both calls.
    assert sorted(model.encoded) == sorted(
        [prompts.text(label) for label in VIEW_LABELS] + [""] * 4
    )


class SpecC6Probe:
    """Stub LM with docs/method.md C.6's numbers in (front, side, back, overhead) order."""

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        table = {"a rabbit": (0.40, 0.25, 0.25, 0.10)}
        return torch.tensor([table.get(p, (0.60, 0.20, 0.10, 0.10)) for p in prompts])


def test_build_view_prompts_applies_debiasing_only_when_enabled() -> None:
    plain_cfg = SJCConfig.model_validate({"sd": {"prompt": "a smiling rabbit"}})
    plain, none = build_view_prompts(plain_cfg, torch.device("cpu"), SpecC6Probe())
    assert none is None and plain.text("back") == "backside view of a smiling rabbit"
    cfg = plain_cfg.model_copy(update={"prompt_debias": True})
    prompts, result = build_view_prompts(cfg, torch.device("cpu"), SpecC6Probe())
    assert prompts.text("back") == "backside view of a rabbit"
    assert prompts.text("side") == "side view of a rabbit"
    assert prompts.text("front") == "front view of a smiling rabbit"
    record = json.loads(json.dumps(prompts_record(prompts, result)))
    assert record["view_prompts"]["texts"] == prompts.texts
    assert ViewPrompts.from_json(record["view_prompts"]) == prompts
    assert record["prompt_debiasing"]["words"][1]["dropped"] == ["side", "back"]
    report = format_prompts_report(prompts, result)
    # Spec C.6 ratios for "smiling": front 1.2, side 0.889, back 0.571, overhead 1.0.
    assert "1.2000    0.8889    0.5714    1.0000   dropped: side, back" in report
    assert "backside view of a rabbit" in report


def _expected_shares(pose: PoseConfig) -> dict[str, float]:
    """Closed-form label shares of SJC's sampler (docs/method.md A.8).

    sin(elevation) = cos(polar) = 1 - 2 v / pi with v ~ U(0, polar_max), so overhead
    (elevation > e0) means v < (pi / 2)(1 - sin e0); the azimuth is uniform and independent.
    """
    polar_max = math.radians(pose.polar_max_deg)
    cutoff = (math.pi / 2) * (1 - math.sin(math.radians(pose.overhead_min_elevation_deg)))
    overhead = min(1.0, cutoff / polar_max)
    front = (1 - overhead) * 2 * pose.front_half_width_deg / 360
    back = (1 - overhead) * 2 * pose.back_half_width_deg / 360
    return {"front": front, "side": 1 - overhead - front - back, "back": back, "overhead": overhead}


@pytest.mark.parametrize(
    ("ranges", "shares"),
    [
        # SJC defaults: overhead (1/3)(pi/2)/(5 pi/9) = 0.3, front = back = 0.7/4, side 0.7/2.
        ({}, {"front": 0.175, "side": 0.35, "back": 0.175, "overhead": 0.30}),
        # Overhead above 60 deg: 0.9 (1 - sin 60) = 0.1206; front 0.8794/6, back 0.8794/3.
        (
            {
                "front_half_width_deg": 30.0,
                "back_half_width_deg": 60.0,
                "overhead_min_elevation_deg": 60.0,
            },
            {"front": 0.14657, "side": 0.43971, "back": 0.29314, "overhead": 0.12058},
        ),
    ],
)
def test_view_label_shares_match_sjc_over_sampled_cameras(
    ranges: dict[str, float], shares: dict[str, float]
) -> None:
    from sjc_dsds.cameras import sample_train_views

    pose = PoseConfig(**ranges)
    assert _expected_shares(pose) == pytest.approx(shares, abs=1e-5)  # the hand numbers above
    n_views = 40_000
    views = sample_train_views(n_views, pose, torch.Generator().manual_seed(0))
    counts = Counter(view.label for view in views)
    assert set(counts) == set(VIEW_LABELS)
    for label, share in shares.items():
        # Five binomial standard deviations: sqrt(p (1 - p) / n) <= 0.0025 at n = 40000.
        tolerance = 5 * math.sqrt(share * (1 - share) / n_views)
        assert counts[label] / n_views == pytest.approx(share, abs=tolerance), label


LONG_PROMPT = " ".join(f"word{i}" for i in range(40))  # far over 77 tokens for any CLIP vocab


@pytest.fixture
def clip_tokenizer(tiny_sd_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")


@pytest.mark.parametrize("style", ["suffix", "prefix"])
def test_long_prompts_keep_the_view_words_and_warn(
    style: str, clip_tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    cfg = SJCConfig.model_validate({"sd": {"prompt": LONG_PROMPT}, "view": {"style": style}})
    model = SimpleNamespace(tokenizer=clip_tokenizer)  # the score model's tokenizer is all it uses
    full_ids = clip_tokenizer(view_prompt_text(LONG_PROMPT, "front", cfg.view))["input_ids"]
    assert len(full_ids) > 77
    with caplog.at_level("WARNING", logger="sjc_dsds.prompts"):
        prompts, _ = build_view_prompts(cfg, torch.device("cpu"), model=model)
    # Oracle: the tokenizer's own truncation at the encoder's 77 tokens changes nothing now.
    for label, text in prompts.texts.items():
        ids = clip_tokenizer(text)["input_ids"]
        truncated = clip_tokenizer(text, truncation=True, max_length=77)["input_ids"]
        assert len(ids) <= 77 and ids == truncated, label
        assert text == view_prompt_text(prompts.user_prompts[label], label, cfg.view)
        assert LONG_PROMPT.startswith(prompts.user_prompts[label])
        assert len(prompts.user_prompts[label]) > 0
    assert len(set(prompts.texts.values())) == 4  # the four views stay distinct
    ends = {"front": "front view", "side": "side view", "back": "backside view"}
    for label, phrase in ends.items():
        text = prompts.texts[label]
        assert text.endswith(f", {phrase}") if style == "suffix" else text.startswith(phrase)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and r.name == "sjc_dsds.prompts"
    ]
    assert len(warnings) == 4
    assert all(repr(LONG_PROMPT) in w and f"is {len(full_ids)} tokens" in w for w in warnings[:1])
    assert all("limit of 77" in w for w in warnings)


def test_prompts_within_the_limit_are_unchanged_and_silent(
    clip_tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    cfg = SJCConfig.model_validate({"view": {"style": "suffix"}})
    with caplog.at_level("WARNING", logger="sjc_dsds.prompts"):
        prompts, _ = build_view_prompts(
            cfg, torch.device("cpu"), model=SimpleNamespace(tokenizer=clip_tokenizer)
        )
    assert prompts == ViewPrompts.from_config(cfg)
    assert not caplog.records
