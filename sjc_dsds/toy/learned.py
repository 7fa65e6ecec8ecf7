"""A learned denoiser of the toy prior: a small UNet trained on its images (issue 14).

It is a second backbone next to the exact posterior mean: same sigma ladder, same prompt
semantics (a prompt's target is an image drawn uniformly from the captions compatible with it),
text given as a bag of caption words plus a view embedding. Train it with
`experiments/train_toy_denoiser.py`; weights are cached on disk under a hash of the world and
the training settings, never committed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sjc_dsds.config import SJCConfig
from sjc_dsds.score import Conditioning, ScoreModel
from sjc_dsds.toy.captions import PROBE_VIEWS, ParsedPrompt, parse_prompt
from sjc_dsds.toy.denoiser import scaled_linear_sigmas

# Karras et al.'s data standard deviation for the preconditioning (images in [-1, 1]).
SIGMA_DATA = 0.5
EMBED_DIM = 128


def prompt_features(parsed: ParsedPrompt, vocabulary: Sequence[str]) -> torch.Tensor:
    """Bag of words over `vocabulary` followed by a one-hot view (none, front, side, back,
    overhead): [len(vocabulary) + 5] float32."""
    words = torch.tensor([word in parsed.words for word in vocabulary], dtype=torch.float32)
    view = torch.zeros(len(PROBE_VIEWS) + 1)
    view[0 if parsed.view is None else 1 + PROBE_VIEWS.index(parsed.view)] = 1.0
    return torch.cat([words, view])


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding added in between and a 1x1 skip."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(EMBED_DIM, channels_out)
        self.norm2 = nn.GroupNorm(8, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = (
            nn.Identity()
            if channels_in == channels_out
            else nn.Conv2d(channels_in, channels_out, 1)
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.embed(embedding)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class TinyUNet(nn.Module):
    """A three-level UNet (32 -> 16 -> 8 px) with Karras preconditioning: D(z, sigma, text)."""

    def __init__(self, n_text: int, widths: tuple[int, int, int] = (32, 64, 96)) -> None:
        super().__init__()
        a, b, c = widths
        self.frequencies = nn.Parameter(torch.randn(16) * 4, requires_grad=False)
        self.sigma_mlp = nn.Sequential(nn.Linear(32, EMBED_DIM), nn.SiLU(), nn.Linear(128, 128))
        self.text = nn.Linear(n_text, EMBED_DIM)
        self.stem = nn.Conv2d(3, a, 3, padding=1)
        self.down1, self.down2 = ResBlock(a, a), ResBlock(b, b)
        self.pool1, self.pool2 = nn.Conv2d(a, b, 3, 2, 1), nn.Conv2d(b, c, 3, 2, 1)
        self.mid1, self.mid2 = ResBlock(c, c), ResBlock(c, c)
        self.up2, self.up1 = ResBlock(c + b, b), ResBlock(b + a, a)
        self.out = nn.Sequential(nn.GroupNorm(8, a), nn.SiLU(), nn.Conv2d(a, 3, 3, padding=1))

    def forward(
        self, noised: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Denoised `noised` [b, 3, h, w] at per-sample `sigma` [b] given text [b, n]."""
        sigma = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / (sigma**2 + SIGMA_DATA**2).sqrt()
        c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
        c_out = sigma * SIGMA_DATA / (sigma**2 + SIGMA_DATA**2).sqrt()
        angles = sigma.flatten().log()[:, None] / 4 * self.frequencies[None, :]
        embedding = self.sigma_mlp(torch.cat([angles.sin(), angles.cos()], dim=1))
        embedding = embedding + self.text(text)
        h1 = self.down1(self.stem(noised * c_in), embedding)
        h2 = self.down2(self.pool1(h1), embedding)
        h = self.mid2(self.mid1(self.pool2(h2), embedding), embedding)
        h = nn.functional.interpolate(h, scale_factor=2.0)
        h = self.up2(torch.cat([h, h2], dim=1), embedding)
        h = nn.functional.interpolate(h, scale_factor=2.0)
        h = self.up1(torch.cat([h, h1], dim=1), embedding)
        return c_skip * noised + c_out * self.out(h)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def cache_key(prior_key: str, settings: dict) -> str:
    """Cache key of a trained model: the prior's hash and the training settings."""
    text = prior_key + json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Share of training samples with the empty prompt (caption dropout, for guidance).
