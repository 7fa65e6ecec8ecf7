"""StableDiffusionDenoiser on tiny random SDs, against diffusers' own pipeline and schedulers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from sjc_dsds.config import SDConfig
from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.score import Conditioning, sigmas_from_alphas_cumprod
from sjc_dsds.stable_diffusion import (
    DEFAULT_MODEL_IDS,
    StableDiffusionDenoiser,
    load_stable_diffusion,
    precision_dtypes,
    uses_channels_last,
)

CPU = torch.device("cpu")
PROMPT = "a photo of the bun"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _pipeline(folder: Path) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    """The tiny epsilon model, then the tiny v-prediction model."""
    name = "tiny_sd_dir" if request.param == "epsilon" else "tiny_sd_v_dir"
    return request.getfixturevalue(name)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> StableDiffusionPipeline:
    """diffusers' own pipeline on the same folder: the oracle's UNet, text encoder and VAE."""
    return _pipeline(model_dir)


def _denoiser(folder: Path, scale: float) -> StableDiffusionDenoiser:
    return StableDiffusionDenoiser.from_config(SDConfig(model_id=str(folder), scale=scale), CPU)


def _oracle_clean_estimate(
    pipeline: StableDiffusionPipeline,
    clean: torch.Tensor,
    noise: torch.Tensor,
    t: int,
    scale: float,
) -> torch.Tensor:
    """diffusers' arithmetic: add_noise at t, one UNet call per branch, pipeline CFG, step()."""
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(1000)
    timesteps = torch.full((clean.shape[0],), t)
    noised_vp = scheduler.add_noise(clean, noise, timesteps)
    embeds, negative = pipeline.encode_prompt(PROMPT, CPU, 1, True, negative_prompt="")
    batch = clean.shape[0]
    with torch.no_grad():
        out_cond = pipeline.unet(noised_vp, t, embeds.expand(batch, -1, -1)).sample
        if scale == 1.0:
            output = out_cond
        else:
            out_uncond = pipeline.unet(noised_vp, t, negative.expand(batch, -1, -1)).sample
            output = out_uncond + scale * (out_cond - out_uncond)
    return scheduler.step(output, t, noised_vp).pred_original_sample


@pytest.mark.parametrize("scale", [1.0, 7.5, 100.0])
@pytest.mark.parametrize("side", [32, 16])
def test_denoise_equals_diffusers_pred_original_sample(
    model_dir: Path, reference: StableDiffusionPipeline, scale: float, side: int
) -> None:
    denoiser = _denoiser(model_dir, scale)
    cond = denoiser.condition(PROMPT)
    generator = torch.Generator().manual_seed(side)
    clean = torch.randn(2, 4, side, side, generator=generator)
    noise = torch.randn(2, 4, side, side, generator=generator)
    for t in (10, 400, 969):
        sigma = float(denoiser.sigmas[t])
        denoised = denoiser.denoise(clean + sigma * noise, sigma, cond)
        expected = _oracle_clean_estimate(reference, clean, noise, t, scale)
        # Same float32 UNet; the two paths differ by VE vs VP input rounding (~1e-7 relative),
        # amplified by sigma * scale in D = z - sigma eps (up to 12.2 * 100 here).
        tolerance = 2e-6 * sigma * scale + 1e-5
        torch.testing.assert_close(denoised, expected, rtol=0, atol=tolerance)


def test_off_ladder_sigma_snaps_to_nearest_tick(tiny_sd_dir: Path) -> None:
    denoiser = _denoiser(tiny_sd_dir, 7.5)
    cond = denoiser.condition(PROMPT)
    noised = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    on_tick = float(denoiser.sigmas[600])
    nudged = on_tick + 0.2 * float(denoiser.sigmas[601] - denoiser.sigmas[600])
    assert torch.equal(
        denoiser.denoise(noised, nudged, cond), denoiser.denoise(noised, on_tick, cond)
    )


