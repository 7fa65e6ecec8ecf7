"""Mesh export: sphere radius and volume, colour halves, files trimesh loads back, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sjc_dsds.cli import build_config
from sjc_dsds.config import SJCConfig
from sjc_dsds.export import MeshExportError, export_mesh, main
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.mesh_colors import color_cameras, projected_vertex_colors
from sjc_dsds.toy.ground_truth import features_from_color, raw_density_from_density

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("mcubes")

SIDE = 32
RADIUS = 0.6
RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9)


def toy_config(**flags: object) -> SJCConfig:
    return build_config({"family": "toy", "vox.grid_size": SIDE, "pose.rend_hw": 32, **flags})


def voxel_centers() -> torch.Tensor:
    """[z, y, x, 3] world positions (x, y, z) of the voxel centres of a SIDE^3 grid on [-1, 1]."""
    axis = (torch.arange(SIDE, dtype=torch.float32) + 0.5) * (2.0 / SIDE) - 1.0
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def field_of(cfg: SJCConfig, distance: torch.Tensor, color: torch.Tensor) -> VoxelRadianceField:
    """A field whose density is linear in the signed distance [z, y, x] (25 on the surface)."""
    voxel = 2.0 / SIDE
    density = (25.0 - 100.0 * distance / voxel).clamp(1e-3, 80.0)
    raw = raw_density_from_density(density[None, None], cfg.vox.density_shift)
    features = features_from_color(2.0 * color.permute(3, 0, 1, 2)[None] - 1.0)  # [-1, 1]
    return VoxelRadianceField.from_grids(cfg.vox, raw, features, None)


def two_coloured_sphere(cfg: SJCConfig, radius: float = RADIUS) -> VoxelRadianceField:
    """Sphere of `radius`: red where x < 0, blue where x > 0."""
    points = voxel_centers()
    distance = points.norm(dim=-1) - radius
    color = torch.where(points[..., :1] < 0, torch.tensor(RED), torch.tensor(BLUE))
    return field_of(cfg, distance, color)


def test_sphere_radius_volume_and_colour_halves(tmp_path: Path) -> None:
    cfg = toy_config()
    path = export_mesh(two_coloured_sphere(cfg), cfg, tmp_path)
    mesh = trimesh.load(path, process=False)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < 2.0 / SIDE  # within one voxel
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4.0 / 3.0 * math.pi * RADIUS**3, rel=0.02)
    colors = mesh.visual.vertex_colors[:, :3].astype(float) / 255
    left, right = mesh.vertices[:, 0] < -2.0 / SIDE, mesh.vertices[:, 0] > 2.0 / SIDE
    assert np.abs(colors[left] - RED).max() < 0.05
    assert np.abs(colors[right] - BLUE).max() < 0.05


def test_projected_colours_of_decoded_views_land_on_the_right_halves() -> None:
    cfg = toy_config()
    field = two_coloured_sphere(cfg)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    vertices, normals = np.asarray(sphere.vertices), np.asarray(sphere.vertex_normals)

    def decode(render: torch.Tensor) -> torch.Tensor:  # a "VAE" that doubles the side
        return F.interpolate((render + 1) / 2, scale_factor=2, mode="nearest")

    cameras = color_cameras(8, cfg.pose.R, cfg.pose.FoV, 32)
    colors, unseen = projected_vertex_colors(field, vertices, normals, decode, cameras)
    assert unseen <= 0.02 * len(vertices)  # only near the poles, beyond both camera rings
    far_left, far_right = vertices[:, 0] < -0.2, vertices[:, 0] > 0.2
    assert np.abs(colors[far_left] - RED).max() < 0.1
    assert np.abs(colors[far_right] - BLUE).max() < 0.1


def test_largest_piece_kept_and_formats_load_back_up_axis_y(tmp_path: Path) -> None:
    points = voxel_centers()
    # A tall box along +y (the up axis) and a small ball beside it.
    tall = (points.abs() - torch.tensor([0.2, 0.7, 0.2])).amax(dim=-1)
    ball = (points - torch.tensor([0.7, 0.0, 0.0])).norm(dim=-1) - 0.15
    color = torch.full((SIDE, SIDE, SIDE, 3), 0.5)
    for fmt in ("ply", "obj", "glb"):
        cfg = toy_config(**{"eval.mesh_format": fmt})
        path = export_mesh(field_of(cfg, torch.minimum(tall, ball), color), cfg, tmp_path)
        assert path.name == f"mesh.{fmt}"
        loaded = trimesh.load(path, force="mesh")
        extent = loaded.bounds[1] - loaded.bounds[0]
        assert extent[1] == pytest.approx(1.4, abs=0.1) and extent[0] < 0.5  # no ball, y up
        assert loaded.visual.kind == "vertex"
        assert np.abs(loaded.visual.vertex_colors[:, :3].astype(int) - 128).max() <= 1


def test_threshold_without_surface_is_one_line(tmp_path: Path) -> None:
    cfg = toy_config(**{"eval.mesh_threshold": 1e6})
    with pytest.raises(MeshExportError, match="no surface at density threshold 1000000.0"):
        export_mesh(two_coloured_sphere(cfg), cfg, tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_exports_a_checkpoint_and_reports_errors(tmp_path: Path, capsys) -> None:
    from sjc_dsds.optimize import RunState
    from sjc_dsds.run_dir import create_run_dir

    cfg = toy_config(**{"out_dir": str(tmp_path / "run"), "toy.n_images": 4})
    run = create_run_dir(tmp_path / "run", cfg, resume=False, overwrite=False)
    state = RunState.create(cfg)
    state.field.load_state_dict(two_coloured_sphere(cfg).state_dict())
    state.step = 7
    state.save(run)
    assert main([str(run.root), "--format", "obj"]) == 0
    assert (run.root / "export" / "mesh.obj").exists()
    assert "step 7" in capsys.readouterr().out
    assert main([str(run.root), "--threshold", "1e9"]) == 2
    assert main([str(run.root), "--step", "3"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no surface" in errors[0] and "step 3" in errors[1]