CAPTION_DROPOUT = 0.2
UNET_WIDTHS = (32, 64, 96)
DEFAULT_CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sjc_dsds" / "toy_denoiser"
)


def training_settings(n_steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0) -> dict:
    """The training settings a cached model's key covers (experiments/train_toy_denoiser.py)."""
    return {"n_steps": n_steps, "batch": batch, "lr": lr, "seed": seed,
            "dropout": CAPTION_DROPOUT, "widths": list(UNET_WIDTHS)}  # fmt: skip


def training_world(
    scene: str, front_bias: float | None = None, n_images: int | None = None
) -> SJCConfig:
    """The world config a model is trained on and keyed by: the benchmark's world of `scene`
    (its own prompt included), with the prior's front bias or size replaced when given."""
    from sjc_dsds.toy.protocol import world_config

    overrides: dict = {}
    if front_bias is not None:
        overrides["toy.front_bias"] = front_bias
    if n_images is not None:
        overrides["toy.n_images"] = n_images
    return world_config(scene, **overrides)


def model_path(cache_dir: Path, scene: str, prior_key: str, settings: dict) -> Path:
    """Where the model of this prior (`prior_cache_key`) and these settings is cached."""
    return Path(cache_dir) / f"{scene}-{cache_key(prior_key, settings)}.pt"


class LearnedToyScoreModel(ScoreModel):
    """The trained TinyUNet as a ScoreModel with the toy world's prompt parsing and guidance."""

    def __init__(
        self,
        network: TinyUNet,
        vocabulary: Sequence[str],
        view_words: dict[str, str],
        guidance_scale: float,
        device: torch.device,
        data_shape: tuple[int, int, int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        self.network = network.to(device).eval()
        self.vocabulary = list(vocabulary)
        self.view_words = dict(view_words)
        self.guidance_scale = float(guidance_scale)
        self.device = device
        self.sigmas = scaled_linear_sigmas()
        self.data_shape = data_shape

    @classmethod
    def load(cls, path: Path, guidance_scale: float, device: torch.device) -> LearnedToyScoreModel:
        """A model saved by experiments/train_toy_denoiser.py (a .pt with weights and words)."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network = TinyUNet(len(saved["vocabulary"]) + len(PROBE_VIEWS) + 1)
        network.load_state_dict(saved["state_dict"])
        shape = tuple(saved["data_shape"])
        return cls(network, saved["vocabulary"], saved["view_words"], guidance_scale, device, shape)

    def with_guidance(self, guidance_scale: float) -> LearnedToyScoreModel:
        """The same network at another guidance scale."""
        return LearnedToyScoreModel(
            self.network, self.vocabulary, self.view_words, guidance_scale, self.device,
            self.data_shape,
        )  # fmt: skip

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text features [n_prompts, n_words + 5]."""
        rows = [
            prompt_features(parse_prompt(p, self.vocabulary, self.view_words), self.vocabulary)
            for p in prompts
        ]
        return torch.stack(rows).to(self.device)

    @torch.no_grad()
    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        """Guided clean estimate D_u + s (D_c - D_u) at the ladder sigma nearest `sigma`."""
        _, sigma = self.snap(sigma)
        batch = noised.shape[0]
        sigmas = torch.full((batch,), sigma, device=self.device)
        denoised = self.network(noised.float(), sigmas, cond.cond.expand(batch, -1))
        if cond.uncond is not None:
            uncond = self.network(noised.float(), sigmas, cond.uncond.expand(batch, -1))
            denoised = uncond + self.guidance_scale * (denoised - uncond)
        return denoised.to(noised.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] renders to RGB in [0, 1]."""
        return ((x + 1) / 2).clamp(0, 1)
