"""Mesh export: marching cubes (PyMCubes) on the density grid, cleaned and coloured, via trimesh.

`export_mesh(field, cfg, out_dir, decode)` writes `mesh.{ply,obj,glb}` in world coordinates
(+y up, as glTF expects). CLI: `python -m sjc_dsds.export RUN [--step N] [--format F]
[--resolution R] [--threshold T]`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import UserError
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.run_dir import atomic_write_bytes

# Density is sampled at this many points at once (bounds memory at high resolution).
SAMPLE_CHUNK = 262_144


class MeshExportError(UserError):
    """No surface at the threshold, or the mesh packages are missing."""


def _require_mesh_packages() -> tuple[Any, Any]:
    try:
        import mcubes
        import trimesh
    except ImportError:
        raise MeshExportError(
            "mesh export needs PyMCubes and trimesh: pip install 'sjc-dsds[mesh]'"
        ) from None
    return mcubes, trimesh


def cell_centers(bbox_len: float, resolution: tuple[int, int, int]) -> list[torch.Tensor]:
    """Centres of `resolution` (x, y, z) equal cells along each axis of [-len, len]."""
    return [
        (torch.arange(n, dtype=torch.float32) + 0.5) * (2.0 * bbox_len / n) - bbox_len
        for n in resolution
    ]


@torch.no_grad()
def density_grid(field: VoxelRadianceField, resolution: tuple[int, int, int]) -> np.ndarray:
    """Volume density on the centres of `resolution` cells: [x, y, z] (x, y, z indexing).

    At the grid's own resolution the cell centres are the voxel centres (exact grid values).
    """
    device = field.raw_density.device
    axes = cell_centers(field.bbox_len, resolution)
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    density = torch.cat(
        [field.density(chunk.to(device)).cpu() for chunk in points.split(SAMPLE_CHUNK)]
    )
    return density.reshape(resolution).numpy().astype(np.float64)


def extract_surface(
    density: np.ndarray, bbox_len: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes at `threshold` on a density grid [x, y, z] of the box: world vertices, faces.

    The grid is padded with empty cells so that surfaces touching the box are closed.
    """
    mcubes, _ = _require_mesh_packages()
    low, high = float(density.min()), float(density.max())
    if not low < threshold < high:
        raise MeshExportError(
            f"no surface at density threshold {threshold} (--eval.mesh_threshold): the density "
            f"spans [{low:.3g}, {high:.3g}]; choose a threshold inside it"
        )
    padded = np.pad(density, 1, mode="constant", constant_values=0.0)
    vertices, faces = mcubes.marching_cubes(padded, threshold)
    cell = 2.0 * bbox_len / np.asarray(density.shape, dtype=np.float64)
    world = (vertices - 1.0 + 0.5) * cell - bbox_len
    return world, faces.astype(np.int64)


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, keep: int, smooth_iterations: int) -> Any:
    """trimesh.Trimesh with outward normals, its `keep` largest pieces (0: all), Taubin-smoothed."""
    _, trimesh = _require_mesh_packages()
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    if keep > 0:
        pieces = mesh.split(only_watertight=False)
        if len(pieces) > keep:
            pieces = sorted(pieces, key=lambda piece: len(piece.faces), reverse=True)[:keep]
            mesh = trimesh.util.concatenate(pieces)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    if smooth_iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, iterations=smooth_iterations)
    return mesh


def mesh_resolution(cfg: SJCConfig) -> tuple[int, int, int]:
    """Cells per side (x, y, z): `--eval.mesh_resolution`, else the field's grid size."""
    side = cfg.eval.mesh_resolution
    return tuple(cfg.vox.grid_size) if side is None else (side, side, side)


def export_mesh(
    field: VoxelRadianceField,
    cfg: SJCConfig,
    out_dir: Path,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """Write `out_dir/mesh.<--eval.mesh_format>` with vertex colours; returns its path.

    Colours: the colour grid for RGB fields, else `decode`d views projected onto the vertices.
    """
    from sjc_dsds.mesh_colors import color_cameras, grid_vertex_colors, projected_vertex_colors

    settings = cfg.eval
    density = density_grid(field, mesh_resolution(cfg))
    vertices, faces = extract_surface(density, field.bbox_len, settings.mesh_threshold)
    mesh = clean_mesh(vertices, faces, settings.mesh_components, settings.mesh_smooth_iterations)
    normals = np.asarray(mesh.vertex_normals)
    if field.model_type == "V_SJC":
        colors = grid_vertex_colors(field, np.asarray(mesh.vertices), normals)
    else:
        if decode is None:
            raise ValueError("a latent field needs `decode` to colour its mesh")
        cameras = color_cameras(
            settings.mesh_color_views, cfg.pose.R, cfg.pose.FoV, cfg.pose.rend_hw
        )
        colors, _ = projected_vertex_colors(
            field, np.asarray(mesh.vertices), normals, decode, cameras
        )
    alpha = np.full((len(colors), 1), 255, dtype=np.uint8)
    mesh.visual.vertex_colors = np.concatenate([(colors * 255).round().astype(np.uint8), alpha], 1)
    path = Path(out_dir) / f"mesh.{settings.mesh_format}"
    data = mesh.export(file_type=settings.mesh_format)
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
    return path


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sjc_dsds.export", description="Mesh of a run's checkpoint."
    )
    parser.add_argument("run", type=Path, help="Run directory.")
    parser.add_argument("--step", type=int, help="Checkpoint step; default the latest.")
    parser.add_argument("--format", choices=("ply", "obj", "glb"), help="Default ply.")
    parser.add_argument("--resolution", type=int, help="Cells per side; default the grid's.")
    parser.add_argument("--threshold", type=float, help="Density of the surface (25).")
    parser.add_argument("--device", help="Device for the decoder (SD); default the run's.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: writes RUN/export/mesh.*; exit code 2 with one line on bad input."""
    from pydantic import ValidationError

    from sjc_dsds.checkpoint import load_field
    from sjc_dsds.families import build_score_model
    from sjc_dsds.runtime import resolve_device

    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg, field, step = load_field(args.run, flag="export", step=args.step)
        updates = {"mesh_format": args.format, "mesh_resolution": args.resolution}
        updates["mesh_threshold"] = args.threshold
        overrides = {key: value for key, value in updates.items() if value is not None}
        try:
            cfg.eval = cfg.eval.model_validate({**cfg.eval.model_dump(), **overrides})
        except ValidationError as error:
            problem = error.errors()[0]
            flag = {"mesh_threshold": "threshold", "mesh_resolution": "resolution"}
            name = flag.get(str(problem["loc"][0]), problem["loc"][0])
            raise MeshExportError(f"--{name}: {problem['msg']}") from None
        device = resolve_device(args.device or cfg.device)
        decode = None
        if field.model_type != "V_SJC":
            decode = build_score_model(cfg, device).decode
        path = export_mesh(field.to(device), cfg, args.run / "export", decode)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"mesh of step {step} written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
