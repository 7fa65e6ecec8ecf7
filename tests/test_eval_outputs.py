"""What a run leaves for researchers, end to end on CPU: mesh, high-res orbit through
--eval_only, TensorBoard events, readable snapshots and summary.json's final metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sjc_dsds import optimize
from sjc_dsds.cli import build_config, main
from sjc_dsds.config import SJCConfig
from sjc_dsds.evaluate import apply_eval_overrides
from sjc_dsds.highres import render_highres_view
from sjc_dsds.render import render_view
from sjc_dsds.run_dir import RunDir, read_metrics
from sjc_dsds.stable_diffusion import StableDiffusionDenoiser

TOY_FLAGS = {
    "family": "toy",
    "toy.n_images": 16,
    "n_steps": 20,
    "lr": 0.2,
    "emptiness_weight": 1000,
    "vox.grid_size": 16,
    "pose.rend_hw": 16,
    "pose.n_test_frames": 4,
    "vis_every": 10,
    "device": "cpu",
    "eval.mesh_threshold": 0.5,  # a 20-step field is faint; its density spans about 0.1-0.7
}


def sd_config(model_dir: Path, out_dir: Path, **flags: object) -> SJCConfig:
    base = {
        "sd.model_id": str(model_dir),
        "sd.prompt": "a colorful toucan",
        "n_steps": 4,
        "vox.grid_size": 12,
        "pose.rend_hw": 16,
        "pose.n_test_frames": 3,
        "vis_every": 2,
        "device": "cpu",
        "out_dir": str(out_dir),
        "eval.mesh_threshold": 0.3,
        "eval.mesh_color_views": 4,
    }
    return build_config({**base, **flags})


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("trimesh")
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("toy") / "run"
    flags = {**TOY_FLAGS, "out_dir": str(out), "export_mesh": True, "log.tensorboard": True}
    cfg = build_config(flags)
    return cfg, optimize.run_sjc(cfg, progress=False)


def test_toy_run_writes_a_coloured_mesh(toy_run) -> None:
    import trimesh

    _, result = toy_run
    mesh = trimesh.load(result.run_dir / "export" / "mesh.ply", process=False)
    assert len(mesh.faces) > 0 and mesh.visual.kind == "vertex"
    colors = mesh.visual.vertex_colors[:, :3]
    assert colors.std(axis=0).max() > 0  # from the grid: not one flat default colour


def test_summary_keeps_final_metrics_apart(toy_run) -> None:
    _, result = toy_run
    summary = json.loads(RunDir(result.run_dir).summary.read_text())
    assert summary["finished"] is True and summary["final_step"] == 20
    assert (
        "gt_janus_rate" in summary["final_metrics"]
        and "orbit_l1_frame_difference" in (summary["final_metrics"])
    )
    assert summary["last_step"]["step"] == 19 and "sigma" not in summary["final_metrics"]
    assert result.final_metrics == summary["final_metrics"]
    assert (result.run_dir / "test" / "ground_truth_comparison.png").exists()


def test_tensorboard_holds_every_metrics_line_snapshots_and_orbit(toy_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, result = toy_run
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    records = read_metrics(RunDir(result.run_dir).metrics)
    logged = events.Scalars("loss_emptiness")
    assert [e.step for e in logged] == [r["step"] for r in records]
    assert [e.value for e in logged] == pytest.approx([r["loss_emptiness"] for r in records])
    assert [e.step for e in events.Images("snapshot")] == [0, 10, 19]
    assert len(events.Images("orbit")) == 4
    assert "final/gt_janus_rate" in events.Tags()["scalars"]


def test_snapshots_are_upscaled_labelled_with_raw_depth(toy_run) -> None:
    _, result = toy_run
    images = RunDir(result.run_dir).images
    picture = np.asarray(Image.open(images / "step_0000010.png"))
    assert picture.shape[1] == 256 and picture.shape[0] > 256  # 16 px x 16, plus a label band
    band = picture[: picture.shape[0] - 256]
    assert (band == 255).mean() > 0.5 and (band < 100).any()  # white band with dark text
    depth = np.load(images / "depth" / "depth_step_0000010.npy")
    assert depth.shape == (16, 16) and depth.min() > 0


def test_chunked_highres_view_equals_one_big_render_antialiased_down() -> None:
    from sjc_dsds.cameras import spiral_cameras
    from sjc_dsds.field import VoxelRadianceField

    cfg = build_config({**TOY_FLAGS, "pose.n_test_frames": 1})
    field = VoxelRadianceField.from_config(cfg.vox, torch.device("cpu"), torch.Generator())
    with torch.no_grad():
        field.raw_density.normal_(generator=torch.Generator().manual_seed(1)).mul_(3)
    camera = spiral_cameras(cfg.pose)[0]
    image, depth = render_highres_view(field, camera, factor=2, bottleneck=16, chunk_rays=300)
    # Oracle: one unchunked render at twice the side, downsampled with antialiasing.
    from sjc_dsds.cameras import Camera

    with torch.no_grad():
        big = render_view(field, Camera(camera.cam_to_world, camera.fov_deg, 32, 32))

    def down(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, (16, 16), mode="bilinear", antialias=True)

    assert image.shape == (1, 3, 16, 16) and depth.shape == (1, 1, 16, 16)
    assert torch.allclose(image, down(big.image), atol=1e-5)
    assert torch.allclose(depth, down(big.depth), atol=1e-4)
    # Sub-pixel rays differ from one ray per pixel (the point of the high-res render).
    assert not torch.allclose(image, render_view(field, camera).image, atol=1e-3)


def test_sd_run_mesh_colours_come_from_decoded_views(tiny_sd_dir: Path, tmp_path: Path) -> None:
    trimesh = pytest.importorskip("trimesh")
    cfg = sd_config(tiny_sd_dir, tmp_path / "sd", export_mesh=True)
    model = StableDiffusionDenoiser.from_config(cfg.sd, torch.device("cpu"))
    result = optimize.run_sjc(cfg, model=model, progress=False)
    mesh = trimesh.load(result.run_dir / "export" / "mesh.ply", process=False)
    assert len(mesh.faces) > 0 and mesh.visual.kind == "vertex"


def test_eval_only_highres_writes_the_movies(tiny_sd_dir: Path, tmp_path: Path, capsys) -> None:
    cfg = sd_config(tiny_sd_dir, tmp_path / "sd")
    model = StableDiffusionDenoiser.from_config(cfg.sd, torch.device("cpu"))
    optimize.run_sjc(cfg, model=model, progress=False)
    flags = ["--eval.highres", "True", "--eval.highres_n_frames", "5"]
    flags += ["--eval.highres_skip_frames", "2", "--eval.highres_bottleneck", "16"]
    assert main(["--eval_only", str(tmp_path / "sd"), *flags]) == 0
    out = tmp_path / "sd" / "test_step_0000004" / "highres"
    assert (out / "orbit.mp4").stat().st_size > 0 and (out / "orbit_depth.mp4").stat().st_size > 0
    frames = sorted((out / "frames").glob("*.png"))
    assert len(frames) == 3  # 5 frames, the first 2 skipped
    assert Image.open(frames[0]).size == (32, 32)  # bottleneck 16 through the tiny VAE (x2)
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert metrics["highres_side"] == 32 and metrics["highres_peak_memory_mib"] > 0


def test_eval_overrides_replace_only_the_evaluation_groups() -> None:
    cfg = build_config(TOY_FLAGS)
    changed = apply_eval_overrides(cfg, {"eval": {"highres": True}, "export_mesh": True})
    assert changed.eval.highres and changed.export_mesh and changed.vox == cfg.vox
    assert changed.eval.mesh_threshold == 0.5  # a dict updates the saved group
    with pytest.raises(ValueError, match="evaluation overrides only"):
        apply_eval_overrides(cfg, {"lr": 1.0})


def test_snapshot_caption_names_step_view_t_and_threshold() -> None:
    from sjc_dsds.snapshots import snapshot_caption

    line = {"step": 40, "view": "back", "t": 512, "score_threshold": 4.25}
    assert snapshot_caption(line) == "step 40 | back | t 512 | thres 4.25"
    assert snapshot_caption({**line, "score_threshold": None}).endswith("thres off")
