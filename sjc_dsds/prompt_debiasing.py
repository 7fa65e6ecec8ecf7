"""D-SDS prompt debiasing: masked-LM view probe, per-word ratio test, per-view word drops.

The probe scores P(view | prompt) with a masked LM; a word is dropped from a view's prompt when
deleting it raises that view's probability enough (docs/method.md C.3, C.7). The LM sits behind the
`ViewProbe` protocol so that any model returning view probabilities can be plugged in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from sjc_dsds.config import VIEW_LABELS, PromptDebiasConfig, SJCConfig
from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.pretrained import load_pretrained, missing_model_message

logger = logging.getLogger(__name__)

MASK_PLACEHOLDER = "[MASK]"
PROMPT_PLACEHOLDER = "{prompt}"
LM_WHAT = "Masked language model"
LM_FLAG = "--lm.model_id"


class ViewProbe(Protocol):
    """Anything that scores how strongly each prompt suggests each view."""

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        """P(view | prompt) for each prompt: [n_prompts, 4] over VIEW_LABELS, rows sum to 1."""
        ...


@dataclass(frozen=True)
class DebiasResult:
    """Outcome of prompt debiasing, with every number that decided it.

    `prompts` maps each view label to the user prompt after its word drops; `full` is
    P(view | prompt); each entry of `ratios` describes one candidate word: `index` (0-based in
    the split on single spaces), `word`, `p_view` (P(view | prompt without the word)), `ratio`
    per view and `dropped` (the views whose prompt loses the word).
    """

    prompt: str
    prompts: dict[str, str]
    full: dict[str, float]
    ratios: list[dict[str, Any]]
    threshold: float
    mix: float

    def dropped_words(self, label: str) -> list[str]:
        """The words removed from `label`'s prompt, in prompt order."""
        return [entry["word"] for entry in self.ratios if label in entry["dropped"]]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable record (saved as part of the run's prompts.json)."""
        return {
            "prompt": self.prompt,
            "threshold": self.threshold,
            "mix": self.mix,
            "p_view": dict(self.full),
            "words": [dict(entry) for entry in self.ratios],
            "prompts": dict(self.prompts),
        }


def split_words(prompt: str) -> list[str]:
    """Words of a prompt split on single spaces; punctuation stays attached (docs/method.md C.3)."""
    return prompt.split(" ")


def join_without(words: Sequence[str], removed: set[int]) -> str:
    """Re-join `words` with single spaces, leaving out the positions in `removed`.

    Empty strings (from doubled, leading or trailing spaces) are left out too, so a prompt whose
    every word is dropped is "" and no stray spaces reach the view text.
    """
    return " ".join(word for index, word in enumerate(words) if word and index not in removed)


def candidate_indices(words: Sequence[str], candidate_ids: Sequence[int] | None) -> list[int]:
    """Sorted word positions that may be dropped: `candidate_ids`, or every non-empty word.

    Empty strings (from doubled spaces) are not words and never candidates.
    """
    if candidate_ids is None:
        return [index for index, word in enumerate(words) if word]
    bad = [index for index in candidate_ids if not 0 <= index < len(words)]
    if bad:
        raise ConfigError(
            f"--lm.candidate_ids must be word indices 0..{len(words) - 1} of the prompt "
            f"{' '.join(words)!r} (got {bad[0]})"
        )
    return sorted({index for index in candidate_ids if words[index]})


def debias_ratio(full: torch.Tensor, part: torch.Tensor, mix: float = 0.5) -> torch.Tensor:
    """D-SDS word ratio full / (mix * part + (1 - mix) * full), per view (docs/method.md C.3).

    `full` [4] is P(view | prompt), `part` [..., 4] is P(view | prompt without the word); a
    zero denominator (both probabilities 0) gives ratio 1: the word changes nothing.
    """
    denominator = mix * part + (1.0 - mix) * full
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, full / safe, torch.ones_like(denominator))


def _checked_probabilities(probe: ViewProbe, prompts: list[str]) -> torch.Tensor:
    probabilities = probe.p_view(prompts)
    if tuple(probabilities.shape) != (len(prompts), len(VIEW_LABELS)):
        raise ValueError(
            f"ViewProbe.p_view must return [{len(prompts)}, {len(VIEW_LABELS)}] probabilities "
            f"(got {list(probabilities.shape)})"
        )
    return probabilities.detach().to("cpu", torch.float64)


def debias_prompt(
    prompt: str,
    probe: ViewProbe,
    threshold: float = 0.95,
    mix: float = 0.5,
    candidate_ids: Sequence[int] | None = None,
) -> DebiasResult:
    """Per-view prompts with view-conflicting words removed (prompt debiasing, docs/method.md C.7).

    Each candidate word is judged alone against the full prompt (deletions never accumulate), and
    is dropped from view v's prompt when its ratio for v is below `threshold`. Repeated words are
    separate candidates, one per position. One probe call scores all prompts.
    """
    words = split_words(prompt)
    candidates = candidate_indices(words, candidate_ids)
    probes = [prompt] + [join_without(words, {index}) for index in candidates]
    probabilities = _checked_probabilities(probe, probes)
    full, parts = probabilities[0], probabilities[1:]
    ratios = debias_ratio(full, parts, mix)  # [n_candidates, 4]
    removed: dict[str, set[int]] = {label: set() for label in VIEW_LABELS}
    entries = []
    for row, index in enumerate(candidates):
        dropped = [label for j, label in enumerate(VIEW_LABELS) if ratios[row, j] < threshold]
        for label in dropped:
            removed[label].add(index)
        entries.append(
            {
                "index": index,
                "word": words[index],
                "p_view": _by_label(parts[row]),
                "ratio": _by_label(ratios[row]),
                "dropped": dropped,
            }
        )
    return DebiasResult(
        prompt=prompt,
        prompts={label: join_without(words, removed[label]) for label in VIEW_LABELS},
        full=_by_label(full),
        ratios=entries,
        threshold=threshold,
        mix=mix,
    )


