"""Captions of the synthetic prior: prompt parsing, caption matching and the caption view-probe.

A caption is a set of content words (the object noun, plus the scene's front word when the front
is in view) and an optional view word. A prompt selects the dataset images whose captions match it
best; the caption statistics give P(view | prompt words) for D-SDS prompt debiasing
(docs/method.md C).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from sjc_dsds.config import VIEW_LABELS, SJCConfig

# View order of the prompt-debiasing probe (`ViewProbe.p_view` columns).
PROBE_VIEWS: tuple[str, ...] = VIEW_LABELS

# Words that name a view in prompts and captions; "backside" is SJC's back prefix
# (docs/method.md A.8).
DEFAULT_VIEW_WORDS: Mapping[str, str] = MappingProxyType(
    {"front": "front", "side": "side", "back": "back", "backside": "back", "overhead": "overhead"}
)


@dataclass(frozen=True)
class Caption:
    """Caption of one prior image: content words and the view it names (None: view unnamed)."""

    words: tuple[str, ...]
    view: str | None = None

    @property
    def word_set(self) -> frozenset[str]:
        """The content words as a set."""
        return frozenset(self.words)

    @property
    def text(self) -> str:
        """Readable caption, e.g. 'front view of a smiling head'."""
        body = "a " + " ".join(self.words)
        return f"{self.view} view of {body}" if self.view else body


def split_words(text: str) -> list[str]:
    """Lower-case alphabetic words of a text ('A head, front view' -> ['a', 'head', ...])."""
    return re.findall(r"[a-z]+", text.lower())


@dataclass(frozen=True)
class ParsedPrompt:
    """What a prompt asks of a caption: content words it must contain, and a view (or None)."""

    words: frozenset[str]
    view: str | None


def parse_prompt(
    prompt: str, vocabulary: Iterable[str], view_words: Mapping[str, str] = DEFAULT_VIEW_WORDS
) -> ParsedPrompt:
    """Content words of `prompt` that the captions know, and the view its view word names.

    Words outside the caption vocabulary ('a', 'of', 'photo') are ignored, as a text encoder
    ignores words it has no use for; the last view word wins if several are present.
    """
    known = frozenset(vocabulary)
    words, view = set(), None
    for word in split_words(prompt):
        if word in view_words:
            view = view_words[word]
        elif word in known:
            words.add(word)
    return ParsedPrompt(frozenset(words), view)


def compatible_captions(parsed: ParsedPrompt, captions: Sequence[Caption]) -> torch.Tensor:
    """Per caption: does it contain every prompt word and name no other view? Bool [n].

    A caption that does not name its view is compatible with any view word. There is no
    partial credit: a caption that lacks a prompt word never matches (no tie rule trades a
    missing word against a wrong view word).
    """
    flags = [
        parsed.words <= caption.word_set
        and (parsed.view is None or caption.view is None or caption.view == parsed.view)
        for caption in captions
    ]
    return torch.tensor(flags, dtype=torch.bool)


def uniform_log_weights(chosen: torch.Tensor, prompt: str = "") -> torch.Tensor:
    """Log prior over images: uniform over the chosen ones, -inf elsewhere. [n] float64.

    Raises ValueError when nothing is chosen (the prompt matches no caption of the prior).
    """
    count = int(chosen.sum())
    if count == 0:
        raise ValueError(f"prompt {prompt!r} matches no caption of the toy prior")
    log_weights = torch.full(chosen.shape, float("-inf"), dtype=torch.float64)
    log_weights[chosen] = -torch.log(torch.tensor(float(count), dtype=torch.float64))
    return log_weights


def caption_vocabulary(captions: Iterable[Caption]) -> frozenset[str]:
    """Every content word used by some caption."""
    vocabulary: set[str] = set()
    for caption in captions:
        vocabulary |= caption.word_set
    return frozenset(vocabulary)


def view_counts(parsed: ParsedPrompt, captions: Sequence[Caption]) -> torch.Tensor:
    """How many view-naming captions containing all prompt words name each view. [4] float64."""
    counts = torch.zeros(len(PROBE_VIEWS), dtype=torch.float64)
    for caption in captions:
        if caption.view is not None and parsed.words <= caption.word_set:
            counts[PROBE_VIEWS.index(caption.view)] += 1
    return counts


class CaptionProbe:
    """P(view | prompt words) from caption statistics: the toy world's masked-LM stand-in.

    Implements the `ViewProbe` protocol of prompt debiasing: `p_view(prompts)` returns, for each
    prompt, the add-one-smoothed share of each view among the captions that name a view and
    contain every content word of the prompt (words outside the caption vocabulary are ignored,
    so the LM template around a prompt does not matter).
    """

    def __init__(
        self,
        captions: Sequence[Caption],
        view_words: Mapping[str, str] = DEFAULT_VIEW_WORDS,
        smoothing: float = 1.0,
    ) -> None:
        self.captions = list(captions)
        self.view_words = dict(view_words)
        self.vocabulary = caption_vocabulary(self.captions)
        self.smoothing = smoothing

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        """View probabilities [n_prompts, 4] over ('front', 'side', 'back', 'overhead')."""
        rows = []
        for prompt in prompts:
            parsed = parse_prompt(prompt, self.vocabulary, self.view_words)
            counts = view_counts(ParsedPrompt(parsed.words, None), self.captions) + self.smoothing
            rows.append(counts / counts.sum())
        return torch.stack(rows).to(torch.float32)


def view_words_from_config(cfg: SJCConfig) -> dict[str, str]:
    """Default view words plus the configured prefix words (`--view.front` etc.)."""
    words = dict(DEFAULT_VIEW_WORDS)
    view = cfg.view
    for label in PROBE_VIEWS:
        for word in split_words(getattr(view, label)):
            if word != "view":
                words[word] = label
    return words
