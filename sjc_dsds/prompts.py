"""View-dependent prompts: the text of each view label's prompt and its cached conditioning.

SJC prefixes the user prompt with the view ("front view of ...", "backside view of ...",
docs/method.md A.8); D-SDS prompt debiasing may first drop words from a view's copy of the
prompt (docs/method.md C.4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sjc_dsds.config import VIEW_LABELS, SJCConfig, ViewPromptConfig
from sjc_dsds.prompt_debiasing import DebiasResult, ViewProbe, debias_from_config
from sjc_dsds.score import ScoreModel

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]


def view_word(label: str, view: ViewPromptConfig) -> str:
    """The word naming view `label` in prompts (`--view.front` ... `--view.overhead`)."""
    if label not in VIEW_LABELS:
        raise ValueError(f"view label must be one of {', '.join(VIEW_LABELS)} (got {label!r})")
    return getattr(view, label)


def view_prompt_text(prompt: str, label: str, view: ViewPromptConfig) -> str:
    """Full text for one view: "front view of {prompt}" (prefix, SJC) or "{prompt}, front view".

    An empty prompt (every word dropped by debiasing) gives the bare "front view", not
    threestudio's "front view of " (docs/method.md, decision 8).
    """
    word = view_word(label, view)
    if not prompt:
        return f"{word} view"
    if view.style == "prefix":
        return f"{word} view of {prompt}"
    return f"{prompt}, {word} view"


def manual_prompt(label: str, view: ViewPromptConfig) -> str | None:
    """The user's hand-written full prompt for `label` (`--view.prompt_<label>`), if any."""
    return getattr(view, f"prompt_{label}")


@dataclass(frozen=True)
class ViewPrompts:
    """The text given to the score model for each view label; both side quadrants share one.

    `user_prompts` holds the user prompt of each view before the view words are added (after
    debiasing's word drops when debiasing ran); `manual` names the labels written by hand.
    """

    texts: dict[str, str]
    user_prompts: dict[str, str] = field(default_factory=dict)
    manual: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: SJCConfig, debiased: dict[str, str] | None = None) -> ViewPrompts:
        """Per-view texts from `cfg.prompt` and `--view.*`; `debiased` replaces the user prompt.

        A manual `--view.prompt_<label>` is used verbatim for its label.
        """
        texts, user_prompts, manual = {}, {}, []
        for label in VIEW_LABELS:
            user_prompts[label] = debiased[label] if debiased is not None else cfg.prompt
            written = manual_prompt(label, cfg.view)
            if written is not None:
                texts[label] = written
                manual.append(label)
            else:
                texts[label] = view_prompt_text(user_prompts[label], label, cfg.view)
        return cls(texts=texts, user_prompts=user_prompts, manual=tuple(manual))

    def text(self, label: str) -> str:
        """The full prompt text for view `label`."""
        if label not in self.texts:
            raise ValueError(f"view label must be one of {', '.join(self.texts)} (got {label!r})")
        return self.texts[label]

    def to_json(self) -> dict[str, Any]:
        """JSON record of the texts (part of the run's prompts.json)."""
        return {
            "texts": dict(self.texts),
            "user_prompts": dict(self.user_prompts),
            "manual": list(self.manual),
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ViewPrompts:
        """Rebuild from `to_json()` (a resumed run reuses its saved texts without the LM)."""
        return cls(
            texts=dict(record["texts"]),
            user_prompts=dict(record.get("user_prompts", {})),
            manual=tuple(record.get("manual", ())),
        )


def text_token_counter(model: Any) -> tuple[TokenCounter, int] | None:
    """(tokens of a text with start/end tokens, the encoder's limit) from `model.tokenizer`.

    None when the score model has no text tokenizer with a length limit (the toy world).
    """
    tokenizer = getattr(model, "tokenizer", None)
    limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer is None or not isinstance(limit, int) or limit > 100_000:
        return None
    special = tokenizer.num_special_tokens_to_add()
    return (lambda text: len(tokenizer.tokenize(text)) + special), limit


def _longest_fitting_prompt(
    prompt: str, label: str, view: ViewPromptConfig, count: TokenCounter, limit: int
) -> str:
    """The longest word prefix of `prompt` whose view text has at most `limit` tokens."""
    words = prompt.split(" ")
    low, high = 0, len(words)  # words[:low] fits (the bare view phrase is assumed to)
    while low < high:
        middle = (low + high + 1) // 2
        if count(view_prompt_text(" ".join(words[:middle]), label, view)) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low]).rstrip(" ,;")


