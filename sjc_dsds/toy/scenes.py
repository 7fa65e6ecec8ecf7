"""Ground-truth scenes of the synthetic world: objects with a distinct front part and back part.

Each scene is a union of coloured parts given by signed distance functions; sampling it on a
voxel grid gives the density and colour grids of a ground-truth radiance field. SJC's azimuth 0
puts the camera on the -x side (docs/method.md A.8), so every front part (face, snout, red side)
faces -x and every back part (hair, tail, blue side) faces +x. Besides the three hand-built dev
scenes, `procedural_scene(seed)` builds any number of held-out scenes (names 'seed<N>').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from random import Random
from types import MappingProxyType
from typing import NamedTuple

import torch

from sjc_dsds.config import ToyConfig
from sjc_dsds.toy.world import DENSITY_INSIDE, SURFACE_WIDTH

SignedDistance = Callable[[torch.Tensor], torch.Tensor]


def sphere(center: tuple[float, float, float], radius: float) -> SignedDistance:
    """Signed distance to a sphere; points are [n, 3]."""
    c = torch.tensor(center)
    return lambda points: (points - c.to(points)).norm(dim=-1) - radius


def ellipsoid(
    center: tuple[float, float, float], radii: tuple[float, float, float]
) -> SignedDistance:
    """Approximate signed distance to an axis-aligned ellipsoid (exact on its surface)."""
    c, r = torch.tensor(center), torch.tensor(radii)
    return lambda points: ((points - c.to(points)) / r.to(points)).norm(dim=-1).sub(1) * min(radii)


def capsule(
    start: tuple[float, float, float], end: tuple[float, float, float], radius: float
) -> SignedDistance:
    """Signed distance to a segment thickened by `radius`."""
    a, b = torch.tensor(start), torch.tensor(end)

    def distance(points: torch.Tensor) -> torch.Tensor:
        ab = (b - a).to(points)
        along = ((points - a.to(points)) @ ab / ab.dot(ab)).clamp(0, 1)  # [n]
        return (points - a.to(points) - along[:, None] * ab).norm(dim=-1) - radius

    return distance


def rounded_box(half_sizes: tuple[float, float, float], rounding: float) -> SignedDistance:
    """Signed distance to a box centred at the origin with rounded edges."""
    h = torch.tensor(half_sizes)

    def distance(points: torch.Tensor) -> torch.Tensor:
        q = points.abs() - (h.to(points) - rounding)
        outside = q.clamp(min=0).norm(dim=-1)
        inside = q.max(dim=-1).values.clamp(max=0)
        return outside + inside - rounding

    return distance


def intersect(*parts: SignedDistance) -> SignedDistance:
    """Intersection of shapes: the largest signed distance."""
    return lambda points: torch.stack([part(points) for part in parts]).max(dim=0).values


def half_space(normal: tuple[float, float, float], offset: float) -> SignedDistance:
    """Points with normal . p >= offset are inside (distance offset - normal . p)."""
    n = torch.tensor(normal)
    return lambda points: offset - points @ n.to(points)


def rgb(red: float, green: float, blue: float) -> tuple[float, float, float]:
    """A [0, 1] colour written in the [-1, 1] range the field renders."""
    return (2 * red - 1, 2 * green - 1, 2 * blue - 1)


# Part roles: the front part (face) and the back part (hair) are what the part metrics score.
PART_ROLES: tuple[str, ...] = ("body", "front", "back")


@dataclass(frozen=True)
class Part:
    """One coloured piece of a scene; `role` is one of PART_ROLES."""

    shape: SignedDistance
    color: tuple[float, float, float]
    name: str
    role: str = "body"


@dataclass(frozen=True)
class Scene:
    """A ground-truth object: coloured parts, its caption noun, and the words its front part
    and its back part earn in captions ('smiling' head, 'braided' head)."""

    name: str
    noun: str
    front_word: str
    back_word: str
    parts: tuple[Part, ...]


class SceneGrids(NamedTuple):
    """A scene sampled at voxel centres: density [1, 1, D, H, W] and colour [1, 3, D, H, W]."""

    density: torch.Tensor
    color: torch.Tensor


SKIN = rgb(0.93, 0.72, 0.55)
HAIR = rgb(0.55, 0.3, 0.1)
EYE = rgb(0.05, 0.05, 0.2)
LIPS = rgb(0.85, 0.1, 0.1)
TAIL = rgb(0.25, 0.6, 0.3)


def _head() -> Scene:
    """A head: skin sphere and neck, dark hair over the back and top, eyes, nose and mouth at -x."""
    hair_cap = intersect(sphere((0.0, 0.02, 0.0), 0.6), half_space((0.8, 0.6, 0.0), -0.05))
    parts = (
        Part(sphere((0.0, 0.0, 0.0), 0.55), SKIN, "skull"),
        Part(capsule((0.0, -0.45, 0.0), (0.0, -0.85, 0.0), 0.22), SKIN, "neck"),
        Part(hair_cap, HAIR, "hair", "back"),
        Part(sphere((-0.47, 0.13, 0.2), 0.11), EYE, "left eye", "front"),
        Part(sphere((-0.47, 0.13, -0.2), 0.11), EYE, "right eye", "front"),
        Part(sphere((-0.58, -0.02, 0.0), 0.08), rgb(0.85, 0.55, 0.4), "nose", "front"),
        Part(ellipsoid((-0.48, -0.24, 0.0), (0.08, 0.06, 0.22)), LIPS, "mouth", "front"),
    )
    return Scene("head", "head", "smiling", "braided", parts)


def _animal() -> Scene:
    """A four-legged animal walking towards -x: head with eyes and snout at -x, tail at +x."""
    fur, face, dark = rgb(0.6, 0.38, 0.18), rgb(0.85, 0.68, 0.45), rgb(0.3, 0.18, 0.08)
    legs = tuple(
        Part(capsule((x, -0.15, z), (x, -0.62, z), 0.075), dark, f"leg {index}")
        for index, (x, z) in enumerate([(-0.25, 0.15), (-0.25, -0.15), (0.4, 0.15), (0.4, -0.15)])
    )
    parts = (
        Part(ellipsoid((0.08, 0.0, 0.0), (0.52, 0.26, 0.26)), fur, "body"),
        Part(sphere((-0.5, 0.25, 0.0), 0.22), face, "head"),
        Part(sphere((-0.69, 0.17, 0.0), 0.1), rgb(0.85, 0.3, 0.45), "snout", "front"),
        Part(sphere((-0.78, 0.2, 0.0), 0.04), EYE, "nose tip", "front"),
        Part(sphere((-0.64, 0.34, 0.1), 0.06), EYE, "left eye", "front"),
        Part(sphere((-0.64, 0.34, -0.1), 0.06), EYE, "right eye", "front"),
        Part(sphere((-0.42, 0.46, 0.13), 0.07), dark, "left ear"),
        Part(sphere((-0.42, 0.46, -0.13), 0.07), dark, "right ear"),
        Part(capsule((0.55, 0.08, 0.0), (0.82, 0.35, 0.0), 0.06), TAIL, "tail", "back"),
        *legs,
    )
    return Scene("animal", "animal", "smiling", "tailed", parts)


def _cube() -> Scene:
    """A rounded cube painted red on its -x third, white in the middle, blue on its +x third."""
    box = rounded_box((0.42, 0.42, 0.42), 0.06)
    front = intersect(box, half_space((-1.0, 0.0, 0.0), 0.14))
    back = intersect(box, half_space((1.0, 0.0, 0.0), 0.14))
    parts = (
        Part(front, rgb(0.9, 0.12, 0.08), "red front", "front"),
        Part(back, rgb(0.1, 0.25, 0.9), "blue back", "back"),
        Part(box, rgb(0.92, 0.92, 0.88), "white middle"),
    )
    return Scene("cube", "cube", "red", "blue", parts)


SCENE_BUILDERS: Mapping[str, Callable[[], Scene]] = MappingProxyType(
    {"head": _head, "animal": _animal, "cube": _cube}
)

# Colours of procedural scenes: pale bodies, saturated front and back parts ([0, 1] RGB).
BODY_COLORS = ((0.8, 0.8, 0.78), (0.9, 0.8, 0.6), (0.72, 0.85, 0.72), (0.8, 0.75, 0.9))
PART_COLORS = (
    (0.85, 0.1, 0.1),
    (0.1, 0.2, 0.85),
    (0.1, 0.6, 0.15),
    (0.55, 0.1, 0.65),
    (0.95, 0.55, 0.0),
    (0.05, 0.05, 0.1),
)
NOUNS = ("robot", "lamp", "creature", "statue", "gadget", "vessel", "figure", "machine")
FRONT_WORDS = ("smiling", "glowing", "spotted", "staring")
BACK_WORDS = ("striped", "hooded", "finned", "tailed")


def procedural_scene(seed: int) -> Scene:
    """A held-out scene drawn from `seed`: a pale body (ellipsoid or rounded box), 1-3 front
    features on its -x face and a painted cap over its +x end, in two distinct saturated colours."""
    rng = Random(seed)
    radii = (rng.uniform(0.32, 0.5), rng.uniform(0.32, 0.55), rng.uniform(0.3, 0.5))
    if rng.random() < 0.5:
        body = ellipsoid((0.0, 0.0, 0.0), radii)
        shell = ellipsoid((0.0, 0.0, 0.0), tuple(r + 0.03 for r in radii))
    else:
        body = rounded_box(radii, 0.08)
        shell = rounded_box(tuple(r + 0.03 for r in radii), 0.1)
    front_color, back_color = rng.sample(PART_COLORS, 2)
    size = rng.uniform(0.09, 0.14)
    x = -radii[0] + 0.4 * size
    spread = rng.uniform(0.3, 0.6) * radii[2]
    height = rng.uniform(-0.3, 0.3) * radii[1]
    centers = {1: [(x, height, 0.0)], 2: [(x, height, spread), (x, height, -spread)]}
    centers[3] = [*centers[2], (x, height - 0.5 * radii[1], 0.0)]
    features = [sphere(center, size) for center in centers[rng.choice((1, 2, 3))]]
    cap = intersect(shell, half_space((1.0, 0.0, 0.0), rng.uniform(0.35, 0.6) * radii[0]))
    parts = (
        *(
            Part(f, rgb(*front_color), f"front feature {i}", "front")
            for i, f in enumerate(features)
        ),
        Part(cap, rgb(*back_color), "back cap", "back"),
        Part(body, rgb(*rng.choice(BODY_COLORS)), "body"),
    )
    words = (rng.choice(NOUNS), rng.choice(FRONT_WORDS), rng.choice(BACK_WORDS))
    return Scene(f"seed{seed}", *words, parts)


def build_scene(name: str) -> Scene:
    """The named ground-truth scene: one of SCENE_BUILDERS, or 'seed<N>' for procedural_scene(N)."""
    if name.startswith("seed") and name[4:].isdigit():
        return procedural_scene(int(name[4:]))
    if name not in SCENE_BUILDERS:
        raise ValueError(
            f"unknown scene {name!r}; choose one of {', '.join(SCENE_BUILDERS)} or seed<N>"
        )
    return SCENE_BUILDERS[name]()


def with_role_colors(scene: Scene, colors: Mapping[str, tuple[float, float, float]]) -> Scene:
    """The same scene with every part painted its role's colour (for part-ID renders)."""
    parts = tuple(Part(part.shape, colors[part.role], part.name, part.role) for part in scene.parts)
    return Scene(scene.name, scene.noun, scene.front_word, scene.back_word, parts)