def test_guidance_scale_one_is_the_conditional_branch_alone(model_dir: Path) -> None:
    denoiser = _denoiser(model_dir, 1.0)
    cond = denoiser.condition(PROMPT)
    assert cond.uncond is None
    with_uncond = Conditioning(PROMPT, cond.cond, denoiser.encode_prompts([""]))
    noised = 3 * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    sigma = float(denoiser.sigmas[500])
    assert torch.equal(
        denoiser.denoise(noised, sigma, with_uncond), denoiser.denoise(noised, sigma, cond)
    )


def test_guided_denoise_is_uncond_plus_scale_times_difference(model_dir: Path) -> None:
    guided = _denoiser(model_dir, 100.0)
    single = _denoiser(model_dir, 1.0)
    cond = guided.condition(PROMPT)
    noised = 3 * torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    sigma = float(guided.sigmas[700])
    denoised_cond = single.denoise(noised, sigma, Conditioning(PROMPT, cond.cond, None))
    denoised_uncond = single.denoise(noised, sigma, Conditioning("", cond.uncond, None))
    expected = denoised_uncond + 100.0 * (denoised_cond - denoised_uncond)
    # D is affine in eps, so the identity is exact up to batched-vs-single float32 UNet rounding
    # (~1e-6 relative on eps), amplified by sigma * scale = 5.1 * 100.
    torch.testing.assert_close(guided.denoise(noised, sigma, cond), expected, rtol=0, atol=1e-3)


def test_sigmas_and_data_shape_come_from_the_model(tiny_sd_dir: Path) -> None:
    denoiser = _denoiser(tiny_sd_dir, 100.0)
    scheduler = DDPMScheduler.from_pretrained(tiny_sd_dir, subfolder="scheduler")
    assert torch.equal(denoiser.sigmas, sigmas_from_alphas_cumprod(scheduler.alphas_cumprod))
    assert float(denoiser.sigmas[-1]) == pytest.approx(14.6146, rel=1e-5)  # docs/method.md A.1
    assert float(denoiser.sigmas[0]) == pytest.approx(0.029167, rel=2e-5)
    assert denoiser.data_shape == (4, 32, 32)
    assert denoiser.guidance_scale == 100.0 and denoiser.prediction_type == "epsilon"


def test_encode_prompts_matches_pipeline_text_embeddings(
    model_dir: Path, reference: StableDiffusionPipeline
) -> None:
    denoiser = _denoiser(model_dir, 7.5)
    embeddings = denoiser.encode_prompts([PROMPT, ""])
    expected, negative = reference.encode_prompt(PROMPT, CPU, 1, True, negative_prompt="")
    assert embeddings.shape == (2, 77, 32)
    torch.testing.assert_close(embeddings, torch.cat([expected, negative]))


def test_decode_divides_by_the_sd_latent_scale(
    tiny_sd_dir: Path, reference: StableDiffusionPipeline
) -> None:
    denoiser = _denoiser(tiny_sd_dir, 7.5)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    images = denoiser.decode(latents)
    # The tiny VAE has two blocks, so it upsamples by 2 (SD's four blocks give 8).
    assert images.shape == (2, 3, 32, 32)
    assert reference.vae.config.scaling_factor == 0.18215  # SD 1.x/2.x, docs/method.md A.2
    with torch.no_grad():
        expected = reference.vae.decode(latents / 0.18215).sample
    torch.testing.assert_close(images, (expected / 2 + 0.5).clamp(0, 1))
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_condition_is_cached_per_prompt(tiny_sd_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    denoiser = _denoiser(tiny_sd_dir, 100.0)
    calls: list[list[str]] = []
    encode = denoiser.encode_prompts
    monkeypatch.setattr(
        denoiser, "encode_prompts", lambda texts: calls.append(texts) or encode(texts)
    )
    for _ in range(3):
        denoiser.condition("front view of " + PROMPT)
        denoiser.condition("side view of " + PROMPT)
    assert calls == [["front view of " + PROMPT, ""], ["side view of " + PROMPT, ""]]


def test_attention_runs_through_pytorch_sdpa(tiny_sd_dir: Path) -> None:
    denoiser = _denoiser(tiny_sd_dir, 7.5)
    for module in (denoiser.unet, denoiser.vae):
        processors = module.attn_processors.values()
        assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)


