"""Train the toy world's learned denoiser (a TinyUNet) and publish its error table.

    python experiments/train_toy_denoiser.py --scene head            # train (or reuse) + table
    python experiments/train_toy_denoiser.py --scene head --n_steps 50 --cache_dir /tmp/x

The model learns the same conditional as the exact denoiser: a prompt (a subset of caption
words and an optional view) is drawn, then an image uniformly from the captions compatible with
it; 20 % of samples use the empty prompt (caption dropout, for guidance). Weights go to
`<cache_dir>/<hash>.pt`, the hash covering the world's code, its flags and these settings;
a cached model is reused. The table compares it with the exact posterior mean per sigma and
gives the share of score elements above D-SDS's static threshold at several guidance scales.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from sjc_dsds.prompts import ViewPrompts
from sjc_dsds.runtime import cpu_model
from sjc_dsds.toy.captions import PROBE_VIEWS, ParsedPrompt, compatible_captions
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.learned import (
    CAPTION_DROPOUT,
    DEFAULT_CACHE_DIR,
    TinyUNet,
    model_path,
    parameter_count,
    prompt_features,
    training_settings,
    training_world,
)
from sjc_dsds.toy.prior import build_prior_from_config, prior_cache_key

EVAL_T = (10, 50, 100, 200, 300, 500, 700, 969)
GUIDANCE = (3.0, 10.0, 30.0, 100.0)
SCORE_THRES = 8.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="head")
    parser.add_argument("--n_steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_images", type=int, default=None, help="prior size (default: world's)")
    parser.add_argument(
        "--front_bias", type=float, default=None, help="prior's front bias (default: world's)"
    )
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, default=None, help="error table JSON")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def training_prompts(prior) -> list[tuple[list[int], torch.Tensor]]:
    """Every (word subset, view) prompt with a non-empty compatible set: indices, features."""
    vocabulary = sorted({word for caption in prior.captions for word in caption.words})
    prompts = []
    for size in range(len(vocabulary) + 1):
        for words in itertools.combinations(vocabulary, size):
            for view in (None, *PROBE_VIEWS):
                parsed = ParsedPrompt(frozenset(words), view)
                chosen = compatible_captions(parsed, prior.captions).nonzero().flatten()
                if len(chosen):
                    prompts.append((chosen.tolist(), prompt_features(parsed, vocabulary)))
    return prompts, vocabulary


def train(prior, args: argparse.Namespace, sigmas: torch.Tensor) -> tuple[TinyUNet, dict]:
    """Train a TinyUNet on the prior; returns it and the training log."""
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    prompts, vocabulary = training_prompts(prior)
    empty = next(i for i, (_, f) in enumerate(prompts) if f[: len(vocabulary)].sum() == 0
                 and f[len(vocabulary)] == 1)  # fmt: skip
    network = TinyUNet(len(vocabulary) + len(PROBE_VIEWS) + 1)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.n_steps)
    start, losses = time.perf_counter(), []
    for step in range(args.n_steps):
        picks = torch.randint(len(prompts), (args.batch,), generator=generator).tolist()
        drop = (torch.rand(args.batch, generator=generator) < CAPTION_DROPOUT).tolist()
        picks = [empty if dropped else pick for pick, dropped in zip(picks, drop)]
        index = [prompts[p][0][int(torch.randint(len(prompts[p][0]), (1,), generator=generator))]
                 for p in picks]  # fmt: skip
        text = torch.stack([prompts[p][1] for p in picks])
        clean = prior.images[index]
        sigma = sigmas[torch.randint(len(sigmas), (args.batch,), generator=generator)].float()
        noised = clean + sigma[:, None, None, None] * torch.randn(clean.shape, generator=generator)
        weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
        loss = (weight[:, None, None, None] * (network(noised, sigma, text) - clean) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 250 == 0 or step == args.n_steps - 1:
            print(f"step {step}: loss {sum(losses[-250:]) / len(losses[-250:]):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    log = {"train_seconds": time.perf_counter() - start, "final_loss": sum(losses[-250:]) / 250}
    return network.eval(), {**log, "vocabulary": vocabulary}


@torch.no_grad()
def error_table(exact: ToyScoreModel, learned, cfg, n: int = 48) -> dict:
    """Per sigma: MSE of the learned D against the exact D (and the exact D's own MSE to the
    clean image, for scale); per guidance: share of |score| > SCORE_THRES for both models."""
    generator = torch.Generator().manual_seed(1)
    prompts = ViewPrompts.from_config(cfg)
    rows, labels = [], ["front", "side", "back", "overhead"]
    for t in EVAL_T:
        sigma = float(exact.sigmas[t])
        errors, exact_errors = [], []
        for label in labels:
            cond = exact.condition(prompts.text(label), "")
            chosen = torch.isfinite(cond.cond[0]).nonzero().flatten()
            pick = chosen[torch.randint(len(chosen), (n,), generator=generator)]
            clean = exact.images[pick]
            noised = clean + sigma * torch.randn(clean.shape, generator=generator)
            d_exact = exact.with_guidance(1.0).denoise(
                noised, sigma, exact.with_guidance(1.0).condition(prompts.text(label), "")
            )
            d_learned = learned.with_guidance(1.0).denoise(
                noised, sigma, learned.with_guidance(1.0).condition(prompts.text(label), "")
            )
            errors.append(float((d_learned - d_exact).square().mean()))
            exact_errors.append(float((d_exact - clean).square().mean()))
        rows.append({"t": t, "sigma": sigma, "mse_learned_vs_exact": sum(errors) / 4,
                     "mse_exact_vs_clean": sum(exact_errors) / 4})  # fmt: skip
    clipped = {}
    for scale in GUIDANCE:
        shares = {"exact": [], "learned": []}
        for name, model in (("exact", exact.with_guidance(scale)),
                            ("learned", learned.with_guidance(scale))):  # fmt: skip
            gen = torch.Generator().manual_seed(2)
            for label in labels:
                cond = model.condition(prompts.text(label), "")
                chosen = torch.isfinite(exact.condition(prompts.text(label), "").cond[0])
                pick = chosen.nonzero().flatten()[:16]
                clean = exact.images[pick]
                t = torch.randint(10, 970, (1,), generator=gen).item()
                sigma = float(exact.sigmas[t])
                noised = clean + sigma * torch.randn(clean.shape, generator=gen)
                score = (model.denoise(noised, sigma, cond) - clean) / sigma
                shares[name].append(float((score.abs() > SCORE_THRES).float().mean()))
        clipped[str(scale)] = {k: sum(v) / len(v) for k, v in shares.items()}
    return {"per_sigma": rows, "clipped_share": clipped}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    from sjc_dsds.toy.learned import LearnedToyScoreModel

    cfg = training_world(args.scene, args.front_bias, args.n_images)
    prior = build_prior_from_config(cfg, torch.device("cpu"))
    settings = training_settings(args.n_steps, args.batch, args.lr, args.seed)
    path = model_path(args.cache_dir, args.scene, prior_cache_key(cfg), settings)
    exact = ToyScoreModel(prior.images, prior.captions, 1.0, torch.device("cpu"), prior.view_words)
    if path.exists():
        print(f"reusing {path}")
        log = json.loads(path.with_suffix(".json").read_text())["training"]
    else:
        network, log = train(prior, args, exact.sigmas)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": network.state_dict(), "vocabulary": log["vocabulary"],
                    "view_words": prior.view_words, "data_shape": list(prior.images.shape[1:]),
                    "settings": settings}, path)  # fmt: skip
    learned = LearnedToyScoreModel.load(path, 1.0, torch.device("cpu"))
    table = error_table(exact, learned, cfg)
    record = {"command": " ".join(["python", *sys.argv]), "machine": cpu_model(),
              "cache_path": str(path), "settings": settings, "training": log,
              "parameters": parameter_count(learned.network), **table}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    print(f"parameters {record['parameters']}, trained {log['train_seconds']:.0f} s")
    print("| t | sigma | MSE(learned, exact D) | MSE(exact D, clean) |\n| --- | --- | --- | --- |")
    for row in table["per_sigma"]:
        print(f"| {row['t']} | {row['sigma']:.3f} | {row['mse_learned_vs_exact']:.5f} | "
              f"{row['mse_exact_vs_clean']:.5f} |")  # fmt: skip
    print("| guidance | clipped (exact) | clipped (learned) |\n| --- | --- | --- |")
    for scale, shares in table["clipped_share"].items():
        print(f"| {scale} | {shares['exact']:.4f} | {shares['learned']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
