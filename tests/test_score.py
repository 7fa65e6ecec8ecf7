"""Pure score maths against diffusers' DDPMScheduler, worked values, hand arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dsds.score import (
    TRAIN_T_MAX,
    TRAIN_T_MIN,
    Conditioning,
    ScoreModel,
    denoised_from_eps,
    eps_from_v,
    guidance_combine,
    sigmas_from_alphas_cumprod,
    sjc_score,
    snap_index,
    vp_input_scale,
)


@pytest.fixture(scope="module")
def ddpm() -> DDPMScheduler:
    """SD's training schedule: 1000 scaled-linear betas from 0.00085 to 0.012."""
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def sigmas(ddpm: DDPMScheduler) -> torch.Tensor:
    return sigmas_from_alphas_cumprod(ddpm.alphas_cumprod)


def test_sigma_ladder_from_diffusers_matches_spec_test_values(sigmas: torch.Tensor) -> None:
    # Spec A.1 / E.1 item 1; the spec rounds to 5-6 significant digits, diffusers' alphas_cumprod
    # is float32 (relative error ~1e-6 after 1000 products), so compare to the printed digits.
    assert sigmas.dtype == torch.float64 and sigmas.shape == (1000,)
    assert bool((sigmas[1:] > sigmas[:-1]).all())
    expected = {0: 0.029167, 10: 0.098291, 500: 1.61828, 969: 12.2288, 970: 12.3001, 999: 14.6146}
    for t, value in expected.items():
        assert float(sigmas[t]) == pytest.approx(value, rel=2e-5), t


def test_sigma_ladder_matches_float64_scaled_linear_schedule(sigmas: torch.Tensor) -> None:
    # SJC's `linear_us`: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 in float64.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, dim=0)
    reference = ((1 - abar) / abar).sqrt()
    # diffusers keeps alphas_cumprod in float32. Worst case t = 0: 1 - abar = 8.5e-4 carries an
    # absolute error of ~6e-8 (one float32 ulp at 1), i.e. 7e-5 relative, halved by the sqrt.
    torch.testing.assert_close(sigmas, reference, rtol=5e-5, atol=0)


def test_vp_input_scale_is_sqrt_alpha_bar(ddpm: DDPMScheduler, sigmas: torch.Tensor) -> None:
    # Spec A.1: 1/sqrt(1 + sigma_t^2) = sqrt(abar_t); at t = 500 both are 0.525674.
    for t in (0, 500, 999):
        assert vp_input_scale(float(sigmas[t])) == pytest.approx(
            math.sqrt(float(ddpm.alphas_cumprod[t])), rel=1e-6
        )
    assert vp_input_scale(float(sigmas[500])) == pytest.approx(0.525674, abs=1e-6)


def test_snap_index_picks_the_nearest_tick(sigmas: torch.Tensor) -> None:
    for t in (0, 10, 500, 969, 999):
        assert snap_index(sigmas, float(sigmas[t])) == t
    # A value 30 % of the way from tick 500 to tick 501 snaps to 500, 70 % of the way to 501.
    gap = float(sigmas[501] - sigmas[500])
    assert snap_index(sigmas, float(sigmas[500]) + 0.3 * gap) == 500
    assert snap_index(sigmas, torch.tensor(float(sigmas[500]) + 0.7 * gap)) == 501
    assert snap_index(sigmas, 0.0) == 0 and snap_index(sigmas, 1e3) == 999


def test_guidance_combine_hand_values() -> None:
    eps_uncond, eps_cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    # eps_u + s (eps_c - eps_u): s = 1 -> cond; s = 0 -> uncond; s = 100 -> [1 + 200, -2 + 200].
    assert torch.equal(guidance_combine(eps_uncond, eps_cond, 1.0), eps_cond)
    assert torch.equal(guidance_combine(eps_uncond, eps_cond, 0.0), eps_uncond)
    assert torch.equal(guidance_combine(eps_uncond, eps_cond, 100.0), torch.tensor([201.0, 198.0]))


