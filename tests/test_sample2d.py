"""The 2D Karras sampler against diffusers' StableDiffusionPipeline with Euler/Heun schedulers."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler, StableDiffusionPipeline

from sjc_dsds.config import SDConfig
from sjc_dsds.sample2d import karras_sigmas, main, sample, sampling_indices
from sjc_dsds.score import sigmas_from_alphas_cumprod
from sjc_dsds.stable_diffusion import StableDiffusionDenoiser

CPU = torch.device("cpu")
PROMPT = "a photo of the bun"
SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def ladder() -> torch.Tensor:
    return sigmas_from_alphas_cumprod(EulerDiscreteScheduler(**SCHEDULE).alphas_cumprod)


def test_karras_sigmas_match_diffusers_karras_schedule(ladder: torch.Tensor) -> None:
    scheduler = EulerDiscreteScheduler(**SCHEDULE, use_karras_sigmas=True)
    scheduler.set_timesteps(12)
    ours = karras_sigmas(float(ladder[0]), float(ladder[-1]), 12)
    # diffusers keeps its sigmas in float32.
    torch.testing.assert_close(
        torch.tensor(ours, dtype=torch.float64), scheduler.sigmas[:-1].double(), rtol=1e-6, atol=0
    )


def test_sampling_indices_snap_descend_and_drop_repeats(ladder: torch.Tensor) -> None:
    indices = sampling_indices(ladder, 200)
    assert indices[0] == 999 and indices[-1] == 0
    assert all(a > b for a, b in zip(indices, indices[1:]))
    # 200 Karras levels crowd the low-noise end, where ticks are 0.003 apart: repeats are dropped.
    assert len(indices) < 200
    snapped = {int((ladder - s).abs().argmin()) for s in karras_sigmas(0.029167, 14.6146, 200)}
    assert set(indices) == snapped


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    name = "tiny_sd_dir" if request.param == "epsilon" else "tiny_sd_v_dir"
    return request.getfixturevalue(name)


def _pipeline_latents(folder: Path, heun: bool, indices: list[int], seed: int) -> torch.Tensor:
    """diffusers' pipeline with the same timesteps, seed and guidance (7.5, eps_u + s(...))."""
    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    kind = HeunDiscreteScheduler if heun else EulerDiscreteScheduler
    # "trailing" makes the initial noise sigma_max * n, as in SJC (leading uses sqrt(1 + s^2)).
    pipeline.scheduler = kind.from_config(pipeline.scheduler.config, timestep_spacing="trailing")
    return pipeline(
        PROMPT,
        timesteps=indices,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed),
        height=64,
        width=64,
        output_type="latent",
    ).images


@pytest.mark.parametrize("heun", [False, True], ids=["euler", "heun"])
def test_sampler_reproduces_stable_diffusion_pipeline(model_dir: Path, heun: bool) -> None:
    model = StableDiffusionDenoiser.from_config(SDConfig(model_id=str(model_dir), scale=7.5), CPU)
    indices = sampling_indices(model.sigmas, 8)
    ours = sample(
        model, model.condition(PROMPT), indices, torch.Generator().manual_seed(5), heun=heun
    )
    expected = _pipeline_latents(model_dir, heun, indices, seed=5)
    # Exact same arithmetic except float32 vs float64 sigmas (~1e-7 relative) accumulated over
    # 8-15 UNet calls; measured 1.2e-6 of the largest value.
    tolerance = 1e-5 * float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=0, atol=tolerance)


def test_cli_writes_the_pipeline_image(tiny_sd_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bun.png"
    code = main(
        ["--sd.prompt", PROMPT, "--sd.model_id", str(tiny_sd_dir), "--out", str(out)]
        + ["--n_steps_sample", "6", "--sampler", "euler", "--seed", "7", "--device", "cpu"]
    )
    assert code == 0
    pixels = iio.imread(out)
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = EulerDiscreteScheduler.from_config(
        pipeline.scheduler.config, timestep_spacing="trailing"
    )
    indices = sampling_indices(sigmas_from_alphas_cumprod(pipeline.scheduler.alphas_cumprod), 6)
    expected = pipeline(
        PROMPT,
        timesteps=indices,
        guidance_scale=7.5,  # the sampler's default --sd.scale
        generator=torch.Generator().manual_seed(7),
        height=64,
        width=64,
        output_type="np",
    ).images[0]
    expected_pixels = (expected * 255).round().astype(np.uint8)
    assert pixels.shape == expected_pixels.shape == (64, 64, 3)
    # Rounding to 8 bits can flip a value sitting on a half level: at most one level apart.
    assert int(np.abs(pixels.astype(int) - expected_pixels.astype(int)).max()) <= 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sd.promt", "x"], "unknown flag --sd.promt (did you mean --sd.prompt?)"),
        (["--n_steps_sample", "0"], "--n_steps_sample must be an integer >= 1 (got '0')"),
        (["--sampler", "ddim"], "--sampler must be one of heun, euler (got 'ddim')"),
        (["--vox.grid_size", "64"], "--vox.grid_size does not apply to"),
        (["--sd.model_id", "/nonexistent/sd"], "'/nonexistent/sd' is not a readable local model"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_cli_help_lists_own_and_sd_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--n_steps_sample", "--sampler", "--sd.model_id", "--seed"):
        assert flag in text
    assert "--vox.grid_size" not in text
