"""`--family deepfloyd` through the registry: a full run, IF's D-SDS defaults, sample2d."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sjc_dsds.cli import main
from sjc_dsds.config import build_config
from sjc_dsds.families import FAMILIES
from sjc_dsds.random_models import build_tiny_if
from sjc_dsds.run_dir import RunDir, read_metrics
from sjc_dsds.score_debiasing import score_threshold


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if"))


def test_deepfloyd_field_and_score_defaults_come_from_the_registry() -> None:
    cfg = build_config({"family": "deepfloyd"})
    assert (cfg.vox.c, cfg.vox.model_type, cfg.vox.blend_bg_texture) == (3, "V_SJC", True)
    # The D-SDS authors' IF ramp grad_clip=[0, 0.5, 2.0, 10000]: 0.5 at the start, 2.0 at the end.
    assert score_threshold(0, cfg.n_steps, cfg.score_thres, True, cfg.score_thres_start) == 0.5
    last = score_threshold(cfg.n_steps, cfg.n_steps, cfg.score_thres, True, cfg.score_thres_start)
    assert last == pytest.approx(2.0)
    given = build_config({"family": "deepfloyd", "score_thres": 8.0})
    assert given.score_thres == 8.0 and given.score_thres_start == 0.25
    assert build_config({}).score_thres == 8.0  # SD keeps SJC + D-SDS's 2 -> 8
    assert "deepfloyd.model_id" in FAMILIES["deepfloyd"].model_id_flag


@pytest.mark.slow
def test_run_sjc_with_the_tiny_if_writes_a_full_run_directory(tiny_if, tmp_path) -> None:
    out = tmp_path / "run"
    flags = [
        "--family", "deepfloyd",
        "--deepfloyd.model_id", str(tiny_if),
        "--deepfloyd.negative_prompt", "blurry",
        "--n_steps", "5",
        "--vox.grid_size", "8",
        "--pose.n_test_frames", "2",
        "--device", "cpu",
        "--out_dir", str(out),
    ]  # fmt: skip
    assert main(flags) == 0
    run = RunDir(out)
    summary = json.loads(run.summary.read_text())
    assert summary["finished"] is True and summary["final_step"] == 5
    records = read_metrics(run.metrics)
    assert [r["step"] for r in records] == list(range(5))
    assert records[0]["score_threshold"] == pytest.approx(0.5)
    assert (run.test / "orbit.mp4").stat().st_size > 0
    frame = sorted((run.test / "frames").glob("*.png"))
    assert len(frame) == 2
    assert (run.latest_checkpoint() is not None) and run.prompts.exists()


def test_the_negative_prompt_is_the_models_conditioning(tiny_if) -> None:
    from sjc_dsds.families import build_score_model

    cfg = build_config(
        {
            "family": "deepfloyd",
            "deepfloyd.model_id": str(tiny_if),
            "deepfloyd.negative_prompt": "x",
        }
    )
    model = build_score_model(cfg, torch.device("cpu"))
    assert model.condition("a cat").uncond is not None
    direct = model.encode_prompts(["x"])
    torch.testing.assert_close(model.condition("a cat").uncond, direct)


def test_sample2d_draws_with_the_deepfloyd_family(tiny_if, tmp_path) -> None:
    from sjc_dsds import sample2d

    out = tmp_path / "if.png"
    argv = ["--family", "deepfloyd", "--deepfloyd.model_id", str(tiny_if), "--out", str(out)]
    assert sample2d.main([*argv, "--n_steps_sample", "4", "--device", "cpu"]) == 0
    import imageio.v3 as iio

    pixels = iio.imread(out)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0
