"""Exact finite-set denoiser: brute force, limits, Tweedie, guidance, SD's sigma ladder."""

from __future__ import annotations

import math

import pytest
import torch

from sjc_dsds.score import denoised_from_eps, guidance_combine
from sjc_dsds.toy.captions import Caption
from sjc_dsds.toy.denoiser import (
    ImageBank,
    ToyScoreModel,
    camera_directions,
    guided_denoised,
    posterior_mean,
    scaled_linear_sigmas,
)


def _brute_force_mean(noised, images, weights, sigma):
    """sum_i w_i N(z; x_i, sigma^2 I) x_i / sum_i w_i N(z; x_i, sigma^2 I), in float64, no logs."""
    z = noised.double()
    x = images.double()
    out = []
    for row in z:
        densities = torch.tensor(
            [
                w * math.exp(-float(((row - xi) ** 2).sum()) / (2 * sigma**2))
                for w, xi in zip(weights.tolist(), x)
            ]
        )
        out.append((densities[:, None] * x).sum(0) / densities.sum())
    return torch.stack(out)


def test_posterior_mean_equals_brute_force_weighted_gaussian_sum():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(5, 6, generator=generator) * 2 - 1
    noised = torch.randn(3, 6, generator=generator)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0], dtype=torch.float64)
    for sigma in (0.5, 1.0, 3.0):
        expected = _brute_force_mean(noised, images, weights, sigma)
        actual = posterior_mean(noised, images, weights.log(), sigma)
        # float32 images and output; the posterior itself is computed in float64.
        torch.testing.assert_close(actual.double(), expected, atol=1e-6, rtol=1e-6)


def test_posterior_mean_at_tiny_sigma_returns_nearest_image():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(8, 12, generator=generator) * 2 - 1
    noised = torch.rand(4, 12, generator=generator) * 2 - 1
    nearest = torch.cdist(noised.double(), images.double()).argmin(dim=1)
    # Without log-sum-exp, sigma = 1e-3 would underflow every exp(-d^2 / 2 sigma^2) to 0.
    actual = posterior_mean(noised, images, torch.zeros(8, dtype=torch.float64), 1e-3)
    torch.testing.assert_close(actual, images[nearest], atol=0, rtol=0)


def test_posterior_mean_at_huge_sigma_returns_weighted_mean():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(6, 10, generator=generator) * 2 - 1
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64) / 21
    sigma = 1e4
    noised = sigma * torch.randn(2, 10, generator=generator)
    expected = (weights[:, None] * images.double()).sum(0).expand(2, -1)
    actual = posterior_mean(noised, images, weights.log(), sigma)
    # Logits move by z.(x_i - x_j)/sigma^2 ~ |n| |x_i - x_j| / sigma <= ~5 * 6 / 1e4 = 3e-3,
    # so the posterior (and the mean of images in [-1, 1]) is within ~1e-2 of the prior's.
    torch.testing.assert_close(actual.double(), expected, atol=1e-2, rtol=0)


def test_denoiser_is_tweedie_score_of_the_noised_mixture():
    """(D - z) / sigma^2 equals the autograd gradient of log sum_i w_i N(z; x_i, sigma^2 I)."""
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(7, 5, generator=generator, dtype=torch.float64) * 2 - 1
    log_weights = torch.log_softmax(torch.randn(7, generator=generator, dtype=torch.float64), 0)
    sigma = 0.7
    noised = torch.randn(2, 5, generator=generator, dtype=torch.float64).requires_grad_()
    log_density = torch.logsumexp(
        log_weights - ((noised[:, None] - images[None]) ** 2).sum(-1) / (2 * sigma**2), dim=1
    )
    (gradient,) = torch.autograd.grad(log_density.sum(), noised)
    score = (posterior_mean(noised.detach(), images, log_weights, sigma) - noised) / sigma**2
    torch.testing.assert_close(score.detach(), gradient, atol=1e-10, rtol=1e-10)