def scene_density_and_color(
    scene: Scene, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density [n] and [-1, 1] colour [n, 3] at points [n, 3].

    A point takes the colour of the part it is deepest inside (smallest signed distance), so
    colours are defined just outside surfaces too, where trilinear lookups blend them in.
    """
    distances = torch.stack([part.shape(points) for part in scene.parts], dim=-1)  # [n, n_parts]
    colors = torch.tensor([part.color for part in scene.parts], dtype=points.dtype)
    nearest = distances.argmin(dim=-1)
    union = distances.min(dim=-1).values
    density = DENSITY_INSIDE * torch.sigmoid(-union / SURFACE_WIDTH)
    return density, colors.to(points.device)[nearest]


def voxel_centers(grid_size: int, bbox_len: float) -> torch.Tensor:
    """World positions of the voxel centres of a cube grid: [D, H, W, 3] as (x, y, z).

    Index [k, j, i] holds x_i, y_j, z_k (z-y-x storage, grid_sample with align_corners=False).
    """
    axis = (torch.arange(grid_size, dtype=torch.float32) + 0.5) / grid_size * 2 - 1
    axis = axis * bbox_len
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def sample_scene_grids(scene: Scene, grid_size: int, bbox_len: float) -> SceneGrids:
    """The scene at the voxel centres of a `grid_size`^3 grid over [-bbox_len, bbox_len]^3."""
    points = voxel_centers(grid_size, bbox_len).reshape(-1, 3)
    density, color = scene_density_and_color(scene, points)
    side = (grid_size,) * 3
    return SceneGrids(density.reshape(1, 1, *side), color.T.reshape(1, 3, *side).contiguous())


def configured_scene_name(toy: ToyConfig) -> str:
    """The scene of `--toy.*`: 'seed<N>' with --toy.scene_seed N, else --toy.scene."""
    return toy.scene if toy.scene_seed is None else f"seed{toy.scene_seed}"
