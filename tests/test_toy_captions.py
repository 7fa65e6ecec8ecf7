"""Caption parsing, best-match conditioning and the caption view-probe used by prompt debiasing."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds.prompt_debiasing import debias_prompt
from sjc_dsds.toy.captions import (
    Caption,
    CaptionProbe,
    ParsedPrompt,
    compatible_captions,
    parse_prompt,
    uniform_log_weights,
)

VOCABULARY = {"smiling", "head", "cube", "red"}


def test_parse_prompt_reads_prefix_and_suffix_views_and_ignores_unknown_words():
    parsed = parse_prompt("backside view of a smiling head", VOCABULARY)
    assert parsed == ParsedPrompt(frozenset({"smiling", "head"}), "back")
    assert parse_prompt("a head, front view", VOCABULARY) == ParsedPrompt(
        frozenset({"head"}), "front"
    )
    assert parse_prompt("A high quality photo of a Cube", VOCABULARY) == ParsedPrompt(
        frozenset({"cube"}), None
    )
    assert parse_prompt("", VOCABULARY) == ParsedPrompt(frozenset(), None)


def test_compatible_captions_need_every_prompt_word_and_no_other_view():
    captions = [
        Caption(("smiling", "head"), "front"),
        Caption(("head",), None),
        Caption(("head",), "back"),
        Caption(("smiling", "head"), None),
        Caption(("cube",), "back"),
    ]
    parsed = parse_prompt("backside view of a smiling head", VOCABULARY)
    # 0: names front; 1, 2: lack 'smiling' (no partial credit, unlike v1's tie rule, which
    # scored a missing word like a wrong view word); 3: has both words, view unnamed; 4: no.
    assert compatible_captions(parsed, captions).tolist() == [False, False, False, True, False]
    parsed = parse_prompt("backside view of a head", VOCABULARY)
    assert compatible_captions(parsed, captions).tolist() == [False, True, True, True, False]


def test_uniform_log_weights_and_a_prompt_that_matches_nothing():
    log_weights = uniform_log_weights(torch.tensor([False, True, False, True, True]))
    assert torch.isinf(log_weights[[0, 2]]).all()
    torch.testing.assert_close(log_weights.exp()[[1, 3, 4]], torch.full((3,), 1 / 3).double())
    assert float(torch.logsumexp(log_weights, 0)) == 0.0
    with pytest.raises(ValueError, match="matches no caption"):
        uniform_log_weights(torch.tensor([False, False]), "a blue head")


def _smiling_captions() -> list[Caption]:
    return (
        [Caption(("smiling", "head"), "front")] * 3
        + [Caption(("head",), "front")]
        + [Caption(("head",), "side")] * 2
        + [Caption(("head",), "back")] * 2
        + [Caption(("smiling", "head"), None)] * 5
    )


def test_caption_probe_counts_view_naming_captions_with_add_one_smoothing():
    probe = CaptionProbe(_smiling_captions())
    template = "This image is depicting a [MASK] view of head"
    probabilities = probe.p_view(["a smiling head", template])
    # 'smiling head' captions that name a view: front x3 -> (3+1, 0+1, 0+1, 0+1) / 7.
    # 'head': front 4, side 2, back 2, overhead 0 -> (5, 3, 3, 1) / 12; template words are unknown.
    expected = torch.tensor([[4 / 7, 1 / 7, 1 / 7, 1 / 7], [5 / 12, 3 / 12, 3 / 12, 1 / 12]])
    torch.testing.assert_close(probabilities, expected)


def test_prompt_debiasing_with_the_caption_probe_drops_the_front_word_where_it_conflicts():
    result = debias_prompt("a smiling head", CaptionProbe(_smiling_captions()))
    # Dropping 'smiling': full (4/7, 1/7, 1/7, 1/7), part (5/12, 3/12, 3/12, 1/12);
    # ratio = full / (0.5 part + 0.5 full): front 0.5714 / 0.4940 = 1.157 (keep),
    # side and back 0.1429 / 0.1964 = 0.727 (< 0.95: drop), overhead 0.1429 / 0.1131 = 1.263.
    assert result.prompts == {
        "front": "a smiling head",
        "side": "a head",
        "back": "a head",
        "overhead": "a smiling head",
    }
