"""The exact score model of a finite captioned image set: closed-form optimal Gaussian denoiser.

For images x_1..x_n with prior weights w_i, the minimum-mean-squared-error denoiser of
z = x + sigma * noise is the posterior mean D(z, sigma) = sum_i p(i | z) x_i with
p(i | z) proportional to w_i exp(-|z - x_i|^2 / (2 sigma^2)); Tweedie's formula then gives the
exact score (D - z) / sigma^2 of the noised image distribution (docs/method.md A.1).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from sjc_dsds.cameras import Camera
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import ConfigError
from sjc_dsds.score import SD_BETA_END, SD_BETA_START, Conditioning, ScoreModel
from sjc_dsds.toy.captions import (
    DEFAULT_VIEW_WORDS,
    Caption,
    caption_vocabulary,
    compatible_captions,
    parse_prompt,
    uniform_log_weights,
)

SD_N_TRAIN_STEPS = 1000


def camera_directions(cameras: Sequence[Camera]) -> torch.Tensor:
    """Unit vectors [n, 3] float64 from the origin (the object) to each camera's eye."""
    eyes = torch.stack([camera.cam_to_world[:3, 3].detach().cpu() for camera in cameras])
    eyes = eyes.to(torch.float64)
    return eyes / eyes.norm(dim=1, keepdim=True)