def test_guided_denoised_equals_sjc_eps_guidance():
    generator = torch.Generator().manual_seed(5)
    noised, d_uncond, d_cond = torch.randn(3, 2, 3, 4, 4, generator=generator, dtype=torch.float64)
    sigma, scale = 2.5, 100.0
    eps_uncond, eps_cond = (noised - d_uncond) / sigma, (noised - d_cond) / sigma
    expected = denoised_from_eps(noised, guidance_combine(eps_uncond, eps_cond, scale), sigma)
    torch.testing.assert_close(guided_denoised(d_uncond, d_cond, scale), expected)
    # Hand-computed: D_u = 1, D_c = 2, s = 3 -> 1 + 3 * (2 - 1) = 4.
    assert float(guided_denoised(torch.tensor(1.0), torch.tensor(2.0), 3.0)) == 4.0


def test_sigma_ladder_matches_diffusers_scaled_linear_scheduler():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000
    )
    abar = scheduler.alphas_cumprod.double()
    expected = ((1 - abar) / abar).sqrt()
    sigmas = scaled_linear_sigmas()
    # diffusers builds betas and their 1000-term cumprod in float32: rounding can accumulate to
    # ~1000 * 6e-8 = 6e-5 relative (1.3e-5 observed), against our float64 ladder.
    torch.testing.assert_close(sigmas, expected, rtol=6e-5, atol=0)
    # Spec A.1 values.
    for t, value in [(0, 0.029167), (10, 0.098291), (969, 12.2288), (999, 14.6146)]:
        assert sigmas[t].item() == pytest.approx(value, rel=1e-4)


def _tiny_model(guidance_scale: float) -> ToyScoreModel:
    generator = torch.Generator().manual_seed(6)
    images = torch.rand(6, 3, 2, 2, generator=generator) * 2 - 1
    captions = [
        Caption(("smiling", "head"), None),
        Caption(("head",), "back"),
        Caption(("head",), None),
        Caption(("smiling", "head"), "front"),
        Caption(("head",), "side"),
        Caption(("ball",), None),
    ]
    return ToyScoreModel(images, captions, guidance_scale, torch.device("cpu"))


def test_toy_model_denoises_its_caption_subset_with_guidance_at_ladder_sigma():
    model = _tiny_model(guidance_scale=4.0)
    cond = model.condition("backside view of a head")
    # Captions with 'head' and no conflicting view: indices 0, 1, 2 (3 says front, 4 says side).
    assert model.subset("backside view of a head").tolist() == [0, 1, 2]
    # The unconditional branch ('') sees every image.
    assert torch.isfinite(cond.uncond[0]).all()
    generator = torch.Generator().manual_seed(7)
    noised = torch.randn(2, 3, 2, 2, generator=generator)
    t, sigma = model.snap(0.8)
    flat = model.images.flatten(1)
    ones = torch.ones(6, dtype=torch.float64)
    cond_weights = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.float64)
    d_cond = _brute_force_mean(noised.flatten(1), flat, cond_weights, sigma)
    d_uncond = _brute_force_mean(noised.flatten(1), flat, ones, sigma)
    expected = (d_uncond + 4.0 * (d_cond - d_uncond)).reshape(2, 3, 2, 2)
    actual = model.denoise(noised, 0.8, cond)
    torch.testing.assert_close(actual.double(), expected, atol=1e-5, rtol=1e-5)


def test_toy_model_without_guidance_uses_the_conditional_subset_only():
    model = _tiny_model(guidance_scale=1.0)
    cond = model.condition("a smiling head")
    assert cond.uncond is None
    generator = torch.Generator().manual_seed(8)
    noised = torch.randn(1, 3, 2, 2, generator=generator)
    _, sigma = model.snap(2.0)
    weights = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.float64)
    expected = _brute_force_mean(noised.flatten(1), model.images.flatten(1), weights, sigma)
    actual = model.denoise(noised, 2.0, cond)
    torch.testing.assert_close(actual.double().flatten(1), expected, atol=1e-5, rtol=1e-5)


def test_toy_model_rejects_wrong_shape_and_decodes_to_unit_range():
    model = _tiny_model(guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"\[b, 3, 2, 2\]"):
        model.denoise(torch.zeros(1, 3, 4, 4), 1.0, model.condition("a head"))
    decoded = model.decode(torch.tensor([-2.0, -1.0, 0.0, 1.0]))
    assert decoded.tolist() == [0.0, 0.0, 0.5, 1.0]


