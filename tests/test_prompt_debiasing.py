"""D-SDS prompt debiasing: exact decisions with a stub LM, a tiny real BERT, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures_bert import TINY_BERT_VOCAB

from sjc_dsds.config import VIEW_LABELS, SJCConfig
from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.prompt_debias import main as prompt_debias_main
from sjc_dsds.prompt_debiasing import (
    MaskedLMProbe,
    debias_from_config,
    debias_prompt,
    debias_ratio,
)
from sjc_dsds.prompts import view_prompt_text

# Spec C.6's illustrative numbers, reordered from (side, front, back, overhead) to VIEW_LABELS
# (front, side, back, overhead).
FULL = (0.60, 0.20, 0.10, 0.10)  # q(. | "a smiling rabbit")
WITHOUT_SMILING = (0.40, 0.25, 0.25, 0.10)  # q(. | "a rabbit")


class TableProbe:
    """Stub LM: fixed P(view | prompt) per prompt text; records every batch it is asked."""

    def __init__(self, table: dict[str, tuple[float, ...]], default: tuple[float, ...] = FULL):
        self.table, self.default = table, default
        self.calls: list[list[str]] = []

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        self.calls.append(list(prompts))
        return torch.tensor([self.table.get(p, self.default) for p in prompts], dtype=torch.float64)


def test_spec_example_drops_smiling_for_side_and_back_only() -> None:
    probe = TableProbe({"a smiling rabbit": FULL, "a rabbit": WITHOUT_SMILING})
    result = debias_prompt("a smiling rabbit", probe)
    # Spec C.6: side 0.20/(0.5*0.25 + 0.5*0.20) = 0.889, front 0.60/0.50 = 1.2,
    # back 0.10/0.175 = 0.571, overhead 0.10/0.10 = 1.0; drop where < 0.95.
    smiling = result.ratios[1]
    assert smiling["word"] == "smiling"
    expected = {"front": 1.2, "side": 0.2 / 0.225, "back": 0.1 / 0.175, "overhead": 1.0}
    assert smiling["ratio"] == pytest.approx(expected, rel=1e-12)  # float64 rounding only
    assert smiling["dropped"] == ["side", "back"]
    # "smiling rabbit" and "a smiling" get the full probabilities: ratio exactly 1, kept.
    assert [entry["dropped"] for entry in result.ratios] == [[], ["side", "back"], []]
    assert result.prompts == {
        "front": "a smiling rabbit",
        "side": "a rabbit",
        "back": "a rabbit",
        "overhead": "a smiling rabbit",
    }
    assert result.dropped_words("back") == ["smiling"]
    # One batched LM call: the full prompt, then each leave-one-out prompt in word order.
    assert probe.calls == [["a smiling rabbit", "smiling rabbit", "a rabbit", "a smiling"]]
    record = json.loads(json.dumps(result.to_json()))
    assert record["prompts"]["back"] == "a rabbit"
    assert record["p_view"] == dict(zip(VIEW_LABELS, FULL))


def test_ratio_equal_to_threshold_keeps_the_word() -> None:
    # Overhead's ratio is exactly 0.10 / (0.5*0.10 + 0.5*0.10) = 1.0: "< threshold" keeps it.
    probe = TableProbe({"a rabbit": WITHOUT_SMILING})
    result = debias_prompt("a smiling rabbit", probe, threshold=1.0)
    assert result.ratios[1]["ratio"]["overhead"] == 1.0
    assert "overhead" not in result.ratios[1]["dropped"]
    assert result.prompts["overhead"] == "a smiling rabbit"


def test_mix_weights_the_probability_without_the_word() -> None:
    part = (0.40, 0.22, 0.10, 0.10)
    probe = TableProbe({"a rabbit": part})
    # mix 0.5: side 0.20/(0.5*0.22 + 0.5*0.20) = 0.952 >= 0.95, kept.
    kept = debias_prompt("a smiling rabbit", probe, mix=0.5)
    assert kept.ratios[1]["ratio"]["side"] == pytest.approx(0.2 / 0.21, rel=1e-12)
    assert kept.prompts["side"] == "a smiling rabbit"
    # mix 1: side 0.20/0.22 = 0.909 < 0.95, dropped; mix 0: every ratio is 1, nothing dropped.
    dropped = debias_prompt("a smiling rabbit", probe, mix=1.0)
    assert dropped.ratios[1]["ratio"]["side"] == pytest.approx(0.2 / 0.22, rel=1e-12)
    assert dropped.prompts["side"] == "a rabbit"
    none = debias_prompt("a smiling rabbit", TableProbe({"a rabbit": (1.0, 0.0, 0.0, 0.0)}), mix=0)
    assert set(none.prompts.values()) == {"a smiling rabbit"}


def test_candidate_ids_limit_which_words_are_probed_and_dropped() -> None:
    probe = TableProbe({"a rabbit": WITHOUT_SMILING})
    result = debias_prompt("a smiling rabbit", probe, candidate_ids=[2, 0])
    assert probe.calls == [["a smiling rabbit", "smiling rabbit", "a smiling"]]
    assert [entry["index"] for entry in result.ratios] == [0, 2]
    assert set(result.prompts.values()) == {"a smiling rabbit"}


@pytest.mark.parametrize("bad", [[3], [-1]])
def test_candidate_ids_outside_the_prompt_raise_a_config_error(bad: list[int]) -> None:
    with pytest.raises(ConfigError) as error:
        debias_prompt("a smiling rabbit", TableProbe({}), candidate_ids=bad)
    message = str(error.value)
    assert "--lm.candidate_ids" in message and "0..2" in message and "\n" not in message


def test_deletions_never_accumulate_across_words() -> None:
    back_up = (0.40, 0.25, 0.25, 0.10)
    probe = TableProbe(
        {
            "a happy rabbit": back_up,  # without "smiling"
            "a smiling rabbit": back_up,  # without "happy"
            # Without both words back would not rise: an accumulating version would keep "happy".
            "a rabbit": FULL,
        }
    )
    result = debias_prompt("a smiling happy rabbit", probe)
    assert probe.calls == [
        ["a smiling happy rabbit", "smiling happy rabbit", "a happy rabbit"]
        + ["a smiling rabbit", "a smiling happy"]
    ]
    assert result.prompts["back"] == "a rabbit"
    assert result.prompts["front"] == "a smiling happy rabbit"


def test_punctuation_stays_attached_to_its_word() -> None:
    probe = TableProbe({"a rabbit,": WITHOUT_SMILING})
    result = debias_prompt("a rabbit, smiling.", probe)
    assert probe.calls == [["a rabbit, smiling.", "rabbit, smiling.", "a smiling.", "a rabbit,"]]
    assert [entry["word"] for entry in result.ratios] == ["a", "rabbit,", "smiling."]
    assert result.prompts["back"] == "a rabbit,"
    assert result.prompts["front"] == "a rabbit, smiling."


def test_repeated_words_are_separate_candidates_by_position() -> None:
    probe = TableProbe({"a dog and cat": WITHOUT_SMILING})  # only the second "a" removed
    result = debias_prompt("a dog and a cat", probe)
    assert probe.calls[0][1] == "dog and a cat" and probe.calls[0][4] == "a dog and cat"
    by_index = {entry["index"]: entry for entry in result.ratios}
    assert by_index[0]["dropped"] == [] and by_index[3]["dropped"] == ["side", "back"]
    assert result.prompts["back"] == "a dog and cat"
    only_first = debias_prompt("a dog and a cat", TableProbe({}), candidate_ids=[0])
    assert only_first.prompts["back"] == "a dog and a cat"


def test_empty_words_from_double_spaces_are_not_candidates() -> None:
    result = debias_prompt("a  rabbit", TableProbe({}))
    assert [entry["index"] for entry in result.ratios] == [0, 2]
    # Views are re-joined on single spaces: the doubled space is not an empty word.
    assert result.prompts["front"] == "a rabbit"


def test_every_word_dropped_leaves_no_stray_spaces() -> None:
    # Leading, doubled and trailing spaces once gave 'overhead view of  ' here.
    # Every ratio is 1 with this probe; a threshold above 1 drops every word for every view.
    result = debias_prompt(" a  rabbit ", TableProbe({}), threshold=1.5)
    assert [entry["index"] for entry in result.ratios] == [1, 3]
    assert all(entry["dropped"] == list(VIEW_LABELS) for entry in result.ratios)
    assert result.prompts == dict.fromkeys(VIEW_LABELS, "")
    view = SJCConfig().view
    assert view_prompt_text(result.prompts["overhead"], "overhead", view) == "overhead view"
    kept = debias_prompt(" a  rabbit ", TableProbe({}), candidate_ids=[1])
    assert kept.prompts["front"] == "a rabbit"


def test_zero_probability_in_both_gives_ratio_one() -> None:
    ratio = debias_ratio(torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor([0.25, 0.75, 0.0, 0.0]))
    # front 0.5/0.375, side 0.5/0.625, back and overhead 0/0 -> 1 (the word changes nothing).
    assert ratio.tolist() == pytest.approx([0.5 / 0.375, 0.5 / 0.625, 1.0, 1.0], rel=1e-6)


def test_probe_with_wrong_output_shape_is_rejected() -> None:
    class ThreeViews:
        def p_view(self, prompts: list[str]) -> torch.Tensor:
            return torch.full((len(prompts), 3), 1 / 3)

    # 3 words -> 1 + 3 prompts, so [4, 4] is expected and [4, 3] returned.
    with pytest.raises(ValueError, match=r"\[4, 4\] probabilities \(got \[4, 3\]\)"):
        debias_prompt("a rabbit x", ThreeViews())


# Tiny random BERT loaded through the real path.


def _lm_config(model_dir: Path, **lm: object) -> SJCConfig:
    return SJCConfig.model_validate(
        {"sd": {"prompt": "a smiling rabbit"}, "lm": {"model_id": str(model_dir), **lm}}
    )


def _oracle_p_view(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    """One unpadded forward per prompt, full-vocabulary softmax at [MASK], renormalised."""
    from transformers import BertForMaskedLM, BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(model_dir))
    model = BertForMaskedLM.from_pretrained(str(model_dir)).eval()
    view_ids = [TINY_BERT_VOCAB.index(word) for word in ("front", "side", "back", "overhead")]
    rows = []
    for prompt in prompts:
        ids = tokenizer(f"This image is depicting a [MASK] view of {prompt}", return_tensors="pt")
        position = int((ids["input_ids"][0] == TINY_BERT_VOCAB.index("[MASK]")).nonzero())
        with torch.no_grad():
            probabilities = model(**ids).logits[0, position].softmax(-1)
        rows.append(probabilities[view_ids] / probabilities[view_ids].sum())
    return torch.stack(rows)


PROMPTS = ["a smiling rabbit", "a colorful toucan with a large beak", "dogs", "a happy cat ."]


def test_masked_lm_probe_matches_full_vocabulary_softmax_at_the_mask(tiny_bert_dir: Path) -> None:
    probe = MaskedLMProbe.from_config(_lm_config(tiny_bert_dir).lm, torch.device("cpu"))
    expected = _oracle_p_view(tiny_bert_dir, PROMPTS)
    # float32 softmax of the same logits, batched vs one at a time: agreement to ~1e-7.
    torch.testing.assert_close(probe.p_view(PROMPTS), expected, rtol=1e-5, atol=1e-6)
    assert (expected.max(0).values - expected.min(0).values).max() > 1e-2  # prompts do differ


def test_padding_to_a_longer_prompt_does_not_change_probabilities(tiny_bert_dir: Path) -> None:
    probe = MaskedLMProbe.from_config(_lm_config(tiny_bert_dir).lm, torch.device("cpu"))
    alone = probe.p_view(["dogs"])
    padded = probe.p_view(["dogs", "a colorful toucan with a large beak and a happy cat"])
    torch.testing.assert_close(padded[:1], alone, rtol=1e-5, atol=1e-6)  # float32 rounding
    # The check can fail: without the attention mask, the padding does change the logits.
    batch = probe.tokenizer(
        [
            "This image is depicting a [MASK] view of dogs",
            "This image is depicting a [MASK] view of a colorful toucan with a large beak",
        ],
        padding=True,
        return_tensors="pt",
    )
    assert int(batch["attention_mask"][0].sum()) < batch["attention_mask"].shape[1]
    with torch.no_grad():
        masked = probe.model(**batch).logits[0, 6]
        unmasked = probe.model(batch["input_ids"], token_type_ids=batch["token_type_ids"]).logits
    assert (masked - unmasked[0, 6]).abs().max() > 1e-3


@pytest.mark.parametrize("word", ["backside", "sideways"])
def test_view_word_that_is_not_one_known_token_fails_clearly(
    tiny_bert_dir: Path, word: str
) -> None:
    lm = _lm_config(tiny_bert_dir, view_words=("front", "side", word, "overhead")).lm
    with pytest.raises(ConfigError) as error:
        MaskedLMProbe.from_config(lm, torch.device("cpu"))
    message = str(error.value)
    assert f"'{word}'" in message and "--lm.view_words" in message and "\n" not in message


def test_template_without_mask_fails_before_the_lm_loads() -> None:
    cfg = _lm_config(Path("/nonexistent/lm"), template="a photo of {prompt}")
    with pytest.raises(ConfigError, match=r"--lm.template must contain \[MASK\]"):
        debias_from_config(cfg, torch.device("cpu"))


@pytest.mark.parametrize("model_id", ["/nonexistent/bert", "nobody/no-such-masked-lm", "EMPTY"])
def test_missing_lm_weights_give_one_line_error(tmp_path: Path, model_id: str) -> None:
    model_id = str(tmp_path) if model_id == "EMPTY" else model_id
    cfg = _lm_config(Path(model_id))
    with pytest.raises(MissingModelError) as error:
        debias_from_config(cfg, torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message and "--lm.model_id" in message and model_id in message


def test_debias_from_config_uses_lm_flags_and_real_probabilities(tiny_bert_dir: Path) -> None:
    cfg = _lm_config(tiny_bert_dir, threshold=1.0, mix=0.5, candidate_ids=(1, 2))
    result = debias_from_config(cfg, torch.device("cpu"))
    full, *parts = _oracle_p_view(tiny_bert_dir, ["a smiling rabbit", "a rabbit", "a smiling"])
    assert [entry["index"] for entry in result.ratios] == [1, 2]
    expected_prompts = {label: ["a", "smiling", "rabbit"] for label in VIEW_LABELS}
    for entry, part in zip(result.ratios, parts):
        ratio = full / (0.5 * part + 0.5 * full)
        assert list(entry["ratio"].values()) == pytest.approx(ratio.tolist(), rel=1e-5)
        assert (ratio - 1.0).abs().min() > 1e-4  # no decision sits within float noise of 1.0
        for label, value in zip(VIEW_LABELS, ratio.tolist()):
            if value < 1.0:
                expected_prompts[label].remove(entry["word"])
    assert result.prompts == {label: " ".join(words) for label, words in expected_prompts.items()}


def test_command_prints_per_view_prompts_from_the_lm(
    tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--prompt", "a smiling rabbit", "--lm.model_id", str(tiny_bert_dir)]
    assert prompt_debias_main(argv + ["--lm.threshold", "1.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    debiasing, texts = record["prompt_debiasing"], record["view_prompts"]["texts"]
    expected_full = _oracle_p_view(tiny_bert_dir, ["a smiling rabbit"])[0]
    assert list(debiasing["p_view"].values()) == pytest.approx(expected_full.tolist(), rel=1e-5)
    assert debiasing["threshold"] == 1.0
    for label in VIEW_LABELS:
        user_prompt = debiasing["prompts"][label]
        assert texts[label] == view_prompt_text(user_prompt, label, SJCConfig().view)
    assert texts["back"].startswith("backside view of")
    assert prompt_debias_main(argv + ["--lm.threshold", "1.0"]) == 0
    table = capsys.readouterr().out
    assert all(text in table for text in texts.values())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--lm.treshold", "0.9"], "did you mean --lm.threshold"),
        (["--n_steps", "5"], "--n_steps has no effect here"),
        (["--lm.model_id", "/nonexistent/bert"], "--lm.model_id"),
        (["--view.prompt_back", "a rabbit"], "--prompt_debias True cannot be combined"),
    ],
)
def test_command_errors_are_one_line_with_exit_code_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prompt_debias_main(["--prompt", "a rabbit"] + argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert needle in captured.err