def fit_token_limit(
    prompts: ViewPrompts, view: ViewPromptConfig, count: TokenCounter, limit: int
) -> ViewPrompts:
    """Cut user prompts whose view text exceeds `limit` tokens, keeping the view words; warn.

    The text encoder would cut the end of the text, which in `--view.style suffix` is the view
    words (every view would get the same text); a manual prompt can only be warned about.
    """
    texts, user_prompts = dict(prompts.texts), dict(prompts.user_prompts)
    for label, text in prompts.texts.items():
        n_tokens = count(text)
        if n_tokens <= limit:
            continue
        if label in prompts.manual:
            logger.warning(
                "--view.prompt_%s %r is %d tokens, over the text encoder's limit of %d: its end "
                "will be cut",
                label,
                text,
                n_tokens,
                limit,
            )
            continue
        kept = _longest_fitting_prompt(user_prompts[label], label, view, count, limit)
        texts[label], user_prompts[label] = view_prompt_text(kept, label, view), kept
        logger.warning(
            "prompt %r with the %s view words is %d tokens, over the text encoder's limit of "
            "%d: cut the prompt to %r so that the view words stay",
            prompts.user_prompts[label],
            label,
            n_tokens,
            limit,
            kept,
        )
    return replace(prompts, texts=texts, user_prompts=user_prompts)


def build_view_prompts(
    cfg: SJCConfig,
    device: torch.device,
    probe: ViewProbe | None = None,
    model: ScoreModel | None = None,
) -> tuple[ViewPrompts, DebiasResult | None]:
    """The run's view prompts; with `--prompt_debias True`, debias first (loads, frees the LM).

    With `model`, texts too long for its text encoder are cut to fit (`fit_token_limit`).
    """
    result = debias_from_config(cfg, device, probe) if cfg.prompt_debias else None
    prompts = ViewPrompts.from_config(cfg, result.prompts if result is not None else None)
    counter = text_token_counter(model) if model is not None else None
    if counter is not None:
        prompts = fit_token_limit(prompts, cfg.view, *counter)
    return prompts, result


def prompts_record(prompts: ViewPrompts, debias: DebiasResult | None = None) -> dict[str, Any]:
    """What a run saves as prompts.json: per-view texts and, when it ran, the debiasing record."""
    record: dict[str, Any] = {"view_prompts": prompts.to_json()}
    record["prompt_debiasing"] = debias.to_json() if debias is not None else None
    return record


def format_prompts_report(prompts: ViewPrompts, debias: DebiasResult | None = None) -> str:
    """Readable multi-line report: view probabilities, each word's ratios, per-view texts."""
    lines = []
    if debias is not None:
        header = "".join(f"{label:>10}" for label in VIEW_LABELS)
        lines.append(f"prompt debiasing of {debias.prompt!r}")
        lines.append(f"{'':24}{header}")
        full = "".join(f"{debias.full[label]:10.4f}" for label in VIEW_LABELS)
        lines.append(f"{'P(view | prompt)':24}{full}")
        lines.append(
            f"ratio per word (dropped for a view when < {debias.threshold:g}; mix {debias.mix:g})"
        )
        for entry in debias.ratios:
            name = f"{entry['index']:>3} {entry['word']}"[:22]
            ratios = "".join(f"{entry['ratio'][label]:10.4f}" for label in VIEW_LABELS)
            dropped = ", ".join(entry["dropped"]) or "-"
            lines.append(f"  {name:22}{ratios}   dropped: {dropped}")
    lines.append("view prompts:")
    for label, text in prompts.texts.items():
        note = " (manual)" if label in prompts.manual else ""
        lines.append(f"  {label:9} {text}{note}")
    return "\n".join(lines)
