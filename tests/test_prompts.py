"""View-dependent prompts: per-view texts, manual and debiased prompts, cached conditioning."""

from __future__ import annotations

import json

import pytest
import torch

from sjc_dsds.config import VIEW_LABELS, SJCConfig, ViewPromptConfig
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
    assert prompts.text("back") == "backside view of a rabbit"  # spec C.6's back-view prompt
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


def test_encode_encodes_each_view_text_once() -> None:
    prompts = ViewPrompts.from_config(SJCConfig())
    model = CountingScoreModel()
    first = prompts.encode(model)
    second = prompts.encode(model)
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
    """Stub LM with spec C.6's numbers in (front, side, back, overhead) order."""

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
    assert record["prompt_debiasing"]["words"][1]["dropped"] == ["side", "back"]
    report = format_prompts_report(prompts, result)
    # Spec C.6 ratios for "smiling": front 1.2, side 0.889, back 0.571, overhead 1.0.
    assert "1.2000    0.8889    0.5714    1.0000   dropped: side, back" in report
    assert "backside view of a rabbit" in report
