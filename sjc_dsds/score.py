"""Score-model interface (a denoiser in the VE/Karras parametrisation) and its pure maths.

SJC talks to a diffusion model only through `denoise(x, sigma, cond)`, the model's estimate of the
clean sample given `x = clean + sigma * noise` (docs/method.md A.1, A.2). Everything here is
model-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

# SJC samples DDPM indices t = 10..969 uniformly (`us[30:-10]`, docs/method.md A.5).
TRAIN_T_MIN = 10
TRAIN_T_MAX = 969


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompt for one denoiser call: the prompt branch and the guidance branch.

    `cond` and `uncond` are model-specific tensors with a leading batch axis of 1 (text embeddings
    for SD, caption masks for the synthetic world); `uncond` is None when guidance is off.
    """

    prompt: str
    cond: torch.Tensor
    uncond: torch.Tensor | None


# Stable Diffusion's training schedule (1.x and 2.x): 1000 scaled-linear betas 0.00085 -> 0.012.
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_BETA_SCHEDULE = "scaled_linear"


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """VE noise level of every DDPM index, sigma_t = sqrt((1 - abar_t) / abar_t).

    docs/method.md A.1.

    Returns: [n_levels] float64, ascending with t (sigmas[t] is DDPM index t).
    """
    abar = alphas_cumprod.to(torch.float64)
    return ((1 - abar) / abar).sqrt()


def snap_index(sigmas: torch.Tensor, sigma: float | torch.Tensor) -> int:
    """DDPM index whose ladder value is nearest to `sigma` (docs/method.md A.2 step 1)."""
    value = torch.as_tensor(sigma, dtype=torch.float64).reshape(())
    return int((sigmas - value).abs().argmin())


def vp_input_scale(sigma: float | torch.Tensor) -> torch.Tensor | float:
    """1 / sqrt(1 + sigma^2): turns a VE input into the VP/DDPM input the UNet expects."""
    return 1.0 / (1.0 + sigma**2) ** 0.5


def guidance_combine(
    eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """SJC's classifier-free guidance eps_u + s (eps_c - eps_u) (docs/method.md A.2, decision 1)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def eps_from_v(noised_vp: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Epsilon from a v-prediction at VP input x_t: eps = sqrt(abar) v + sqrt(1 - abar) x_t."""
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * noised_vp


def denoised_from_eps(noised: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(z, sigma) = z - sigma eps, on the unscaled VE input z (docs/method.md A.2 step 5)."""
    return noised - sigma * eps


def guided_batch(
    model_input: torch.Tensor, cond: Conditioning, guided: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [2b or b, ...] and text of one UNet call: the [uncond, cond] halves, stacked."""
    batch = model_input.shape[0]
    text = cond.cond.expand(batch, -1, -1)
    if guided:
        text = torch.cat([cond.uncond.expand(batch, -1, -1), text])
        model_input = torch.cat([model_input, model_input])
    return model_input, text


def sjc_score(
    render: torch.Tensor,
    noised: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    variance_reduced: bool = True,
) -> torch.Tensor:
    """SJC's sigma-weighted PAAS score: (D - y)/sigma (Eq. 16, var_red) or (D - z)/sigma (Eq. 15).

    Divides by sigma, not sigma^2, as the authors' loop does (docs/method.md A.4).
    """
    reference = render if variance_reduced else noised
    return (denoised - reference) / sigma


def sample_train_sigma(sigmas: torch.Tensor, generator: torch.Generator) -> tuple[int, float]:
    """Draw a DDPM index uniformly from 10..969 (not uniform in sigma) and return (t, sigma_t)."""
    t = int(torch.randint(TRAIN_T_MIN, TRAIN_T_MAX + 1, (1,), generator=generator))
    return t, float(sigmas[t])


class ScoreModel(ABC):
    """A denoiser D(x, sigma, cond) on a discrete sigma ladder, plus prompt encoding and decoding.

    Subclasses set `sigmas` ([n_levels] float64, ascending, index = DDPM t), `data_shape`
    (channels, height, width of what the field renders), `device` and `guidance_scale`; `dtype`
    is the dtype of the model's weights (float32 unless a subclass says otherwise).
    """

    sigmas: torch.Tensor
    data_shape: tuple[int, int, int]
    device: torch.device
    guidance_scale: float
    dtype: torch.dtype = torch.float32

    # Text of the unconditional guidance branch; part of the model's conditioning, not the loop's.
    negative_prompt: str = ""

    def __init__(self) -> None:
        self._condition_cache: dict[str, Conditioning] = {}

    def snap(self, sigma: float | torch.Tensor) -> tuple[int, float]:
        """(DDPM index, ladder sigma) nearest to `sigma`."""
        t = snap_index(self.sigmas, sigma)
        return t, float(self.sigmas[t])

    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Encode prompts into conditioning tensors with a leading axis of len(prompts)."""

    @abstractmethod
    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        """Guided clean estimate D(noised, sigma) of the same shape as `noised` [b, c, h, w].

        `sigma` is snapped to the ladder first; guidance uses `cond.uncond` when it is not None.
        """

    @abstractmethod
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Turn field renders [b, c, h, w] into RGB images [b, 3, H, W] in [0, 1] for pictures."""

    def condition(self, prompt: str, negative_prompt: str | None = None) -> Conditioning:
        """Encode `prompt` (and the guidance branch) once; later calls return the cached result.

        The guidance branch is `negative_prompt`, else the model's own `self.negative_prompt`.
        """
        negative_prompt = self.negative_prompt if negative_prompt is None else negative_prompt
        key = f"{prompt}\x00{negative_prompt}"
        if key not in self._condition_cache:
            use_guidance = self.guidance_scale != 1.0
            texts = [prompt, negative_prompt] if use_guidance else [prompt]
            encoded = self.encode_prompts(texts)
            uncond = encoded[1:2] if use_guidance else None
            self._condition_cache[key] = Conditioning(prompt, encoded[0:1], uncond)
        return self._condition_cache[key]
