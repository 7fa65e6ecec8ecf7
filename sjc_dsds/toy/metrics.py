"""Ground-truth metrics of a field on the fixed orbit: PSNR per view, Janus rate, consistency, IoU.

All image metrics use RGB in [0, 1] at the run's render size. The Janus rate counts non-front
orbit views whose render is closer (mean squared error) to some ground-truth front view than to
its own ground-truth view: a back that shows a face scores as Janus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.toy.ground_truth import ViewRenders, orbit_views, render_scene_views, render_views
from sjc_dsds.toy.parts import (
    NO_ROLE,
    ROLE_COLORS,
    classify_pixels,
    part_palette,
    part_scores,
    roles_from_part_render,
    scoring_scene,
)
from sjc_dsds.toy.scenes import Scene, build_scene, configured_scene_name, with_role_colors
from sjc_dsds.toy.world import POSE_N_AZIMUTHS, SILHOUETTE_ALPHA

# PSNR classes of the orbit (it sits below the overhead elevation, so it has no overhead views).
METRIC_VIEWS: tuple[str, ...] = ("front", "side", "back")


def mean_squared_errors(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-pair mean squared error of images [n, c, h, w] against references [n, c, h, w]. [n]."""
    return (images - references).square().flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for signals with peak 1: -10 log10(mse); infinite for identical images."""
    return -10.0 * torch.log10(mse)


def pairwise_mean_squared_errors(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every image [n, ...] against every reference [m, ...]: [n, m]."""
    flat_images, flat_references = images.flatten(1), references.flatten(1)
    return (flat_images[:, None, :] - flat_references[None, :, :]).square().mean(-1)


def adjacent_difference(frames: torch.Tensor) -> float:
    """Mean absolute change between cyclically adjacent orbit frames [n, c, h, w] (lower: steadier).

    The orbit is a closed loop, so the last frame is paired with the first.
    """
    return float((frames.roll(-1, dims=0) - frames).abs().mean())


def silhouette_iou(opacity: torch.Tensor, reference_opacity: torch.Tensor) -> torch.Tensor:
    """IoU of alpha masks (opacity > SILHOUETTE_ALPHA) per view; inputs [n, 1, h, w]. [n]."""
    mask, reference = opacity > SILHOUETTE_ALPHA, reference_opacity > SILHOUETTE_ALPHA
    intersection = (mask & reference).flatten(1).sum(1).float()
    union = (mask | reference).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


@dataclass(frozen=True)
class Reference:
    """The ground truth of one scene on the orbit, and what the metrics compare with it.

    image [n, 3, h, w] in [0, 1] and opacity [n, 1, h, w] on the orbit; roles [n, h, w] from the
    part-ID render; labels and azimuths of the orbit views; a bank of ground-truth renders at
    POSE_N_AZIMUTHS azimuths for pose recovery; the scene's part colours and their roles.
    """

    image: torch.Tensor
    opacity: torch.Tensor
    roles: torch.Tensor
    labels: list[str]
    azimuths: torch.Tensor
    bank_image: torch.Tensor
    bank_azimuths: torch.Tensor
    colors: torch.Tensor
    color_roles: torch.Tensor


def to_unit_rgb(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] renders to [0, 1] RGB on the CPU."""
    return ((image + 1) / 2).clamp(0, 1).cpu()


@torch.no_grad()
def build_reference(scene: Scene | str, cfg: SJCConfig, device: torch.device) -> Reference:
    """Render the ground truth of `scene` for the metrics at the run's render size."""
    scene = build_scene(scene) if isinstance(scene, str) else scene
    scored = scoring_scene(scene)
    views = orbit_views(cfg)
    cameras = [view.camera for view in views]
    truth = render_scene_views(scene, cameras, cfg, device)
    part_render = render_scene_views(with_role_colors(scored, ROLE_COLORS), cameras, cfg, device)
    colors, color_roles = part_palette(scored)
    # Bank azimuths (k + 0.5) * 360 / 72 include every orbit azimuth (k + 0.5) * 360 / 24.
    bank_views = orbit_views(cfg, POSE_N_AZIMUTHS)
    bank = render_scene_views(scene, [view.camera for view in bank_views], cfg, device)
    return Reference(
        image=to_unit_rgb(truth.image),
        opacity=truth.opacity.cpu(),
        roles=truth_roles(truth, part_render, colors, color_roles),
        labels=[view.label for view in views],
        azimuths=torch.tensor([view.azimuth_deg for view in views]),
        bank_image=to_unit_rgb(bank.image),
        bank_azimuths=torch.tensor([view.azimuth_deg for view in bank_views]),
        colors=colors,
        color_roles=color_roles,
    )