def test_precision_flag_maps_to_dtypes() -> None:
    cuda = torch.device("cuda")
    assert precision_dtypes("fp16", CPU) == (torch.float32, None)  # CPU always fp32
    assert precision_dtypes("autocast", CPU) == (torch.float32, None)
    assert precision_dtypes("autocast", cuda) == (torch.float32, torch.float16)
    assert precision_dtypes("fp32", cuda) == (torch.float32, None)
    assert precision_dtypes("fp16", cuda) == (torch.float16, None)
    assert precision_dtypes("bf16", cuda) == (torch.bfloat16, None)


def test_default_precision_stores_fp16_weights_on_cuda_and_autocast_keeps_sjc() -> None:
    cuda = torch.device("cuda")
    default = SDConfig().precision
    assert precision_dtypes(default, cuda) == (torch.float16, None)
    assert precision_dtypes(default, CPU) == (torch.float32, None)
    assert uses_channels_last(cuda) and not uses_channels_last(CPU)


def test_weight_dtype_reaches_unet_vae_and_text_encoder(tiny_sd_dir: Path) -> None:
    parts = load_stable_diffusion(str(tiny_sd_dir), torch.float16)
    for module in (parts.unet, parts.vae, parts.text_encoder):
        assert {p.dtype for p in module.parameters()} == {torch.float16}, type(module).__name__


def test_denoise_rejects_a_wrong_channel_count(tiny_sd_dir: Path) -> None:
    denoiser = _denoiser(tiny_sd_dir, 7.5)
    with pytest.raises(ValueError, match=r"\[b, 4, h, w\], got \[1, 3, 32, 32\]"):
        denoiser.denoise(torch.zeros(1, 3, 32, 32), 1.0, denoiser.condition(PROMPT))


def test_unsupported_prediction_type_is_a_config_error(tiny_sd_dir: Path) -> None:
    parts = load_stable_diffusion(str(tiny_sd_dir), torch.float32)
    sample_scheduler = DDPMScheduler.from_config(parts.scheduler.config, prediction_type="sample")
    with pytest.raises(ConfigError, match="--sd.model_id .*'sample'.*epsilon, v_prediction"):
        StableDiffusionDenoiser(parts._replace(scheduler=sample_scheduler), 7.5, CPU)


