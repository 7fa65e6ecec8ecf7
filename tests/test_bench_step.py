"""experiments/bench_step.py runs on CPU with the tiny model and ends with its parseable line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_step_final_line_parses_on_cpu() -> None:
    command = [sys.executable, str(ROOT / "experiments" / "bench_step.py")]
    command += ["--grid", "16", "--rend_hw", "16", "--steps", "2", "--warmup", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    match = re.fullmatch(r"overhead=(-?[0-9.]+) peak_gb=([0-9.]+) steps_per_s=([0-9.]+)", lines[-1])
    assert match, lines[-1]
    overhead, peak_gb, steps_per_s = map(float, match.groups())
    assert overhead > -1 and peak_gb > 0 and steps_per_s > 0
    # One row per precision (fp16 and autocast), each with its host-read count per step.
    rows = [
        line.split()
        for line in lines
        if line.split()[:2] in (["fp16", "eager"], ["autocast", "eager"])
    ]
    assert len(rows) == 2 and all(row[5].isdigit() for row in rows)
    # The row's overhead is its step / unet - 1.
    unet, step, row_overhead = map(float, rows[0][2:5])
    assert abs(step / unet - 1 - row_overhead) < 2e-3
