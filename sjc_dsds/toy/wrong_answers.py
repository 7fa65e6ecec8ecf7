"""Hand-built wrong answers of a scene, for checking that the metrics rate them badly.

faceless: the front parts repainted in the body's colour (and counted as body), so the shape
is right and the face is gone; two-faced: the back parts removed and the front parts mirrored
onto the back (x -> -x; every scene faces -x), the Janus failure; turned around: the whole
scene rotated half a turn about the vertical axis, one face on the wrong side.
"""

from __future__ import annotations

import torch

from sjc_dsds.toy.scenes import Part, Scene, SignedDistance


def reflected(shape: SignedDistance, signs: tuple[float, float, float]) -> SignedDistance:
    """The shape with each coordinate multiplied by its sign (-1 reflects that axis)."""
    factors = torch.tensor(signs)
    return lambda points: shape(points * factors.to(points))


def mirrored_x(shape: SignedDistance) -> SignedDistance:
    """The shape reflected through the plane x = 0."""
    return reflected(shape, (-1.0, 1.0, 1.0))


def faceless_scene(scene: Scene) -> Scene:
    """`scene` with its front parts in the colour of its first body part."""
    body_color = next(part.color for part in scene.parts if part.role == "body")
    parts = tuple(
        Part(part.shape, body_color, part.name, "body") if part.role == "front" else part
        for part in scene.parts
    )
    return Scene(f"faceless {scene.name}", scene.noun, scene.front_word, scene.back_word, parts)


def two_faced_scene(scene: Scene) -> Scene:
    """`scene` without its back parts and with a mirrored copy of its front parts at +x."""
    fronts = [part for part in scene.parts if part.role == "front"]
    mirrored = tuple(
        Part(mirrored_x(p.shape), p.color, f"mirrored {p.name}", "front") for p in fronts
    )
    kept = tuple(part for part in scene.parts if part.role != "back")
    # A surface point shared by two parts takes the earlier one's colour: the mirror goes first.
    return Scene(
        f"two-faced {scene.name}", scene.noun, scene.front_word, scene.back_word, mirrored + kept
    )


def turned_scene(scene: Scene) -> Scene:
    """`scene` rotated 180 degrees about the vertical (y) axis: (x, z) -> (-x, -z)."""
    parts = tuple(
        Part(reflected(p.shape, (-1.0, 1.0, -1.0)), p.color, p.name, p.role) for p in scene.parts
    )
    return Scene(f"turned {scene.name}", scene.noun, scene.front_word, scene.back_word, parts)