def _by_label(values: torch.Tensor) -> dict[str, float]:
    return {label: float(value) for label, value in zip(VIEW_LABELS, values.tolist())}


def fill_template(template: str, prompt: str, mask_token: str) -> str:
    """The probe sentence: `template` with {prompt} and the LM's own mask token filled in."""
    return template.replace(PROMPT_PLACEHOLDER, prompt).replace(MASK_PLACEHOLDER, mask_token)


def check_template(template: str) -> None:
    """Reject a template without exactly one [MASK] and one {prompt} (names --lm.template)."""
    for placeholder in (MASK_PLACEHOLDER, PROMPT_PLACEHOLDER):
        if template.count(placeholder) != 1:
            raise ConfigError(
                f"--lm.template must contain {placeholder} exactly once (got {template!r})"
            )


def view_token_ids(tokenizer: Any, view_words: Sequence[str], model_id: str) -> list[int]:
    """Vocabulary id of each view word; each must be one known token of the LM's vocabulary."""
    ids = []
    for word in view_words:
        pieces = tokenizer.tokenize(word)
        token_ids = tokenizer.convert_tokens_to_ids(pieces)
        if len(pieces) != 1 or token_ids[0] == tokenizer.unk_token_id:
            raise ConfigError(
                f"--lm.view_words: {word!r} is not a single token of {model_id} "
                f"(it becomes {pieces}); choose view words that are single tokens"
            )
        ids.append(token_ids[0])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--lm.view_words must be {len(ids)} different tokens (got {view_words})")
    return ids


class MaskedLMProbe:
    """ViewProbe backed by a masked LM: softmax over the view-word logits at the mask position.

    Equal to the full-vocabulary softmax renormalised over the view words (threestudio's form).
    Prompts are padded to the longest in the batch; the attention mask makes padding inert.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: torch.nn.Module,
        template: str,
        view_words: Sequence[str],
        device: torch.device,
        model_id: str = "masked LM",
    ) -> None:
        check_template(template)
        if tokenizer.mask_token is None:
            raise ConfigError(f"{LM_FLAG} {model_id} has no mask token; use a masked LM")
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.template = template
        self.device = device
        self.view_ids = torch.tensor(view_token_ids(tokenizer, view_words, model_id))

    @classmethod
    def from_config(cls, lm: PromptDebiasConfig, device: torch.device) -> MaskedLMProbe:
        """Load the tokenizer and masked LM named by `--lm.model_id` (never remote code)."""
        check_template(lm.template)
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        try:
            model = load_pretrained(
                AutoModelForMaskedLM.from_pretrained,
                lm.model_id,
                what=LM_WHAT,
                flag=LM_FLAG,
                revision=lm.revision,
            )
            tokenizer = load_pretrained(
                AutoTokenizer.from_pretrained,
                lm.model_id,
                what=LM_WHAT,
                flag=LM_FLAG,
                revision=lm.revision,
            )
        except ValueError as error:
            # transformers raises ValueError for a folder without a usable config or tokenizer.
            reason = str(error).strip().splitlines()[0][:200]
            message = missing_model_message(lm.model_id, LM_WHAT, LM_FLAG, reason)
            raise MissingModelError(message) from None
        return cls(tokenizer, model, lm.template, lm.view_words, device, lm.model_id)

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        """P(view | prompt) [n_prompts, 4] in the order of the view words, on the CPU."""
        texts = [fill_template(self.template, p, self.tokenizer.mask_token) for p in prompts]
        batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        is_mask = batch["input_ids"] == self.tokenizer.mask_token_id  # [n_prompts, n_tokens]
        if not bool((is_mask.sum(dim=1) == 1).all()):
            raise ConfigError(
                "--lm.template must leave exactly one mask token per prompt once the prompt is "
                f"filled in (check the prompt and --lm.template {self.template!r})"
            )
        with torch.inference_mode():
            logits = self.model(**batch).logits  # [n_prompts, n_tokens, vocab]
            mask_logits = logits[is_mask]  # [n_prompts, vocab]
            view_logits = mask_logits[:, self.view_ids.to(mask_logits.device)]
            return torch.softmax(view_logits.float(), dim=-1).cpu()


def debias_from_config(
    cfg: SJCConfig, device: torch.device, probe: ViewProbe | None = None
) -> DebiasResult:
    """Run prompt debiasing once for `cfg.prompt` with the `--lm.*` flags, then free the LM.

    Candidate indices and the template are checked before the LM loads.
    """
    lm = cfg.lm
    candidate_indices(split_words(cfg.prompt), lm.candidate_ids)
    check_template(lm.template)
    owns_probe = probe is None
    if probe is None:
        probe = MaskedLMProbe.from_config(lm, device)
    result = debias_prompt(cfg.prompt, probe, lm.threshold, lm.mix, lm.candidate_ids)
    if owns_probe:
        del probe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for label in VIEW_LABELS:
        logger.info("prompt debiasing: %s view prompt %r", label, result.prompts[label])
    return result
