"""Fast renderer vs the dense reference: forward + backward of one view, side by side.

    python experiments/bench_render.py                    # the issue's setting and growth tables
    python experiments/bench_render.py --threads 2 --repeats 9

Times `render_view` (packed samples, empty-space skipping, early termination) against
`render_view_dense` (SJC's dense marching, every sample evaluated) in one process, alternating
the two. One timed run is the forward pass plus the backward of the loop's two losses: the
image receiving a fixed random score and SJC's emptiness loss on the weights. Scenes:

* initial: the spec's initial field (raw density 0, i.e. softplus(-1) fog everywhere; features
  and background N(0, 1)): nothing can be skipped, the hardest case for the fast renderer;
* random: raw density N(0, 1) per voxel, fog of varying thickness everywhere;
* object: what the emptiness loss leaves behind late in a run, an opaque ball of radius 0.5
  (raw +5) in empty space (raw -20).

Peak memory is the growth of the peak resident set (VmHWM in /proc/self/status, reset through
/proc/self/clear_refs) during one forward + backward, each variant in a fresh subprocess.

The default is one intra-op thread: on the shared 2-core machines of this project OpenMP
barriers stall whenever another process holds a core (a 10 ms render took 300 ms with two
threads), which times the machine's load rather than the renderers. On an idle machine pass
--threads 2; the timing table also reports CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

RENDERERS: dict[str, Callable[[VoxelRadianceField, Camera], RenderOutput]] = {
    "fast": render_view,
    "dense": render_view_dense,
}
SCENES = ("initial", "random", "object")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--grid", type=int, default=100, help="voxels per side (main table)")
    parser.add_argument("--rend_hw", type=int, default=64, help="image side (main table)")
    parser.add_argument("--no-growth", action="store_true", help="skip the growth tables")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory probes")
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
    """One loop-like step: render, chain a score into the image, add the emptiness loss."""
    field.zero_grad(set_to_none=False)
    out = renderer(field, camera)
    emptiness = 1e4 * torch.log1p(10.0 * out.weights).sum() / out.n_samples_dense
    out.image.backward(-score, retain_graph=True)
    emptiness.backward()


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


def machine_lines() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, device cpu",
        f"load average at start (1, 5, 15 min): {load}",
        f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}",
    ]


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        renderer, scene, grid, rend_hw = args.memory_probe
        print(json.dumps(memory_probe(renderer, scene, int(grid), int(rend_hw))))
        return 0
    threads = torch.get_num_threads()
    print("\n".join(machine_lines()))
    if os.getloadavg()[0] > 0.5:
        print("note: other processes are running; wall times include their interference")
    print(
        f"\nforward + backward of one {args.rend_hw}x{args.rend_hw} view, "
        f"{args.grid}^3 grid, c = 4; median of {args.repeats} runs (seconds)"
    )
    header = (
        f"{'scene':8s} {'variant':7s} {'wall':>8s} {'wall min':>9s} {'cpu':>8s} {'peak MiB':>9s}"
    )
    print(header + f" {'speedup':>8s}")
    headline = None
    for scene in SCENES:
        field, cameras = build_scene(scene, args.grid, args.rend_hw)
        times = time_pair(field, cameras, args.repeats)
        speedup = times["dense"]["wall"] / times["fast"]["wall"]
        headline = speedup if scene == "initial" else headline
        for name, row in times.items():
            memory = "-"
            if not args.no_memory:
                memory = peak_memory_mib(name, scene, args.grid, args.rend_hw, threads)
            ratio = f"{speedup:9.2f}" if name == "fast" else ""
            print(
                f"{scene:8s} {name:7s} {row['wall']:9.3f} {row['wall_min']:9.3f} "
                f"{row['cpu']:9.3f} {memory:>9s} {ratio}"
            )
    if not args.no_growth:
        print("\ngrowth, initial scene: median wall seconds (fast / dense = speedup)")
        for label, grid, rend_hw in [
            ("grid 64^3, 64x64", 64, 64),
            ("grid 100^3, 64x64", 100, 64),
            ("grid 160^3, 64x64", 160, 64),
            ("grid 100^3, 32x32", 100, 32),
            ("grid 100^3, 128x128", 100, 128),
        ]:
            field, cameras = build_scene("initial", grid, rend_hw)
            times = time_pair(field, cameras, max(3, args.repeats // 2))
            fast, dense = times["fast"]["wall"], times["dense"]["wall"]
            print(f"{label:22s} fast {fast:7.3f}  dense {dense:7.3f}  speedup {dense / fast:5.2f}")
    print(f"\nspeedup_vs_dense={headline:.2f}")
    return 0


def _status_kib(key: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return float(line.split()[1])


if __name__ == "__main__":
    sys.exit(main())
