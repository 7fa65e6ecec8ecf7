"""A tiny SD run on CUDA equals the same run on CPU, to float tolerance (needs a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sjc_dsds import optimize
from sjc_dsds.cli import build_config
from sjc_dsds.run_dir import RunDir, read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(model_dir: Path, out_dir: Path, device: str) -> list[dict]:
    flags = {
        "sd.model_id": str(model_dir),
        "sd.prompt": "a colorful toucan",
        "sd.precision": "fp32",
        "n_steps": 3,
        "vox.grid_size": 12,
        "pose.rend_hw": 16,
        "pose.n_test_frames": 2,
        "device": device,
        "out_dir": str(out_dir),
    }
    optimize.run_sjc(build_config(flags), progress=False)
    return read_metrics(RunDir(out_dir).metrics)


def test_tiny_sd_run_on_cuda_equals_the_cpu_run(tiny_sd_dir: Path, tmp_path: Path) -> None:
    # fp32 weights, TF32 off: the runs differ by float rounding only (cuDNN vs CPU kernels).
    torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = _run(tiny_sd_dir, tmp_path / "cpu", "cpu")
        gpu = _run(tiny_sd_dir, tmp_path / "gpu", "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert [row["step"] for row in gpu] == [row["step"] for row in cpu]
    for a, b in zip(cpu, gpu):
        assert (a["view"], a["t"]) == (b["view"], b["t"])  # same random streams
        for key in ("score_abs_mean", "loss_emptiness", "opacity_mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-2, abs=1e-6), (a["step"], key)