def scaled_linear_sigmas(
    beta_start: float = SD_BETA_START,
    beta_end: float = SD_BETA_END,
    n_steps: int = SD_N_TRAIN_STEPS,
) -> torch.Tensor:
    """SD's VE sigma ladder: betas = linspace(sqrt(start), sqrt(end))^2, sigma_t.

    docs/method.md A.1.

    Returns: [n_steps] float64, ascending, index = DDPM t.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n_steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


class ImageBank(NamedTuple):
    """Flattened dataset images [n, d] with their float64 copies and squared norms [n], built
    once per model so that each denoiser call is two matrix-vector products."""

    images: torch.Tensor
    images64: torch.Tensor
    squared_norms: torch.Tensor

    @classmethod
    def of(cls, images: torch.Tensor) -> ImageBank:
        images64 = images.to(torch.float64)
        return cls(images, images64, images64.square().sum(1))

    def rows(self, index: torch.Tensor) -> ImageBank:
        """The bank of the images at `index` [k]."""
        return ImageBank(self.images[index], self.images64[index], self.squared_norms[index])


# A prompt that keeps less than this share of the images is evaluated on its subset (a gather);
# a wider one on every image with weight zero outside it (no copy of most of the bank).
SUBSET_SHARE = 0.25
# A model keeps the gathered banks of this many recent prompt subsets of at least
# SUBSET_CACHE_MIN_IMAGES images (a prompt's subset is the same at every step; a handful of
# images, as the exact-view oracle's, is cheaper to gather than to look up).
SUBSET_CACHE_SIZE = 16
SUBSET_CACHE_MIN_IMAGES = 64


def posterior_log_weights(
    noised: torch.Tensor,
    images: torch.Tensor | ImageBank,
    log_prior: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """log p(i | z) for every image: log-softmax of log w_i - |z - x_i|^2 / (2 sigma^2).

    Args:
        noised: [b, d] flattened noisy images z.
        images: [n, d] flattened dataset images x_i (or their `ImageBank`).
        log_prior: [n] log w_i (-inf excludes an image).
    Returns:
        [b, n] float64 log posterior, normalised over images by log-sum-exp.
    """
    bank = images if isinstance(images, ImageBank) else ImageBank.of(images)
    # |z|^2 - 2 z.x + |x|^2 in float64: the cancellation leaves ~1e-12 absolute error (d = 3072
    # values of order 1), 1e-9 in the logits at SD's smallest sigma; float32 differences err more.
    noised64 = noised.to(torch.float64)
    squared_distances = (
        noised64.square().sum(1, keepdim=True)
        - 2.0 * noised64 @ bank.images64.T
        + bank.squared_norms[None, :]
    ).clamp_(min=0.0)
    logits = log_prior.to(torch.float64) - squared_distances / (2 * sigma**2)
    return torch.log_softmax(logits, dim=-1)


def posterior_mean(
    noised: torch.Tensor,
    images: torch.Tensor | ImageBank,
    log_prior: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """Exact denoiser D(z, sigma) = E[x | z] of a weighted finite image set. Shape [b, d].

    Equivalent to the brute-force sum over images of p(i | z) x_i; a narrow prompt is evaluated
    on its own subset only.
    """
    bank = images if isinstance(images, ImageBank) else ImageBank.of(images)
    keep = torch.isfinite(log_prior)
    if int(keep.sum()) < SUBSET_SHARE * keep.shape[0]:
        index = keep.nonzero().flatten()
        bank, log_prior = bank.rows(index), log_prior[index]
    posterior = posterior_log_weights(noised, bank, log_prior, sigma).exp()  # [b, n_kept]
    return (posterior.to(bank.images.dtype) @ bank.images).to(noised.dtype)


def guided_denoised(
    denoised_uncond: torch.Tensor, denoised_cond: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """Classifier-free guidance D_u + s (D_c - D_u) on the denoised images.

    For a fixed noisy input z and sigma, eps = (z - D) / sigma is affine in D, so this equals
    SJC's eps_u + s (eps_c - eps_u) (docs/method.md A.2) mapped back through D = z - sigma eps.
    """
    return denoised_uncond + guidance_scale * (denoised_cond - denoised_uncond)


def check_toy_config(cfg: SJCConfig) -> None:
    """Refuse settings the toy world cannot match: a learned background texture."""
    if cfg.vox.blend_bg_texture:
        raise ConfigError(
            "--family toy needs --vox.blend_bg_texture False (got True): the prior's renders "
            "have a constant white background that a learned texture cannot match"
        )


class ToyScoreModel(ScoreModel):
    """Exact denoiser of a captioned finite image set, conditioned by caption matching.

    A prompt's conditioning tensor is a log-prior over the dataset images: uniform over the
    images whose captions are compatible with it (`compatible_captions`). Data are RGB renders
    in [-1, 1] with shape `data_shape = (3, h, w)`; sigmas are SD's ladder. `image_views` (the
    true view label of each image) enables `oracle_copy`, the exact view-conditioned model.
    """

    def __init__(
        self,
        images: torch.Tensor,
        captions: Sequence[Caption],
        guidance_scale: float,
        device: torch.device,
        view_words: Mapping[str, str] = DEFAULT_VIEW_WORDS,
        image_views: Sequence[str] | None = None,
        image_directions: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if images.ndim != 4 or images.shape[0] != len(captions):
            raise ValueError(
                f"images must be [n, c, h, w] with one caption each; got {tuple(images.shape)} "
                f"and {len(captions)} captions"
            )
        self.device = device
        self.images = images.to(device=device, dtype=torch.float32)
        self.image_bank = ImageBank.of(self.images.flatten(1))
        self.captions = list(captions)
        self.vocabulary = caption_vocabulary(self.captions)
        self.view_words = dict(view_words)
        self.guidance_scale = float(guidance_scale)
        self.sigmas = scaled_linear_sigmas()
        self.data_shape = tuple(images.shape[1:])
        self.image_views = None if image_views is None else list(image_views)
        # Unit vectors from the object to each image's camera, for `condition_near_camera`.
        self.image_directions = image_directions
        self.oracle = False
        self._subset_banks: OrderedDict[bytes, tuple[ImageBank, torch.Tensor]] = OrderedDict()

    def narrowed(self, log_prior: torch.Tensor) -> tuple[ImageBank, torch.Tensor]:
        """The bank and log prior `posterior_mean` works on: the prompt's subset of the images
        when it is narrow (gathered once per prompt and kept), else all of them."""
        keep = torch.isfinite(log_prior)
        count = int(keep.sum())
        if count >= SUBSET_SHARE * keep.shape[0]:
            return self.image_bank, log_prior
        if count < SUBSET_CACHE_MIN_IMAGES:
            index = keep.nonzero().flatten()
            return self.image_bank.rows(index), log_prior[index]
        key = keep.cpu().numpy().tobytes()
        hit = self._subset_banks.get(key)
        if hit is None:
            index = keep.nonzero().flatten()
            hit = (self.image_bank.rows(index), index)
            self._subset_banks[key] = hit
            if len(self._subset_banks) > SUBSET_CACHE_SIZE:
                self._subset_banks.popitem(last=False)
        else:
            self._subset_banks.move_to_end(key)
        return hit[0], log_prior[hit[1]]

    @classmethod
    def from_config(cls, cfg: SJCConfig, device: torch.device) -> ToyScoreModel:
        """Render the prior image set of `cfg.toy` and wrap it (the `--family toy` builder).

        The prior's renders have SJC's constant white background, so the trained field must not
        learn a background texture either (`--vox.blend_bg_texture False`).
        """
        from sjc_dsds.toy.prior import build_prior_from_config

        check_toy_config(cfg)
        prior = build_prior_from_config(cfg, device)
        views = [view.label for view in prior.plan.views]
        directions = camera_directions([view.camera for view in prior.plan.views])
        guidance = cfg.toy.guidance_scale
        return cls(
            prior.images, prior.captions, guidance, device, prior.view_words, views, directions
        )

    def with_guidance(self, guidance_scale: float) -> ToyScoreModel:
        """The same model (sharing its images) at another guidance scale."""
        other = copy.copy(self)
        other.guidance_scale = float(guidance_scale)
        other._condition_cache = {}
        return other

    def oracle_copy(self) -> ToyScoreModel:
        """The same model conditioned on true views: a prompt naming a view selects exactly the
        images of that view (whatever their captions say); prompts without a view are unchanged."""
        if self.image_views is None:
            raise ValueError("oracle_copy needs the true view label of every image")
        other = self.with_guidance(self.guidance_scale)
        other.oracle = True
        return other

    def condition_near_camera(self, camera: Camera, n_nearest: int) -> Conditioning:
        """The exact-view oracle's conditioning: uniform over the `n_nearest` images whose
        cameras point most nearly along `camera`'s direction (whatever their captions say),
        guided against the unconditional prompt. It tells the model which side of the object
        it sees, which the four view words cannot (one 'side' word covers left and right)."""
        if self.image_directions is None:
            raise ValueError("condition_near_camera needs the camera of every prior image")
        direction = camera_directions([camera])[0]
        nearness = self.image_directions @ direction
        nearest = nearness.topk(min(n_nearest, nearness.shape[0])).indices
        chosen = torch.zeros(nearness.shape[0], dtype=torch.bool)
        chosen[nearest] = True
        cond = uniform_log_weights(chosen).to(self.device)[None]
        uncond = None
        if self.guidance_scale != 1.0:
            uncond = self.condition(self.negative_prompt).cond
        return Conditioning(f"<{n_nearest} images nearest the camera>", cond, uncond)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Log-prior over the dataset per prompt: [n_prompts, n_images] float64."""
        rows = []
        for prompt in prompts:
            parsed = parse_prompt(prompt, self.vocabulary, self.view_words)
            if self.oracle and parsed.view is not None:
                chosen = torch.tensor([view == parsed.view for view in self.image_views])
            else:
                chosen = compatible_captions(parsed, self.captions)
            rows.append(uniform_log_weights(chosen, prompt))
        return torch.stack(rows).to(self.device)

    @torch.no_grad()
    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        """Guided exact clean estimate of `noised` [b, 3, h, w] at the ladder sigma nearest it."""
        if tuple(noised.shape[1:]) != self.data_shape:
            raise ValueError(
                f"noised must be [b, {', '.join(map(str, self.data_shape))}]; "
                f"got {tuple(noised.shape)}"
            )
        _, sigma = self.snap(sigma)
        flat = noised.flatten(1).to(torch.float32)
        denoised = posterior_mean(flat, *self.narrowed(cond.cond[0]), sigma)
        if cond.uncond is not None:
            denoised_uncond = posterior_mean(flat, *self.narrowed(cond.uncond[0]), sigma)
            denoised = guided_denoised(denoised_uncond, denoised, self.guidance_scale)
        return denoised.reshape(noised.shape).to(noised.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] renders [b, 3, h, w] to RGB in [0, 1]."""
        return ((x + 1) / 2).clamp(0, 1)

    def subset(self, prompt: str) -> torch.Tensor:
        """Indices of the images a prompt conditions on (its best-matching captions). [k]."""
        return torch.isfinite(self.encode_prompts([prompt])[0]).nonzero().flatten()
