"""Time one guided denoise call of StableDiffusionDenoiser against the bare UNet call it wraps.

    python experiments/bench_score.py                 # tiny random SD (CPU or GPU)
    python experiments/bench_score.py --full          # SD-1.5-sized UNet, random weights;
                                                      # fp32 / autocast / fp16 / bf16 on CUDA

Prints the machine, the command and a table: median milliseconds of `denoise` (one batched UNet
call on [uncond, cond] plus snapping, scaling, guidance and D = z - sigma eps) and of the bare
`unet(...)` call on the same prepared inputs, the wrapper overhead, the speed-up over fp32 and
the peak memory. Weights are random: the numbers measure cost, not quality.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch
from diffusers import DDPMScheduler

from sjc_dsds.random_models import random_sd_pipeline
from sjc_dsds.runtime import cpu_model, resolve_device
from sjc_dsds.score import Conditioning
from sjc_dsds.stable_diffusion import (
    StableDiffusionDenoiser,
    StableDiffusionParts,
    precision_dtypes,
)

SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_parts(full: bool, dtype: torch.dtype) -> tuple[StableDiffusionParts, int]:
    """Random SD components: SD-1.5's shapes (`full`) or the tests' tiny ones."""
    with tempfile.TemporaryDirectory() as folder:
        pipeline = random_sd_pipeline(Path(folder), size="sd15" if full else "tiny")
    unet, vae, text_encoder = pipeline.unet, pipeline.vae, pipeline.text_encoder
    if dtype != torch.float32:
        unet, vae, text_encoder = unet.to(dtype), vae.to(dtype), text_encoder.to(dtype)
    parts = StableDiffusionParts(
        unet, vae, text_encoder, pipeline.tokenizer, DDPMScheduler(**SCHEDULE)
    )
    return parts, pipeline.text_encoder.config.hidden_size


def median_ms(calls: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict:
    """Median wall time of each call in milliseconds, interleaved so that drift hits all alike."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for call in calls.values():  # warm-up: allocator, kernels, autotuning
        for _ in range(3):
            call()
    sync()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_precision(args: argparse.Namespace, device: torch.device, precision: str) -> dict:
    """Build a denoiser in `precision` and time denoise against the bare UNet call."""
    weights, autocast = precision_dtypes(precision, device)
    parts, text_width = build_parts(args.full, weights)
    denoiser = StableDiffusionDenoiser(parts, 100.0, device, autocast_dtype=autocast)
    side = args.side or denoiser.data_shape[1]
    generator = torch.Generator(device=device).manual_seed(0)
    text = torch.randn(2, 77, text_width, generator=generator, device=device).to(weights)
    cond = Conditioning("bench", text[1:], text[:1])
    noised = torch.randn(args.batch, 4, side, side, generator=generator, device=device)
    t, sigma = denoiser.snap(5.0)
    # What `denoise` hands the UNet: both guidance halves in one batch.
    unet_input = torch.cat([noised / (1 + sigma**2) ** 0.5] * 2).to(weights)
    unet_text = text.repeat_interleave(args.batch, dim=0)  # [uncond] * batch + [cond] * batch
    timestep = torch.tensor(t, device=device)
    mixed = torch.autocast(device.type, autocast) if autocast else contextlib.nullcontext()

    def bare() -> torch.Tensor:
        with torch.no_grad(), mixed:
            return parts.unet(unet_input, timestep, encoder_hidden_states=unet_text).sample

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = median_ms(
        {"denoise": lambda: denoiser.denoise(noised, sigma, cond), "unet": bare},
        device,
        args.repeats,
    )
    return {"precision": precision, "side": side, **times, "peak_mb": peak_memory_mb(device)}


def machine_lines(device: torch.device) -> list[str]:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return [
        f"command: python {' '.join(sys.argv)}",
        f"cpu: {cpu}; torch threads: {torch.get_num_threads()}; gpu: {gpu}",
        f"torch {torch.__version__}; diffusers {diffusers.__version__}; "
        f"python {platform.python_version()}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD-1.5-sized UNet (use a GPU).")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N].")
    parser.add_argument("--repeats", type=int, default=20, help="Timed calls per variant.")
    parser.add_argument("--batch", type=int, default=1, help="Latents per call (SJC: 1).")
    parser.add_argument("--side", type=int, default=0, help="Latent side; 0: the UNet's own.")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: default.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = ["fp32", "autocast", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    print("\n".join(machine_lines(device)))
    model = "SD-1.5-sized UNet (860M params)" if args.full else "tiny UNet (1M params)"
    print(f"model: {model}, random weights; batch {args.batch}; guidance on (2 UNet rows)")
    print()
    print("| precision | latent | denoise ms | bare UNet ms | overhead | vs fp32 | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    baseline = None
    for precision in precisions:
        row = bench_precision(args, device, precision)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        baseline = baseline or row["denoise"]
        overhead = row["denoise"] / row["unet"] - 1
        print(
            f"| {precision} | {row['side']}x{row['side']} | {row['denoise']:.2f} | "
            f"{row['unet']:.2f} | {100 * overhead:+.1f}% | {baseline / row['denoise']:.2f}x | "
            f"{row['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
