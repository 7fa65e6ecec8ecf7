"""UNet-bound or not: one SJC step against the UNet's guided call alone, per precision and mode.

    python experiments/bench_step.py                                  # tiny random SD on CPU
    python experiments/bench_step.py --size sd15 --device cuda        # SD 1.5's shapes on a GPU
    python experiments/bench_step.py --size sd15 --device cuda --compile

Builds a random SD-shaped pipeline in memory (`--size sd15` has SD 1.5's shapes; nothing is saved
or reloaded), then for each `--precisions` entry and for eager (and `torch.compile`d UNet with
`--compile`) times the guided denoiser call alone on the step's inputs, then whole `sjc_step`s of
the real loop at `--grid`^3 / `--rend_hw`^2. Prints per configuration: UNet ms, step ms,
overhead = step / unet - 1, host reads per steady step (tests/sync_counter.py, when importable),
peak allocated / reserved memory; the final line is the first configuration's
`overhead=<ratio> peak_gb=<x> steps_per_s=<y>`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sjc_dsds import build_config
from sjc_dsds.optimize import RunState, sjc_step
from sjc_dsds.random_models import random_sd_pipeline
from sjc_dsds.runtime import cpu_model
from sjc_dsds.stable_diffusion import (
    StableDiffusionDenoiser,
    StableDiffusionParts,
    precision_dtypes,
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, default=100, help="voxels per side")
    parser.add_argument("--rend_hw", type=int, default=64, help="render side in pixels")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="fp16,autocast", help="comma list")
    parser.add_argument("--compile", action="store_true", help="also time a compiled UNet")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser.parse_args()


def build_model(pipeline: Any, precision: str, device: torch.device) -> StableDiffusionDenoiser:
    """The denoiser over the in-memory pipeline's modules, cast as `--sd.precision` says."""
    from diffusers import DDPMScheduler

    weights, autocast = precision_dtypes(precision, device)
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    parts = StableDiffusionParts(
        pipeline.unet.to(weights),
        pipeline.vae.to(weights),
        pipeline.text_encoder.to(weights),
        pipeline.tokenizer,
        scheduler,
    )
    return StableDiffusionDenoiser(parts, 100.0, device, autocast_dtype=autocast)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_reads_per_step(state: RunState) -> str:
    """Host reads of one steady step, counted by tests/sync_counter.py ('-' if not importable)."""
    try:
        from tests.sync_counter import HostSyncCounter
    except ImportError:
        return "-"
    with HostSyncCounter() as counter:
        sjc_step(state)
    return str(counter.total)


def time_configuration(args: argparse.Namespace, pipeline: Any, precision: str, compiled: bool):
    """(unet ms, step ms, host reads, peak allocated GiB, peak reserved GiB) of one setting."""
    device = torch.device(args.device)
    model = build_model(pipeline, precision, device)
    if compiled:
        model.unet = torch.compile(model.unet)
    flags = {"sd.precision": precision, "device": args.device, "n_steps": 10_000}
    flags |= {"vox.grid_size": args.grid, "pose.rend_hw": args.rend_hw, "log_every": 10_000}
    flags |= {"sd.model_id": "in-memory"}
    state = RunState.create(build_config(flags), model=model)
    for _ in range(args.warmup):
        sjc_step(state)
    reads = host_reads_per_step(state)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _, _, out = sjc_step(state)
    noised = out.image.detach() + 0.5 * torch.randn_like(out.image)
    cond = model.condition(state.prompts.text("front"))
    unet_times, step_times = [], []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        model.denoise(noised, 0.5, cond)
        synchronize(device)
        unet_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sjc_step(state)
        synchronize(device)
        step_times.append(time.perf_counter() - start)
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        allocated = reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    unet, step = (1000 * statistics.median(times) for times in (unet_times, step_times))
    return unet, step, reads, allocated, reserved


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print("command: python " + " ".join(sys.argv))
    print(
        f"machine: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"
    )
    print(
        f"model {args.size} (random, in memory), grid {args.grid}^3, render "
        f"{args.rend_hw}x{args.rend_hw}, device {device}, median of {args.steps} steps"
    )
    with tempfile.TemporaryDirectory() as folder:
        pipeline = random_sd_pipeline(Path(folder) / "vocab", size=args.size)
    memory = "GiB (CUDA)" if device.type == "cuda" else "GiB (process max RSS)"
    header = ["precision", "mode", "unet ms", "step ms", "overhead", "reads", "peak alloc"]
    print(" ".join(f"{name:>10s}" for name in header + ["reserved"]) + f"  memory in {memory}")
    results = []
    for precision in args.precisions.split(","):
        for compiled in (False, True) if args.compile else (False,):
            unet, step, reads, allocated, reserved = time_configuration(
                args, pipeline, precision, compiled
            )
            results.append((unet, step, allocated))
            mode = "compiled" if compiled else "eager"
            print(
                f"{precision:>10s} {mode:>10s} {unet:10.2f} {step:10.2f} "
                f"{step / unet - 1:10.3f} {reads:>10s} {allocated:10.2f} {reserved:10.2f}"
            )
    unet, step, allocated = results[0]
    print(f"overhead={step / unet - 1:.3f} peak_gb={allocated:.2f} steps_per_s={1000 / step:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
