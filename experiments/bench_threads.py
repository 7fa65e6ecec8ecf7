"""SJC toy step at 1 vs 2 torch threads, on a quiet CPU and next to a busy process, side by side.

    python experiments/bench_threads.py                  # about 3-4 minutes on a 2-core CPU
    python experiments/bench_threads.py --blocks 2 --block_steps 5   # quick look

Uses the README CPU demo's settings (toy head, 32^3 grid, 32x32 renders, FoV 60). One child
process per OpenMP wait policy (libgomp reads OMP_WAIT_POLICY when torch loads, so it cannot
change inside a process); inside each child, blocks of steps alternate 1 and 2 threads on the same
run, so both thread counts see the same field. "busy" starts one CPU-bound busy-loop process
(bounded in time) for the length of the child. Prints per-step medians and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEMO_FLAGS = {
    "family": "toy",
    "toy.scene": "head",
    "n_steps": 1000,
    "emptiness_weight": 1000,
    "vox.grid_size": 32,
    "pose.rend_hw": 32,
    "pose.train_fov_min_deg": 60,
    "pose.train_fov_max_deg": 60,
}
THREAD_COUNTS = (1, 2)
POLICIES = ("default", "PASSIVE")
BUSY_LOOP = (
    "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4, help="timed blocks per thread count")
    parser.add_argument("--block_steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the blocks")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args: argparse.Namespace) -> None:
    """Time blocks of SJC steps alternating the thread counts; print one JSON line."""
    import torch

    from sjc_dsds import build_config
    from sjc_dsds.optimize import RunState, sjc_step

    torch.set_num_threads(1)
    state = RunState.create(build_config(dict(DEMO_FLAGS)))
    for _ in range(args.warmup):
        sjc_step(state)
    per_step: dict[int, list[float]] = {n: [] for n in THREAD_COUNTS}
    for _ in range(args.blocks):
        for threads in THREAD_COUNTS:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(args.block_steps):
                sjc_step(state)
            per_step[threads].append((time.perf_counter() - start) / args.block_steps)
    print(json.dumps({str(n): values for n, values in per_step.items()}))


def run_child(args: argparse.Namespace, policy: str, busy: bool) -> dict[int, float]:
    """Median seconds per step for each thread count in one child process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, __file__, "--child", "--blocks", str(args.blocks)]
    command += ["--block_steps", str(args.block_steps), "--warmup", str(args.warmup)]
    hog = None
    if busy:  # one CPU-bound neighbour, killed when the child ends (and bounded in time anyway)
        hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, "900"])
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    values = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(n): statistics.median(times) for n, times in values.items()}


def main() -> int:
    args = parse()
    if args.child:
        child(args)
        return 0
    from sjc_dsds.runtime import cpu_model

    print("command: python " + " ".join(sys.argv))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start")
    started = time.perf_counter()
    results = {}
    for busy in (False, True):
        for policy in POLICIES:
            results[(policy, busy)] = run_child(args, policy, busy)
    print(f"load {os.getloadavg()[0]:.2f} at end; {time.perf_counter() - started:.0f} s in total")
    print("| OMP_WAIT_POLICY | neighbour | 1 thread (ms/step) | 2 threads (ms/step) | 2 / 1 |")
    print("| --- | --- | --- | --- | --- |")
    for (policy, busy), times in results.items():
        one, two = times[1] * 1000, times[2] * 1000
        neighbour = "busy loop" if busy else "none"
        print(f"| {policy} | {neighbour} | {one:.1f} | {two:.1f} | {two / one:.2f} |")
    base = results[("default", False)][1]
    for (policy, busy), times in results.items():
        for n in THREAD_COUNTS:
            label = f"{policy}_{'busy' if busy else 'quiet'}_{n}t"
            print(f"ratio_vs_quiet_1t {label}={times[n] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
