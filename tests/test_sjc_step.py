"""One `sjc_step` pinned against a hand computation on a tiny grid: the chained score's sign,
the detached render, the regulariser weight and the Adamax update."""

from __future__ import annotations

import copy

import pytest
import torch

from sjc_dsds import optimize
from sjc_dsds.cameras import sample_train_view
from sjc_dsds.config import build_config
from sjc_dsds.losses import emptiness_loss
from sjc_dsds.render import render_view
from sjc_dsds.render_reference import render_view_dense
from sjc_dsds.score import Conditioning, ScoreModel
from sjc_dsds.toy.denoiser import scaled_linear_sigmas

LR = 1e-3


class ZeroDenoiser(ScoreModel):
    """D(x, sigma) = 0: SJC's score (D - y) / sigma is then exactly -y / sigma."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.sigmas = scaled_linear_sigmas()
        self.data_shape = (3, side, side)
        self.device = torch.device("cpu")
        self.guidance_scale = 1.0

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return torch.zeros(len(prompts), 1)

    def denoise(self, noised: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        return torch.zeros_like(noised)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2


def adamax_first_step(gradient: torch.Tensor, lr: float) -> torch.Tensor:
    """torch's Adamax on its first step: theta -= lr * g / (|g| + eps) (bias-corrected m)."""
    return -lr * gradient / (gradient.abs() + 1e-8)


@pytest.mark.parametrize("emptiness_weight", [0.0, 3.0])
def test_one_step_moves_the_grids_as_computed_by_hand(emptiness_weight, tmp_path) -> None:
    cfg = build_config(
        {
            "family": "toy",
            "device": "cpu",
            "vox.grid_size": 6,
            "pose.rend_hw": 8,
            "lr": LR,
            "score_thres": 0.0,  # no clipping: the score is used as computed
            "emptiness_weight": emptiness_weight,
            "emptiness_step": 1.0,  # the x20 boost never applies in this one step
            "out_dir": str(tmp_path),
        }
    )
    state = optimize.RunState.create(cfg, model=ZeroDenoiser(8))
    with torch.no_grad():  # a field with something in it, so every gradient term is non-zero
        state.field.raw_density.copy_(torch.randn(state.field.raw_density.shape))
    before = copy.deepcopy(state.field)
    camera_stream = torch.Generator().set_state(state.streams.camera.get_state())

    metrics, view, _ = optimize.sjc_step(state)

    # The same camera, rendered by the dense reference on the untouched copy of the field.
    camera = sample_train_view(cfg.pose, camera_stream).camera
    assert camera.cam_to_world.equal(view.camera.cam_to_world)
    params = [before.raw_density, before.feature_grid]
    image = render_view_dense(before, camera).image
    sigma = metrics["sigma"]
    minus_score = image.detach() / sigma  # the image's gradient is -score = y / sigma
    grads = torch.autograd.grad(image, params, grad_outputs=minus_score)
    if emptiness_weight:
        out = render_view(before, camera)
        loss = emptiness_loss(out.weights, out.n_samples_dense, cfg.emptiness_scale)
        extra = torch.autograd.grad(emptiness_weight * loss, params, allow_unused=True)
        grads = [g + (e if e is not None else 0) for g, e in zip(grads, extra)]
    after = [state.field.raw_density, state.field.feature_grid]
    for old, new, gradient in zip(params, after, grads):
        expected = adamax_first_step(gradient, LR)
        torch.testing.assert_close(new - old, expected, atol=2e-6, rtol=1e-3)
    assert metrics["emptiness_weight"] == emptiness_weight and state.step == 1
    # The update pulls the render toward D = 0: its mean magnitude falls.
    new_image = render_view_dense(state.field, camera).image
    assert new_image.abs().mean() < image.abs().mean()
