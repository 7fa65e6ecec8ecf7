"""View probes for prompt debiasing in the toy world: the ideal one, an independent one, and
the accuracy of a probe's drop decisions against the ideal decisions (issue 14).

The ideal probe knows the world's caption rates: P(view | caption has words W) is proportional
to P(view) times the product of P(w | view) over W. The independent probe counts a separately
sampled caption corpus whose rates differ from the prior's by a set `disagreement`; with
disagreement 0 it is a second draw of the same world (the prior's own captions are the oracle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.prompt_debiasing import ViewProbe, debias_prompt
from sjc_dsds.runtime import make_generator
from sjc_dsds.toy.captions import PROBE_VIEWS, CaptionProbe, parse_prompt, view_words_from_config
from sjc_dsds.toy.prior import plan_captions, plan_prior, sample_prior_views
from sjc_dsds.toy.scenes import build_scene, configured_scene_name
from sjc_dsds.toy.world import BACK_WORD_RATE, FRONT_WORD_RATE, PROBE_SEED_OFFSET, WORLD_SEED

WordRates = Mapping[str, float]


def perturbed_rates(
    rates: WordRates, disagreement: float, generator: torch.Generator
) -> dict[str, float]:
    """Rates moved by +-disagreement (random sign per view), clipped to [0, 1]."""
    signs = torch.randint(0, 2, (len(PROBE_VIEWS),), generator=generator) * 2 - 1
    return {
        view: min(1.0, max(0.0, rates[view] + disagreement * float(sign)))
        for view, sign in zip(PROBE_VIEWS, signs.tolist())
    }


class RateProbe:
    """The ideal probe: P(view | words) from the world's view shares and word rates."""

    def __init__(
        self,
        view_share: Mapping[str, float],
        word_rates: Mapping[str, WordRates],
        view_words: Mapping[str, str],
    ) -> None:
        self.view_share = dict(view_share)
        self.word_rates = {word: dict(rates) for word, rates in word_rates.items()}
        self.view_words = dict(view_words)

    def p_view(self, prompts: list[str]) -> torch.Tensor:
        """View probabilities [n_prompts, 4] over ('front', 'side', 'back', 'overhead')."""
        rows = []
        for prompt in prompts:
            parsed = parse_prompt(prompt, self.word_rates, self.view_words)
            weights = torch.tensor([self.view_share[view] for view in PROBE_VIEWS])
            for word in parsed.words:
                weights = weights * torch.tensor([self.word_rates[word][v] for v in PROBE_VIEWS])
            rows.append(weights / weights.sum())
        return torch.stack(rows).to(torch.float32)


def world_word_rates(cfg: SJCConfig) -> dict[str, WordRates]:
    """P(word | view) of every caption word of the configured scene (the noun: always)."""
    scene = build_scene(configured_scene_name(cfg.toy))
    return {
        scene.front_word: FRONT_WORD_RATE,
        scene.back_word: BACK_WORD_RATE,
        scene.noun: dict.fromkeys(PROBE_VIEWS, 1.0),
    }


def ideal_probe(cfg: SJCConfig) -> RateProbe:
    """The ideal probe of the configured world (view shares of its prior's cameras)."""
    views = [view.label for view in plan_prior(cfg).views]
    share = {view: views.count(view) / len(views) for view in PROBE_VIEWS}
    return RateProbe(share, world_word_rates(cfg), view_words_from_config(cfg))


def independent_probe(cfg: SJCConfig, disagreement: float) -> CaptionProbe:
    """A caption probe over a separately drawn corpus (same size and camera bias as the prior)
    whose word rates differ from the world's by `disagreement`."""
    toy = cfg.toy
    generator = make_generator(WORLD_SEED + PROBE_SEED_OFFSET)
    front = perturbed_rates(FRONT_WORD_RATE, disagreement, generator)
    back = perturbed_rates(BACK_WORD_RATE, disagreement, generator)
    views = sample_prior_views(toy.n_images, toy.front_bias, cfg, generator)
    scenes = [configured_scene_name(toy)] * len(views)
    captions = plan_captions(views, scenes, toy.view_caption_frac, generator, (front, back))
    return CaptionProbe(captions, view_words_from_config(cfg))


def drop_decisions(
    prompts: Sequence[str], probe: ViewProbe, words: Sequence[str], cfg: SJCConfig
) -> dict[tuple[str, str, str], bool]:
    """For each prompt, each of `words` it contains and each view: is the word dropped?"""
    decisions = {}
    for prompt in prompts:
        result = debias_prompt(prompt, probe, cfg.lm.threshold, cfg.lm.mix)
        for entry in result.ratios:
            if entry["word"] in words:
                for view in PROBE_VIEWS:
                    decisions[(prompt, entry["word"], view)] = view in entry["dropped"]
    return decisions


def decision_accuracy(probe: ViewProbe, ideal: ViewProbe, cfg: SJCConfig) -> dict:
    """Share of drop decisions (front and back word, prompts 'a <word> <noun>', every view)
    where `probe` agrees with `ideal`, and the decisions themselves."""
    scene = build_scene(configured_scene_name(cfg.toy))
    words = (scene.front_word, scene.back_word)
    prompts = [f"a {word} {scene.noun}" for word in words]
    got = drop_decisions(prompts, probe, words, cfg)
    want = drop_decisions(prompts, ideal, words, cfg)
    agree = sum(got[key] == want[key] for key in want)
    return {
        "accuracy": agree / len(want),
        "decisions": {" | ".join(key): got[key] for key in got},
        "ideal": {" | ".join(key): want[key] for key in want},
    }
