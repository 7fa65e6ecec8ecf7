"""DeepFloydDenoiser on tiny random IF stage-I pipelines, against diffusers' own IF arithmetic."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, IFPipeline
from pydantic import ValidationError

from sjc_dsds.deepfloyd import (
    DEFAULT_MODEL_ID,
    DeepFloydConfig,
    DeepFloydDenoiser,
    DeepFloydParts,
    check_stage_one,
    weight_dtype,
    weights_variant,
)
from sjc_dsds.errors import ConfigError, MissingModelError
from sjc_dsds.prompts import text_token_counter
from sjc_dsds.random_models import build_tiny_if
from sjc_dsds.sample2d import sample, sampling_indices

CPU = torch.device("cpu")
PROMPT = "a photo of the bun"


@pytest.fixture(scope="module")
def tiny_if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny epsilon-prediction IF stage I (3x64x64 pixels, 6 output channels)."""
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if"))


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def model_dir(
    request: pytest.FixtureRequest, tiny_if_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny epsilon model, then a tiny v-prediction one."""
    if request.param == "epsilon":
        return tiny_if_dir
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if_v"), prediction_type="v_prediction")


def _pipeline(folder: Path) -> IFPipeline:
    pipeline = IFPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _denoiser(folder: Path, scale: float, negative_prompt: str = "") -> DeepFloydDenoiser:
    cfg = DeepFloydConfig(model_id=str(folder), scale=scale, negative_prompt=negative_prompt)
    return DeepFloydDenoiser.from_config(cfg, CPU)


def _oracle_clean_estimate(
    pipeline: IFPipeline, clean: torch.Tensor, noise: torch.Tensor, t: int, scale: float
) -> torch.Tensor:
    """diffusers' arithmetic: add_noise at t, UNet per branch, IF's guidance split, DDPM step()."""
    scheduler = DDPMScheduler.from_config(
        pipeline.scheduler.config, clip_sample=False, thresholding=False
    )
    scheduler.set_timesteps(1000)
    batch = clean.shape[0]
    noised_vp = scheduler.add_noise(clean, noise, torch.full((batch,), t))
    embeds, negative = pipeline.encode_prompt(PROMPT, True, 1, CPU, negative_prompt="")
    with torch.no_grad():
        out_cond = pipeline.unet(noised_vp, t, embeds.expand(batch, -1, -1)).sample
        output = out_cond
        if scale != 1.0:
            out_uncond = pipeline.unet(noised_vp, t, negative.expand(batch, -1, -1)).sample
            eps = out_uncond[:, :3] + scale * (out_cond[:, :3] - out_uncond[:, :3])
            output = torch.cat([eps, out_cond[:, 3:]], dim=1)  # IFPipeline keeps cond variance
    step = scheduler.step(output, t, noised_vp, generator=torch.Generator().manual_seed(0))
    return step.pred_original_sample


@pytest.mark.parametrize("scale", [1.0, 7.5, 20.0])
@pytest.mark.parametrize("side", [64, 32])
def test_denoise_equals_diffusers_pred_original_sample(
    model_dir: Path, scale: float, side: int
) -> None:
    pipeline = _pipeline(model_dir)
    model = _denoiser(model_dir, scale)
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 3, side, side, generator=generator) * 2 - 1
    noise = torch.randn(2, 3, side, side, generator=generator)
    for t in (10, 400, 969):
        sigma = float(model.sigmas[t])
        ours = model.denoise(clean + sigma * noise, sigma, model.condition(PROMPT))
        expected = _oracle_clean_estimate(pipeline, clean, noise, t, scale)
        # float32 vs the scheduler's float32 sqrt(abar) path; measured <= 2e-5 of the range.
        tolerance = 1e-4 * max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(ours, expected, rtol=0, atol=tolerance)


def test_guided_denoise_is_uncond_plus_scale_times_difference(tiny_if_dir: Path) -> None:
    guided, plain = _denoiser(tiny_if_dir, 20.0), _denoiser(tiny_if_dir, 1.0)
    cond = guided.condition(PROMPT)
    uncond_only = type(cond)("", cond.uncond, None)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 3.0
    sigma = float(guided.sigmas[500])
    d_cond = plain.denoise(x, sigma, type(cond)(PROMPT, cond.cond, None))
    d_uncond = plain.denoise(x, sigma, uncond_only)
    expected = d_uncond + 20.0 * (d_cond - d_uncond)  # D is affine in eps at fixed (x, sigma)
    torch.testing.assert_close(guided.denoise(x, sigma, cond), expected, rtol=0, atol=1e-4)


def _cosine_ladder() -> torch.Tensor:
    """IF's squaredcos_cap_v2 betas by hand (Nichol & Dhariwal's cosine, beta <= 0.999)."""

    def abar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / 1000) / abar(i / 1000), 0.999) for i in range(1000)]
    alphas_cumprod = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def test_sigmas_follow_the_cosine_schedule_and_data_shape_is_64_pixels(tiny_if_dir: Path) -> None:
    model = _denoiser(tiny_if_dir, 20.0)
    # The scheduler's betas and cumprod are float32: 1 - abar cancels near t = 0 (measured
    # 2.6e-4 relative at t = 0), while the noisy end agrees to float32 precision.
    torch.testing.assert_close(model.sigmas, _cosine_ladder(), rtol=1e-3, atol=0)
    torch.testing.assert_close(model.sigmas[100:], _cosine_ladder()[100:], rtol=1e-5, atol=0)
    reference = DDPMScheduler.from_pretrained(tiny_if_dir, subfolder="scheduler").alphas_cumprod
    torch.testing.assert_close(
        model.sigmas, ((1 - reference.double()) / reference.double()).sqrt(), rtol=0, atol=0
    )
    assert model.data_shape == (3, 64, 64) and model.dtype == torch.float32
    # Not SD's scaled_linear ladder (0.029 .. 14.6): the cosine schedule reaches ~2e4 at t = 999.
    assert float(model.sigmas[-1]) > 1e4 and float(model.sigmas[969]) == pytest.approx(21.4, 0.01)


def test_encode_prompts_matches_if_pipeline_encode_prompt(tiny_if_dir: Path) -> None:
    pipeline, model = _pipeline(tiny_if_dir), _denoiser(tiny_if_dir, 20.0)
    text = "  A Photo of the BUN "  # IFPipeline lower-cases and strips (clean_caption=False)
    expected, negative = pipeline.encode_prompt(text, True, 1, CPU, negative_prompt="a horse")
    ours = model.encode_prompts([text, "a horse"])
    assert ours.shape == (2, 77, 32)
    torch.testing.assert_close(ours[0:1], expected, rtol=0, atol=0)
    torch.testing.assert_close(ours[1:2], negative, rtol=0, atol=0)


def test_negative_prompt_lives_in_the_model_and_is_encoded_once(
    tiny_if_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _denoiser(tiny_if_dir, 20.0, negative_prompt="a horse")
    calls: list[list[str]] = []
    encode = model.encode_prompts
    monkeypatch.setattr(model, "encode_prompts", lambda texts: calls.append(texts) or encode(texts))
    first = model.condition(PROMPT)
    assert model.condition(PROMPT) is first and calls == [[PROMPT, "a horse"]]
    torch.testing.assert_close(first.uncond, encode(["a horse"]), rtol=0, atol=0)
    # The old call style (the step passing its own negative prompt) still wins when given.
    explicit = model.condition(PROMPT, "")
    assert calls[-1] == [PROMPT, ""] and not torch.equal(explicit.uncond, first.uncond)


def _pipeline_sample(folder: Path, heun: bool, indices: list[int], seed: int) -> torch.Tensor:
    """IFPipeline's own loop with Karras Euler/Heun from IF's scheduler config (no DDPM)."""
    pipeline = _pipeline(folder)
    kind = HeunDiscreteScheduler if heun else EulerDiscreteScheduler
    # "trailing": initial noise sigma_max * n as in SJC; no clip_sample (IF's config clips x0 to
    # 1.5, which Heun would apply); fixed_small: the pipeline drops the learned-variance channels
    # before step(), as SJC ignores them.
    scheduler = kind.from_config(
        pipeline.scheduler.config, timestep_spacing="trailing", clip_sample=False
    )
    scheduler.register_to_config(variance_type="fixed_small")
    pipeline.scheduler = scheduler
    return pipeline(
        PROMPT,
        timesteps=indices,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        clean_caption=False,
    ).images


@pytest.mark.parametrize("heun", [False, True], ids=["euler", "heun"])
def test_sampler_reproduces_if_pipeline_with_karras_steps(model_dir: Path, heun: bool) -> None:
    model = _denoiser(model_dir, 7.5)
    indices = sampling_indices(model.sigmas, 8)
    ours = sample(
        model, model.condition(PROMPT), indices, torch.Generator().manual_seed(5), heun=heun
    )
    expected = _pipeline_sample(model_dir, heun, indices, seed=5)
    assert expected.shape == ours.shape == (1, 3, 64, 64)
    # Same steps in float32 from sigma_max = 2.0e4, where x - D cancels: round-off of order
    # sigma_max * 2^-23 = 2.4e-3 per step. Measured worst 4.4e-5 of the largest value (v, Heun);
    # a wrong index, scaling or guidance is off by O(1).
    tolerance = 1e-4 * float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=0, atol=tolerance)


def test_decode_clamps_pixels_into_unit_range(tiny_if_dir: Path) -> None:
    model = _denoiser(tiny_if_dir, 20.0)
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0]).reshape(1, 3, 1, 2)
    expected = torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]).reshape(1, 3, 1, 2)
    torch.testing.assert_close(model.decode(x), expected, rtol=0, atol=0)


def test_denoise_rejects_a_wrong_channel_count(tiny_if_dir: Path) -> None:
    model = _denoiser(tiny_if_dir, 20.0)
    with pytest.raises(ValueError, match=r"\[b, 3, h, w\]"):
        model.denoise(torch.zeros(1, 4, 64, 64), 1.0, model.condition(PROMPT))


def test_fp16_weight_files_load_from_a_local_folder(tiny_if_dir: Path, tmp_path: Path) -> None:
    _pipeline(tiny_if_dir).save_pretrained(tmp_path / "fp16", variant="fp16")
    assert weights_variant(str(tmp_path / "fp16")) == "fp16"
    assert weights_variant(str(tiny_if_dir)) is None and weights_variant(DEFAULT_MODEL_ID) == "fp16"
    full, half = _denoiser(tiny_if_dir, 20.0), _denoiser(tmp_path / "fp16", 20.0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    sigma = float(full.sigmas[300])
    # Same weights (saved fp32, read back fp32): identical outputs.
    torch.testing.assert_close(
        half.denoise(x, sigma, half.condition(PROMPT)),
        full.denoise(x, sigma, full.condition(PROMPT)),
        rtol=0,
        atol=0,
    )


def test_precision_is_fp32_on_cpu_and_the_setting_on_cuda() -> None:
    assert weight_dtype("fp16", CPU) == torch.float32
    assert weight_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    assert weight_dtype("fp16", torch.device("cuda")) == torch.float16
    assert weight_dtype("fp32", torch.device("cuda")) == torch.float32


def test_config_defaults_and_bounds() -> None:
    cfg = DeepFloydConfig()
    assert (cfg.model_id, cfg.scale, cfg.precision, cfg.negative_prompt, cfg.revision) == (
        "DeepFloyd/IF-I-XL-v1.0",
        20.0,
        "fp16",
        "",
        None,
    )
    with pytest.raises(ValidationError):
        DeepFloydConfig(precision="autocast")
    with pytest.raises(ValidationError):
        DeepFloydConfig(scale=-1)
    with pytest.raises(ValidationError):
        DeepFloydConfig(variant="v1")


def test_not_a_stage_one_unet_is_a_config_error() -> None:
    def parts(in_channels: int, out_channels: int, prediction_type: str) -> DeepFloydParts:
        unet = SimpleNamespace(config=SimpleNamespace(in_channels=in_channels, out_channels=6))
        unet.config.out_channels = out_channels
        scheduler = SimpleNamespace(config=SimpleNamespace(prediction_type=prediction_type))
        return DeepFloydParts(unet, None, None, scheduler)

    assert check_stage_one(parts(3, 6, "v_prediction"), "x") == "v_prediction"
    with pytest.raises(ConfigError, match=r"--deepfloyd\.model_id sd: not an IF stage-I UNet"):
        check_stage_one(parts(4, 4, "epsilon"), "sd")
    with pytest.raises(ConfigError, match=r"prediction_type 'sample'.*epsilon, v_prediction"):
        check_stage_one(parts(3, 6, "sample"), "x")


def test_missing_default_model_names_download_flag_and_licence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingModelError) as caught:
        DeepFloydDenoiser.from_config(DeepFloydConfig(), CPU)
    message = str(caught.value)
    assert "\n" not in message
    assert f"'{DEFAULT_MODEL_ID}'" in message and f"`hf download {DEFAULT_MODEL_ID} " in message
    assert '--include "unet/*.fp16.safetensors"' in message
    assert "--deepfloyd.model_id" in message and "HF_HUB_OFFLINE" in message
    assert "gated behind a licence on the Hugging Face Hub" in message
    assert "accept it" in message and "`hf auth login`" in message


def test_missing_hub_id_offline_and_missing_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = DeepFloydConfig(model_id="nobody/no-such-if-model")
    with pytest.raises(MissingModelError, match=r"'nobody/no-such-if-model'.*offline.*licence"):
        DeepFloydDenoiser.from_config(cfg, CPU)
    folder = DeepFloydConfig(model_id=str(tmp_path / "no_such_if"))
    with pytest.raises(MissingModelError, match=r"no_such_if.*no such path.*--deepfloyd\.model_id"):
        DeepFloydDenoiser.from_config(folder, CPU)


def test_folder_without_unet_weights_is_a_missing_model(tiny_if_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_if_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingModelError, match=r"broken.*--deepfloyd\.model_id"):
        _denoiser(broken, 20.0)


def test_prompt_fitting_sees_ifs_77_token_limit(tiny_if_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "t5_512"
    shutil.copytree(tiny_if_dir, folder)
    config_path = folder / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model_max_length": 512}))  # T5's own limit
    model = _denoiser(folder, 20.0)
    count, limit = text_token_counter(model)
    assert limit == 77 and count("a photo of the bun") == 6  # 5 pieces + </s>
    assert model.encode_prompts([" ".join(["bun"] * 100)]).shape == (1, 77, 32)


def test_off_ladder_sigma_snaps_to_the_nearest_tick(tiny_if_dir: Path) -> None:
    model = _denoiser(tiny_if_dir, 20.0)
    cond = model.condition(PROMPT)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2.0
    low, high = float(model.sigmas[600]), float(model.sigmas[601])
    assert model.snap(low + 0.4 * (high - low)) == (600, low)
    # D = z - sigma_t eps(z / sqrt(1 + sigma_t^2), t) with the snapped sigma_t everywhere.
    torch.testing.assert_close(
        model.denoise(x, low + 0.4 * (high - low), cond),
        model.denoise(x, low, cond),
        rtol=0,
        atol=0,
    )