def test_default_model_ids_per_variant() -> None:
    assert DEFAULT_MODEL_IDS["v1"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # decision 6
    assert set(DEFAULT_MODEL_IDS) == {"v1", "v2", "v2_highres"}


@pytest.mark.parametrize("variant", ["v1", "v2", "v2_highres"])
def test_missing_default_model_fails_fast_offline_naming_id_command_and_flag(
    variant: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An empty cache: the default ids cannot resolve even if this machine has them cached.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = SDConfig(variant="v1" if variant == "v1" else "v2", v2_highres=variant == "v2_highres")
    start = time.perf_counter()
    with pytest.raises(MissingModelError) as caught:
        StableDiffusionDenoiser.from_config(cfg, CPU)
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    model_id = DEFAULT_MODEL_IDS[variant]
    assert "\n" not in message
    assert f"'{model_id}'" in message and f"`hf download {model_id} " in message
    assert "--sd.model_id" in message and "HF_HUB_OFFLINE" in message
    # No weights are read: the scheduler config is looked up first (a hang guard, not a benchmark).
    assert elapsed < 5.0


def test_nonexistent_local_folder_fails_naming_path_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(MissingModelError, match=r"no_such_model.*no such path.*--sd\.model_id"):
        StableDiffusionDenoiser.from_config(SDConfig(model_id=str(missing)), CPU)


def _cache_configs(cache: Path, repo_id: str, source: Path) -> Path:
    """Put the JSON/text files of `source` into a fake Hugging Face cache as `repo_id`."""
    revision = "1" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    for path in source.rglob("*"):
        if path.suffix in (".json", ".txt"):
            (snapshot / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, snapshot / path.relative_to(source))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_single_file_goes_through_diffusers_single_file_loader_with_cached_configs(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = _cache_configs(tmp_path / "cache", DEFAULT_MODEL_IDS["v2_highres"], tiny_sd_dir)
    # A real SD checkpoint is gigabytes; the tiny pipeline stands in for what diffusers returns.
    checkpoint = tmp_path / "768-v-ema.safetensors"
    checkpoint.write_bytes(b"")
    calls: list[tuple[str, dict]] = []

    def fake_from_single_file(path: str, **kwargs: object) -> StableDiffusionPipeline:
        calls.append((path, kwargs))
        return _pipeline(tiny_sd_dir)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", fake_from_single_file)
    cfg = SDConfig(variant="v2", v2_highres=True, model_id=str(checkpoint))
    denoiser = StableDiffusionDenoiser.from_config(cfg, CPU)
    ((path, kwargs),) = calls
    assert path == str(checkpoint)
    # The configs come from the variant's default repository, found in the cache offline.
    assert Path(str(kwargs["config"])) == snapshot
    assert kwargs["torch_dtype"] == torch.float32 and kwargs["local_files_only"] is True
    assert "trust_remote_code" not in kwargs
    assert denoiser.data_shape == (4, 32, 32)


def test_single_file_without_cached_configs_names_the_config_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "sd-v1-5.ckpt"
    checkpoint.write_bytes(b"")
    with pytest.raises(MissingModelError) as caught:
        StableDiffusionDenoiser.from_config(SDConfig(model_id=str(checkpoint)), CPU)
    message = str(caught.value)
    assert "\n" not in message and "'stable-diffusion-v1-5/stable-diffusion-v1-5'" in message
    assert '`hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "*.json"' in message


def test_single_file_that_is_not_sd_is_a_config_error(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    # Goes through diffusers' real single-file loader, which finds no SD weights in the file.
    checkpoint = tmp_path / "not_sd.safetensors"
    save_file({"something": torch.zeros(2)}, str(checkpoint))
    with pytest.raises(ConfigError, match=r"--sd\.model_id .*not_sd\.safetensors: not a Stable"):
        load_stable_diffusion(str(checkpoint), torch.float32, config_id=str(tiny_sd_dir))


def test_missing_single_file_fails_naming_path_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "sd-v1-5.ckpt"
    with pytest.raises(MissingModelError, match=r"sd-v1-5\.ckpt.*--sd\.model_id"):
        StableDiffusionDenoiser.from_config(SDConfig(model_id=str(missing)), CPU)


@requires_cuda
@pytest.mark.parametrize("precision", ["autocast", "fp16", "bf16"])
def test_half_precision_on_cuda_stays_close_to_fp32(tiny_sd_dir: Path, precision: str) -> None:
    cuda = torch.device("cuda")
    exact = _denoiser(tiny_sd_dir, 7.5)
    half = StableDiffusionDenoiser.from_config(
        SDConfig(model_id=str(tiny_sd_dir), scale=7.5, precision=precision), cuda
    )
    noised = 3 * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    sigma = float(exact.sigmas[500])
    expected = exact.denoise(noised, sigma, exact.condition(PROMPT))
    got = half.denoise(noised.to(cuda), sigma, half.condition(PROMPT)).cpu()
    assert got.dtype == torch.float32
    # bf16 keeps 8 mantissa bits (~4e-3 relative); errors grow through the UNet and by sigma * s.
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) < 0.05 * scale
