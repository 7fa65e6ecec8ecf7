"""Where the time of one SJC step goes: render / score / backward / optimiser, side by side.

    python experiments/bench_step.py                          # tiny random SD on CPU
    python experiments/bench_step.py --size sd15 --device cuda --grid 100 --rend_hw 64

Builds a random SD-shaped pipeline (no weights needed; `--size sd15` has SD 1.5's shapes), runs
`sjc_step` of the real loop for a few warm-up steps and then `--steps` timed steps, and prints the
median time of each stage, its share of the step and the peak memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from sjc_dsds import build_config
from sjc_dsds.optimize import RunState, sjc_step
from sjc_dsds.random_models import build_tiny_sd
from sjc_dsds.runtime import cpu_model

STAGES = ("time_render", "time_score", "time_backward", "time_optimizer")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, default=100, help="voxels per side")
    parser.add_argument("--rend_hw", type=int, default=64, help="render side in pixels")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="autocast")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser.parse_args()


def machine_line(device: torch.device) -> str:
    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_tiny_sd(Path(folder), size=args.size)
        cfg = build_config(
            {
                "sd.model_id": str(model_dir),
                "sd.precision": args.precision,
                "device": args.device,
                "n_steps": 10_000,
                "vox.grid_size": args.grid,
                "pose.rend_hw": args.rend_hw,
            }
        )
        state = RunState.create(cfg)
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)
        times: dict[str, list[float]] = {name: [] for name in STAGES}
        for step in range(args.warmup + args.steps):
            sjc_step(state)
            if step >= args.warmup:
                for name in STAGES:
                    times[name].append(state.timings[name] * 1000)
    medians = {name: statistics.median(values) for name, values in times.items()}
    total = sum(medians.values())
    if state.device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(state.device) / 2**20:.0f} MiB (CUDA allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS)"
    print("command: python " + " ".join(sys.argv))
    print(machine_line(state.device))
    print(
        f"model {args.size}, grid {args.grid}^3, render {args.rend_hw}x{args.rend_hw}, "
        f"device {state.device}, median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'stage':<12}{'ms':>10}{'share':>9}")
    for name in STAGES:
        share = medians[name] / total
        print(f"{name.removeprefix('time_'):<12}{medians[name]:>10.2f}{share:>9.1%}")
    print(f"{'step':<12}{total:>10.2f}{1:>9.0%}")
    print(f"peak memory: {peak}")
    print(f"step_ms={total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
