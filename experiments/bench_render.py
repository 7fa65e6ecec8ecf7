"""Fast renderer vs the dense reference: forward + backward of one view, side by side.

    python experiments/bench_render.py                    # 1 and default threads, growth tables
    python experiments/bench_render.py --threads 1 --repeats 9 --no-growth

Times `render_view` (packed samples, empty-space skipping, early termination; the compiled
numba kernels of `render_kernels.py` when the `cpu` extra is installed) against
`render_view_dense` (SJC's dense marching, every sample evaluated) in one process, alternating
the two. One timed run is the forward pass plus the backward of the loop's two losses: the
image receiving a fixed random score and SJC's emptiness loss on the weights. Scenes:

* initial: docs/method.md A.6's initial field (raw density 0: softplus(-1) fog; features
  and background N(0, 1)): nothing can be skipped, the hardest case for the fast renderer;
* random: raw density N(0, 1) per voxel, fog of varying thickness everywhere;
* object: what the emptiness loss leaves behind late in a run, an opaque ball of radius 0.5
  (raw +5) in empty space (raw -20).

Peak memory is the growth of the peak resident set (VmHWM in /proc/self/status, reset through
/proc/self/clear_refs) during one forward + backward, each variant in a fresh subprocess.

Both variants are timed with one intra-op thread and with torch's default (both cores). On
the shared 2-core machines of this project OpenMP barriers stall whenever another process
holds a core (a 10 ms render took 300 ms with two threads), so the multi-thread rows time the
machine's load as much as the renderers; the one-thread rows are the robust comparison. The
final line is the issue's setting (initial scene) with torch's default thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from sjc_dsds.cameras import Camera, sample_train_views
from sjc_dsds.config import PoseConfig, SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.render import RenderOutput, render_view
from sjc_dsds.render_reference import render_view_dense
from sjc_dsds.runtime import cpu_model

RENDERERS: dict[str, Callable[[VoxelRadianceField, Camera], RenderOutput]] = {
    "fast": render_view,
    "dense": render_view_dense,
}
SCENES = ("initial", "random", "object")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", default="1,0", help="comma list of torch CPU thread counts (0: default)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--grid", type=int, default=100, help="voxels per side (main table)")
    parser.add_argument("--rend_hw", type=int, default=64, help="image side (main table)")
    parser.add_argument("--no-growth", action="store_true", help="skip the growth tables")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory probes")
    parser.add_argument(
        "--no-busy", action="store_true", help="skip the 1 vs 2 threads table beside a busy core"
    )
    parser.add_argument("--memory-probe", nargs=4, metavar=("RENDERER", "SCENE", "GRID", "HW"))
    return parser.parse_args()


def build_scene(scene: str, grid: int, rend_hw: int) -> tuple[VoxelRadianceField, list[Camera]]:
    """The field of a scene (seeded) and four SJC training cameras of side `rend_hw`."""
    cfg = SJCConfig()
    cfg.vox.grid_size = grid
    generator = torch.Generator().manual_seed(0)
    field = VoxelRadianceField.from_config(cfg.vox, torch.device("cpu"), generator)
    with torch.no_grad():
        if scene == "random":
            field.raw_density.normal_(generator=generator)
        elif scene == "object":
            axis = -1 + (torch.arange(grid) + 0.5) * (2 / grid)
            z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
            inside = (x * x + y * y + z * z).sqrt() < 0.5
            field.raw_density.copy_(torch.where(inside, 5.0, -20.0)[None, None])
    pose = PoseConfig(rend_hw=rend_hw)
    views = sample_train_views(4, pose, torch.Generator().manual_seed(1))
    return field, [view.camera for view in views]


def forward_backward(
    renderer: Callable[[VoxelRadianceField, Camera], RenderOutput],
    field: VoxelRadianceField,
    camera: Camera,
    score: torch.Tensor,
) -> None:
    """One loop-like step as `sjc_step` does it: gradients set to None, render, then one
    backward of the score chained into the image plus the emptiness loss."""
    field.zero_grad(set_to_none=True)
    out = renderer(field, camera)
    emptiness = 1e4 * torch.log1p(10.0 * out.weights).sum() / out.n_samples_dense
    torch.autograd.backward([out.image, emptiness], [-score, torch.ones_like(emptiness)])


def time_pair(
    field: VoxelRadianceField, cameras: list[Camera], repeats: int
) -> dict[str, dict[str, float]]:
    """Median and min wall and CPU seconds per renderer, runs alternating fast and dense."""
    score = torch.randn(1, field.channels, cameras[0].height, cameras[0].width)
    for renderer in RENDERERS.values():
        forward_backward(renderer, field, cameras[0], score)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in RENDERERS
    }
    for index in range(repeats):
        camera = cameras[index % len(cameras)]
        for name, renderer in RENDERERS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            forward_backward(renderer, field, camera, score)
            samples[name]["wall"].append(time.perf_counter() - wall)
            samples[name]["cpu"].append(time.process_time() - cpu)
    return {
        name: {
            "wall": statistics.median(times["wall"]),
            "wall_min": min(times["wall"]),
            "cpu": statistics.median(times["cpu"]),
        }
        for name, times in samples.items()
    }


def memory_probe(renderer: str, scene: str, grid: int, rend_hw: int) -> float:
    """Growth of the peak resident set (MiB) during one forward + backward, in this process."""
    field, cameras = build_scene(scene, grid, rend_hw)
    score = torch.randn(1, field.channels, rend_hw, rend_hw)
    forward_backward(RENDERERS[renderer], field, cameras[1], score)
    baseline = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    forward_backward(RENDERERS[renderer], field, cameras[0], score)
    return (_status_kib("VmHWM") - baseline) / 1024


def peak_memory_mib(renderer: str, scene: str, grid: int, rend_hw: int, threads: int) -> str:
    """Run `memory_probe` in a fresh interpreter; '-' where /proc is not available."""
    command = [sys.executable, __file__, "--threads", str(threads), "--memory-probe"]
    command += [renderer, scene, str(grid), str(rend_hw)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        return f"{json.loads(result.stdout.strip().splitlines()[-1]):.0f}"
    except (subprocess.SubprocessError, ValueError, IndexError):
        return "-"


def machine_lines(thread_counts: list[int]) -> list[str]:
    cpu = cpu_model()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"torch threads {', '.join(map(str, thread_counts))}, device cpu",
        f"load average at start (1, 5, 15 min): {load}",
        f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}",
    ]


def main() -> int:
    args = parse()
    if args.memory_probe:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        renderer, scene, grid, rend_hw = args.memory_probe
        print(json.dumps(memory_probe(renderer, scene, int(grid), int(rend_hw))))
        return 0
    default_threads = torch.get_num_threads()
    thread_counts = [int(count) or default_threads for count in args.threads.split(",")]
    print("\n".join(machine_lines(thread_counts)))
    if os.getloadavg()[0] > 0.5:
        print("note: other processes are running; wall times include their interference")
    print(
        f"\nforward + backward of one {args.rend_hw}x{args.rend_hw} view, "
        f"{args.grid}^3 grid, c = 4; median of {args.repeats} runs (seconds)"
    )
    columns = ["threads", "wall", "wall min", "cpu", "peak MiB", "speedup"]
    print(f"{'scene':8s} {'variant':7s} " + " ".join(f"{name:>8s}" for name in columns))
    speedups = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for scene in SCENES:
            field, cameras = build_scene(scene, args.grid, args.rend_hw)
            times = time_pair(field, cameras, args.repeats)
            speedups[threads, scene] = times["dense"]["wall"] / times["fast"]["wall"]
            for name, row in times.items():
                memory = "-"
                if not args.no_memory and threads == thread_counts[0]:
                    memory = peak_memory_mib(name, scene, args.grid, args.rend_hw, threads)
                ratio = f"{speedups[threads, scene]:8.2f}" if name == "fast" else ""
                print(
                    f"{scene:8s} {name:7s} {threads:8d} {row['wall']:8.3f} "
                    f"{row['wall_min']:8.3f} {row['cpu']:8.3f} {memory:>8s} {ratio}"
                )
    # The headline is the setting on all cores (torch's default thread count) when
    # that count was measured; the growth tables use the first count listed (one by default),
    # which other processes on a shared machine distort least.
    headline_threads = default_threads if default_threads in thread_counts else thread_counts[0]
    torch.set_num_threads(thread_counts[0])
    if not args.no_growth:
        print(
            f"\ngrowth, initial scene, {thread_counts[0]} threads: median wall seconds "
            "(fast / dense = speedup)"
        )
        for grid, rend_hw in [(64, 64), (100, 64), (160, 64), (256, 64), (100, 32), (100, 128)]:
            field, cameras = build_scene("initial", grid, rend_hw)
            times = time_pair(field, cameras, max(3, args.repeats // 2))
            fast, dense = times["fast"]["wall"], times["dense"]["wall"]
            n_samples = render_view(field, cameras[0]).weights.numel()
            label = f"grid {grid}^3, {rend_hw}x{rend_hw}"
            print(
                f"{label:22s} samples {n_samples / 1e6:5.2f} M  fast {fast:7.3f} "
                f"({1e9 * fast / n_samples:5.0f} ns/sample)  dense {dense:7.3f}  "
                f"speedup {dense / fast:5.2f}"
            )
    if not args.no_busy:
        print_busy_table(args.grid, args.rend_hw, args.repeats)
    print()
    for threads in thread_counts:
        print(f"speedup_vs_dense_{threads}_threads={speedups[threads, 'initial']:.2f}")
    print(f"speedup_vs_dense={speedups[headline_threads, 'initial']:.2f}")
    return 0


def print_busy_table(grid: int, rend_hw: int, repeats: int) -> None:
    """The fast renderer at 1 and 2 threads, alternating, while another process spins on a core."""
    field, cameras = build_scene("initial", grid, rend_hw)
    score = torch.randn(1, field.channels, rend_hw, rend_hw)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        times: dict[int, list[float]] = {1: [], 2: []}
        for index in range(repeats + 1):
            for threads in times:
                torch.set_num_threads(threads)
                start = time.perf_counter()
                forward_backward(render_view, field, cameras[index % len(cameras)], score)
                if index > 0:
                    times[threads].append(time.perf_counter() - start)
    finally:
        busy.kill()
        busy.wait()
    one, two = (statistics.median(times[threads]) for threads in (1, 2))
    print(
        f"\nfast renderer beside a busy process (initial, {grid}^3, {rend_hw}x{rend_hw}): "
        f"1 thread {one:.3f} s, 2 threads {two:.3f} s, 2 / 1 = {two / one:.2f}"
    )
    print(f"busy_two_over_one_threads={two / one:.2f}")


def _status_kib(key: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return float(line.split()[1])


if __name__ == "__main__":
    sys.exit(main())
