"""Ground-truth metrics of a field on the fixed orbit: PSNR per view, Janus rate, consistency, IoU.

All image metrics use RGB in [0, 1] at the run's render size. The Janus rate counts non-front
orbit views whose render is closer (mean squared error) to some ground-truth front view than to
its own ground-truth view: a back that shows a face scores as Janus.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sjc_dsds.config import SJCConfig
from sjc_dsds.field import VoxelRadianceField
from sjc_dsds.toy.ground_truth import orbit_views, render_scene_views, render_views
from sjc_dsds.toy.world import SILHOUETTE_ALPHA

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


def janus_flags(
    renders: torch.Tensor, ground_truth: torch.Tensor, labels: Sequence[str]
) -> torch.Tensor:
    """Bool per non-front view: its render is nearer to some ground-truth front view than to its
    own ground truth. Inputs [n, c, h, w] along the orbit; returns [n_non_front]."""
    front = [index for index, label in enumerate(labels) if label == "front"]
    others = [index for index, label in enumerate(labels) if label != "front"]
    if not front or not others:
        raise ValueError("the orbit needs front and non-front views to measure Janus")
    own = mean_squared_errors(renders[others], ground_truth[others])  # [n_non_front]
    to_front = pairwise_mean_squared_errors(renders[others], ground_truth[front])  # [n_nf, n_f]
    return to_front.min(dim=1).values < own


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


def orbit_metrics(
    renders: torch.Tensor,
    opacity: torch.Tensor,
    ground_truth: torch.Tensor,
    ground_truth_opacity: torch.Tensor,
    labels: Sequence[str],
) -> dict[str, float]:
    """Every ground-truth metric from orbit renders and references ([n, 3, h, w] RGB in [0, 1],
    [n, 1, h, w] opacity) and the orbit's view labels."""
    psnr = psnr_from_mse(mean_squared_errors(renders, ground_truth))
    iou = silhouette_iou(opacity, ground_truth_opacity)
    non_front = [label for label in labels if label != "front"]
    # Janus needs front and non-front views on the orbit (narrow --pose.front_half_width_deg
    # can leave none); unmeasurable rates are NaN, written as null.
    measurable = len(non_front) not in (0, len(labels))
    flags = janus_flags(renders, ground_truth, labels) if measurable else None
    metrics: dict[str, float] = {
        "gt_psnr": float(psnr.mean()),
        "gt_silhouette_iou": float(iou.mean()),
        "gt_silhouette_iou_min": float(iou.min()),
        "gt_janus_rate": float(flags.float().mean()) if flags is not None else math.nan,
        "gt_orbit_adjacent_difference": adjacent_difference(renders),
        "gt_orbit_adjacent_difference_reference": adjacent_difference(ground_truth),
    }
    back = torch.tensor([label == "back" for label in non_front])
    if bool(back.any()):
        rate = float(flags[back].float().mean()) if flags is not None else math.nan
        metrics["gt_janus_rate_back"] = rate
    for view in METRIC_VIEWS:
        chosen = torch.tensor([label == view for label in labels])
        if bool(chosen.any()):
            metrics[f"gt_psnr_{view}"] = float(psnr[chosen].mean())
            metrics[f"gt_silhouette_iou_{view}"] = float(iou[chosen].mean())
    return metrics


@torch.no_grad()
def ground_truth_metrics(field: VoxelRadianceField, cfg: SJCConfig) -> dict[str, float]:
    """Metrics of a trained field against the ground truth of `cfg.toy.scene` on the fixed orbit.

    Keys start with `gt_`: PSNR overall and per view class (front/side/back), Janus rate (and
    its back-view share), adjacent-frame difference of the render (with the ground truth's own
    value for reference) and silhouette IoU (mean, per class and worst view).
    """
    device = next(field.parameters()).device
    views = orbit_views(cfg)
    cameras = [view.camera for view in views]
    rendered = render_views(field, cameras)
    reference = render_scene_views(cfg.toy.scene, cameras, cfg, device)
    return orbit_metrics(
        ((rendered.image + 1) / 2).clamp(0, 1).cpu(),
        rendered.opacity.cpu(),
        ((reference.image + 1) / 2).clamp(0, 1).cpu(),
        reference.opacity.cpu(),
        [view.label for view in views],
    )
