"""Part-level scores: which views show the front part (face) and the back part (hair).

The ground truth is rendered with one flat colour per part role, which gives every pixel's
role; a trained render's pixels (inside its silhouette) take the role of the nearest
ground-truth part colour. A part is present in a view when enough pixels show it, and the
per-view decisions are compared with the ground truth's: F1 over views, the rate of views
that show the part where the ground truth does not (Janus, for the front part) and the rate of
views that miss it where the ground truth shows it (faceless).
"""

from __future__ import annotations

import torch

from sjc_dsds.toy.scenes import PART_ROLES, Part, Scene, rgb
from sjc_dsds.toy.world import PART_COLOR_TOLERANCE, PART_MIN_FRACTION, SILHOUETTE_ALPHA

# Flat colours of the part-ID render ([-1, 1] range), one pure channel per role.
ROLE_COLORS = {"body": rgb(0.0, 1.0, 0.0), "front": rgb(1.0, 0.0, 0.0), "back": rgb(0.0, 0.0, 1.0)}
# Channel of each role in the part-ID render, and the code for background / unclassified.
ROLE_CHANNEL = {"body": 1, "front": 0, "back": 2}
NO_ROLE = -1
# SJC's constant white background ([-1, 1] range).
BACKGROUND = rgb(1.0, 1.0, 1.0)


def roles_from_part_render(image: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Role index (into PART_ROLES) of every pixel of a part-ID render, NO_ROLE outside the
    silhouette. image [n, 3, h, w] in [0, 1], opacity [n, 1, h, w] -> [n, h, w] int64."""
    channel_of_role = torch.tensor([ROLE_CHANNEL[role] for role in PART_ROLES])
    roles = image[:, channel_of_role].argmax(dim=1)
    return torch.where(opacity[:, 0] > SILHOUETTE_ALPHA, roles, torch.full_like(roles, NO_ROLE))


def scoring_scene(scene: Scene) -> Scene:
    """The scene with every front or back part whose colour is within 1.25 PART_COLOR_TOLERANCE
    of a part colour of another role counted as body (the head's skin-coloured nose): a blend of
    neighbouring colours must not read as a face."""
    colors = torch.tensor([part.color for part in scene.parts]).add(1).div(2)
    roles = [part.role for part in scene.parts]
    parts = []
    for index, part in enumerate(scene.parts):
        others = [j for j, role in enumerate(roles) if role != part.role]
        near = bool(others) and float((colors[others] - colors[index]).norm(dim=1).min()) < (
            1.25 * PART_COLOR_TOLERANCE
        )
        role = "body" if part.role != "body" and near else part.role
        parts.append(Part(part.shape, part.color, part.name, role))
    return Scene(scene.name, scene.noun, scene.front_word, scene.back_word, tuple(parts))


def part_palette(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """The scene's part colours in [0, 1] ([k + 1, 3]) and each colour's role index ([k + 1]);
    the last entry is the white background, role NO_ROLE, so that an edge pixel blended with
    the background is not read as a pale part."""
    colors = torch.tensor([*(part.color for part in scene.parts), BACKGROUND]).add(1).div(2)
    roles = torch.tensor([*(PART_ROLES.index(part.role) for part in scene.parts), NO_ROLE])
    return colors, roles


def classify_pixels(
    image: torch.Tensor, opacity: torch.Tensor, colors: torch.Tensor, roles: torch.Tensor
) -> torch.Tensor:
    """Role of each pixel of a render: that of the nearest palette colour when it is within
    PART_COLOR_TOLERANCE and the pixel is inside the silhouette, else NO_ROLE.

    image [n, 3, h, w] in [0, 1], opacity [n, 1, h, w], colors [k, 3], roles [k] -> [n, h, w].
    """
    pixels = image.permute(0, 2, 3, 1)[..., None, :]  # [n, h, w, 1, 3]
    distance = (pixels - colors.to(image)).norm(dim=-1)  # [n, h, w, k]
    nearest, which = distance.min(dim=-1)
    role = roles.to(image.device)[which]
    keep = (nearest < PART_COLOR_TOLERANCE) & (opacity[:, 0] > SILHOUETTE_ALPHA)
    return torch.where(keep, role, torch.full_like(role, NO_ROLE))


def part_present(role_map: torch.Tensor, role: str) -> torch.Tensor:
    """Per view: at least PART_MIN_FRACTION of its pixels show `role`. [n, h, w] -> [n] bool."""
    count = (role_map == PART_ROLES.index(role)).flatten(1).sum(1)
    return count >= PART_MIN_FRACTION * role_map[0].numel()


def presence_scores(truth: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """Agreement of per-view part decisions with the ground truth's (bool [n] each).

    f1: 2 TP / (2 TP + FP + FN) (1 when the part is absent in both everywhere); extra_rate:
    share of views without the part in the truth that show it; missing_rate: share of views
    with the part in the truth that miss it (nan when there is no such view).
    """
    tp = int((truth & predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    absent, present = int((~truth).sum()), int(truth.sum())
    return {
        "f1": f1,
        "extra_rate": fp / absent if absent else float("nan"),
        "missing_rate": fn / present if present else float("nan"),
    }


def opposite_view_scores(truth: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """Split the Janus rate's failures over pairs of opposite views of an even ring of views
    (view i and view i + n/2; bool [n] each), taking the pairs where the truth shows the front
    part in exactly one view: two_faced_rate is the share that show it in both, turned_rate the
    share that show it only in the view whose truth lacks it (the object is turned around, one
    face on the wrong side). nan when there is no such pair."""
    half = truth.shape[0] // 2
    if truth.shape[0] != 2 * half:
        raise ValueError(f"opposite views need an even number of views; got {truth.shape[0]}")
    first, second = truth[:half], truth[half:]
    informative = first ^ second
    n = int(informative.sum())
    if n == 0:
        return {"two_faced_rate": float("nan"), "turned_rate": float("nan")}
    shown_true = torch.where(first, predicted[:half], predicted[half:])
    shown_false = torch.where(first, predicted[half:], predicted[:half])
    return {
        "two_faced_rate": int((informative & shown_true & shown_false).sum()) / n,
        "turned_rate": int((informative & ~shown_true & shown_false).sum()) / n,
    }


def part_scores(truth_roles: torch.Tensor, render_roles: torch.Tensor) -> dict[str, float]:
    """Front- and back-part scores of a render's role map against the truth's ([n, h, w] each,
    an even ring of views): face_f1, janus_rate, faceless_rate, two_faced_rate, turned_rate,
    back_f1, back_extra_rate, back_missing_rate."""
    truth_front, render_front = (
        part_present(truth_roles, "front"),
        part_present(render_roles, "front"),
    )
    front = presence_scores(truth_front, render_front)
    back = presence_scores(part_present(truth_roles, "back"), part_present(render_roles, "back"))
    return {
        **opposite_view_scores(truth_front, render_front),
        "face_f1": front["f1"],
        "janus_rate": front["extra_rate"],
        "faceless_rate": front["missing_rate"],
        "back_f1": back["f1"],
        "back_extra_rate": back["extra_rate"],
        "back_missing_rate": back["missing_rate"],
    }