def truth_roles(
    truth: ViewRenders, part_render: ViewRenders, colors: torch.Tensor, color_roles: torch.Tensor
) -> torch.Tensor:
    """Role of each ground-truth pixel from the part-ID render, kept where the colour classifier
    reads the ground truth's own render as some part (blended edge pixels are left out for the
    truth as they would be for a perfect render). [n, h, w]."""
    roles = roles_from_part_render(to_unit_rgb(part_render.image), part_render.opacity.cpu())
    readable = classify_pixels(to_unit_rgb(truth.image), truth.opacity.cpu(), colors, color_roles)
    return torch.where(readable != NO_ROLE, roles, torch.full_like(roles, NO_ROLE))


def pose_errors(
    image: torch.Tensor,
    bank_image: torch.Tensor,
    bank_azimuths: torch.Tensor,
    azimuths: torch.Tensor,
) -> torch.Tensor:
    """Per view: degrees between its azimuth and that of the bank render nearest to it (MSE).

    image [n, 3, h, w], bank_image [m, 3, h, w], bank_azimuths [m], azimuths [n] -> [n].
    """
    best = pairwise_mean_squared_errors(image, bank_image).argmin(dim=1)
    difference = (bank_azimuths[best] - azimuths).remainder(360.0)
    return torch.minimum(difference, 360.0 - difference)


def orbit_scores(image: torch.Tensor, opacity: torch.Tensor, reference: Reference) -> dict:
    """Every ground-truth metric of orbit renders (image [n, 3, h, w] in [0, 1], opacity
    [n, 1, h, w]): part scores, pose error, PSNR of the mean MSE (overall and per view class),
    silhouette IoU, and adjacent-frame difference minus the ground truth's own."""
    roles = classify_pixels(image, opacity, reference.colors, reference.color_roles)
    scores: dict[str, float] = part_scores(reference.roles, roles)
    scores["pose_error_deg"] = float(
        pose_errors(image, reference.bank_image, reference.bank_azimuths, reference.azimuths).mean()
    )
    mse = mean_squared_errors(image, reference.image)
    iou = silhouette_iou(opacity, reference.opacity)
    scores["psnr"] = float(psnr_from_mse(mse.mean()))
    scores["iou"] = float(iou.mean())
    scores["iou_min"] = float(iou.min())
    for view in METRIC_VIEWS:
        chosen = torch.tensor([label == view for label in reference.labels])
        if bool(chosen.any()):
            scores[f"psnr_{view}"] = float(psnr_from_mse(mse[chosen].mean()))
    excess = adjacent_difference(image) - adjacent_difference(reference.image)
    scores["consistency_excess"] = excess
    return scores


@torch.no_grad()
def field_scores(field: VoxelRadianceField, reference: Reference, cfg: SJCConfig) -> dict:
    """`orbit_scores` of a field rendered on the orbit."""
    rendered = render_views(field, [view.camera for view in orbit_views(cfg)])
    return orbit_scores(to_unit_rgb(rendered.image), rendered.opacity.cpu(), reference)


@torch.no_grad()
def ground_truth_metrics(field: VoxelRadianceField, cfg: SJCConfig) -> dict[str, float]:
    """`orbit_scores` of a trained field against the configured scene, keys prefixed `gt_`."""
    device = next(field.parameters()).device
    reference = build_reference(configured_scene_name(cfg.toy), cfg, device)
    return {f"gt_{key}": value for key, value in field_scores(field, reference, cfg).items()}