def test_exact_view_oracle_conditions_on_the_nearest_cameras_whatever_the_captions():
    from sjc_dsds.cameras import Camera, look_at

    azimuths = [0.0, 20.0, 90.0, 180.0, 200.0, 270.0]
    eyes = [(-math.cos(math.radians(a)), 0.2, math.sin(math.radians(a))) for a in azimuths]
    cameras = [Camera(look_at(eye), 60.0, 2, 2) for eye in eyes]
    model = _tiny_model(guidance_scale=4.0)
    model.image_directions = camera_directions(cameras)
    # A camera at azimuth 190: the two nearest are 180 and 200 (indices 3, 4), although their
    # captions say 'head' and 'side' and image 5's caption has another noun.
    query = Camera(
        look_at((-math.cos(math.radians(190)), 0.25, math.sin(math.radians(190)))), 60.0, 2, 2
    )
    cond = model.condition_near_camera(query, 2)
    assert torch.isfinite(cond.cond[0]).nonzero().flatten().tolist() == [3, 4]
    # Uniform over the chosen images; guided against the unconditional prompt (every image).
    assert torch.allclose(cond.cond[0][[3, 4]].exp(), torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.equal(cond.uncond, model.condition("").cond)
    assert model.condition_near_camera(query, 100).cond.isfinite().sum() == 6
    with pytest.raises(ValueError, match="camera of every prior image"):
        _tiny_model(guidance_scale=1.0).condition_near_camera(query, 2)


@pytest.mark.parametrize("n_kept", [3, 40])  # a narrow prompt's subset, and a wide prompt
def test_posterior_at_the_smallest_ladder_sigma_and_render_size_matches_direct_differences(
    n_kept,
):
    # The expanded |z|^2 - 2 z.x + |x|^2 must not lose the posterior where it is sharpest:
    # 32x32 RGB images, z near two images, SD's smallest sigma; oracle: float64 differences.
    generator = torch.Generator().manual_seed(9)
    images = torch.rand(48, 3 * 32 * 32, generator=generator) * 2 - 1
    sigma = float(scaled_linear_sigmas()[0])
    noised = 0.5 * (images[0] + images[1])[None] + sigma * torch.randn(1, 3072, generator=generator)
    log_prior = torch.full((48,), float("-inf"), dtype=torch.float64)
    log_prior[:n_kept] = 0.0
    differences = (noised.double() - images.double()).square().sum(1)
    expected_logits = log_prior - differences / (2 * sigma**2)
    expected = torch.log_softmax(expected_logits, dim=0).exp() @ images.double()
    actual = posterior_mean(noised, ImageBank.of(images), log_prior, sigma)
    torch.testing.assert_close(actual.double()[0], expected, atol=1e-5, rtol=1e-5)


def test_narrow_prompt_subsets_are_gathered_once_and_denoise_as_the_full_bank():
    from sjc_dsds.toy.denoiser import SUBSET_CACHE_MIN_IMAGES, SUBSET_CACHE_SIZE

    generator = torch.Generator().manual_seed(8)
    n_words = SUBSET_CACHE_SIZE + 2
    n = 5 * SUBSET_CACHE_MIN_IMAGES * n_words  # each word's subset: 1 / (5 n_words) of the bank
    images = torch.rand(n, 3, 2, 2, generator=generator) * 2 - 1
    words = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(5 * n_words)]
    captions = [Caption((words[i % len(words)], "head"), None) for i in range(n)]
    model = ToyScoreModel(images, captions, 3.0, torch.device("cpu"))
    noised = torch.randn(2, 3, 2, 2, generator=generator)
    _, sigma = model.snap(0.3)
    full = ImageBank.of(model.images.flatten(1))
    for word in range(n_words):
        cond = model.condition(f"a {words[word]} head")
        first = model.denoise(noised, 0.3, cond)
        again = model.denoise(noised, 0.3, cond)  # from the kept subset
        direct_cond = posterior_mean(noised.flatten(1), full, cond.cond[0], sigma)
        direct_uncond = posterior_mean(noised.flatten(1), full, cond.uncond[0], sigma)
        direct = guided_denoised(direct_uncond, direct_cond, 3.0).reshape(noised.shape)
        assert torch.equal(first, again)
        torch.testing.assert_close(first, direct, atol=1e-6, rtol=1e-6)
    assert len(model._subset_banks) == SUBSET_CACHE_SIZE  # the oldest were dropped