def test_eps_from_v_inverts_diffusers_get_velocity(ddpm: DDPMScheduler) -> None:
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    for t in (10, 500, 969):
        timesteps = torch.full((3,), t)
        noised_vp = ddpm.add_noise(clean, noise, timesteps)
        velocity = ddpm.get_velocity(clean, noise, timesteps)
        eps = eps_from_v(noised_vp, velocity, ddpm.alphas_cumprod[t])
        # float32 round trip of terms of size ~1: a few ulp.
        torch.testing.assert_close(eps, noise, rtol=1e-5, atol=1e-5)


def test_denoised_from_eps_recovers_clean_sample_from_true_noise(sigmas: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(1)
    clean, noise = torch.randn(2, 4, 8, 8, generator=generator).unbind(0)
    sigma = float(sigmas[700])
    noised = clean + sigma * noise  # VE perturbation, docs/method.md A.1
    torch.testing.assert_close(denoised_from_eps(noised, noise, sigma), clean)


def test_sjc_score_variance_reduction_and_sigma_weighting() -> None:
    generator = torch.Generator().manual_seed(2)
    render, noise, denoised = torch.randn(3, 4, 8, 8, generator=generator).unbind(0)
    sigma = 2.5
    noised = render + sigma * noise
    reduced = sjc_score(render, noised, denoised, sigma, variance_reduced=True)
    plain = sjc_score(render, noised, denoised, sigma, variance_reduced=False)
    # Eq. 15 minus Eq. 16 is -(z - y)/sigma = -noise (docs/method.md A.4).
    torch.testing.assert_close(plain - reduced, -noise)
    # Eq. 15 is sigma times Tweedie's score (D - z)/sigma^2 (method A.1, A.4).
    torch.testing.assert_close(plain, sigma * (denoised - noised) / sigma**2)


def test_sample_train_sigma_is_uniform_over_indices_10_to_969(sigmas: torch.Tensor) -> None:
    from sjc_dsds.score import sample_train_sigma

    generator = torch.Generator().manual_seed(3)
    draws = [sample_train_sigma(sigmas, generator) for _ in range(20000)]
    indices = torch.tensor([t for t, _ in draws], dtype=torch.float64)
    assert all(sigma == float(sigmas[t]) for t, sigma in draws)
    # 20000 draws miss one end with probability (959/960)^20000 ~ 1e-9.
    assert int(indices.min()) == TRAIN_T_MIN == 10 and int(indices.max()) == TRAIN_T_MAX == 969
    # Uniform over 960 indices: mean 489.5, std 277.1; 5 standard errors = 5 * 277.1 / sqrt(20000).
    assert float(indices.mean()) == pytest.approx(489.5, abs=5 * 277.1 / 20000**0.5)


class _CountingModel(ScoreModel):
    """A stub whose prompt encoding is a recognisable number per text."""

    def __init__(self, guidance_scale: float) -> None:
        super().__init__()
        self.guidance_scale = guidance_scale
        self.encoded: list[list[str]] = []

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        self.encoded.append(list(prompts))
        return torch.tensor([[float(len(p))] for p in prompts])

    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def test_condition_encodes_each_prompt_once_with_its_guidance_branch() -> None:
    model = _CountingModel(guidance_scale=100.0)
    first = model.condition("front view of a cat")
    again = model.condition("front view of a cat")
    model.condition("side view of a cat", negative_prompt="blurry")
    assert again is first
    assert model.encoded == [["front view of a cat", ""], ["side view of a cat", "blurry"]]
    assert first.cond.tolist() == [[19.0]] and first.uncond.tolist() == [[0.0]]


def test_condition_without_guidance_has_no_uncond_branch() -> None:
    model = _CountingModel(guidance_scale=1.0)
    cond = model.condition("a cat")
    assert cond.uncond is None and model.encoded == [["a cat"]]
