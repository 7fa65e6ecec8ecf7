"""The learned toy denoiser: its preconditioning limit, and the trainer's cache (issue 14)."""

from __future__ import annotations

import json

import pytest
import torch
from experiment_scripts import load_experiment

from sjc_dsds.toy.learned import (
    LearnedToyScoreModel,
    TinyUNet,
    model_path,
    training_settings,
)
from sjc_dsds.toy.prior import prior_cache_key
from sjc_dsds.toy.protocol import world_config


def test_untrained_unet_returns_its_input_at_tiny_sigma_and_not_at_large_sigma():
    # Karras preconditioning: D = c_skip x + c_out F with c_skip -> 1, c_out -> 0 as sigma -> 0,
    # whatever the weights; at large sigma the network's output dominates.
    torch.manual_seed(0)
    network = TinyUNet(n_text=7).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    text = torch.zeros(2, 7)
    with torch.no_grad():
        tiny = network(x, torch.full((2,), 1e-4), text)
        large = network(x, torch.full((2,), 10.0), text)
    torch.testing.assert_close(tiny, x, atol=1e-3, rtol=0)
    assert (large - x).abs().mean() > 0.1


@pytest.mark.slow
def test_trainer_caches_under_the_world_key_and_reuses_it(tmp_path, capsys):
    trainer = load_experiment("train_toy_denoiser")
    argv = ["--scene", "cube", "--n_steps", "3", "--n_images", "64", "--front_bias", "0"]
    argv += ["--cache_dir", str(tmp_path)]
    assert trainer.main(argv) == 0
    cfg = world_config("cube", **{"toy.n_images": 64, "toy.front_bias": 0.0})
    path = model_path(tmp_path, "cube", prior_cache_key(cfg), training_settings(3))
    assert path.exists()
    table = json.loads(path.with_suffix(".json").read_text())
    assert table["settings"] == training_settings(3)
    # Another front bias is another world: another key.
    biased = world_config("cube", **{"toy.n_images": 64})
    assert model_path(tmp_path, "cube", prior_cache_key(biased), training_settings(3)) != path
    weights = path.read_bytes()
    capsys.readouterr()
    assert trainer.main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    assert path.read_bytes() == weights  # not retrained
    model = LearnedToyScoreModel.load(path, 3.0, torch.device("cpu"))
    noised = torch.randn(2, 3, 32, 32)
    out = model.denoise(noised, 0.5, model.condition("back view of a red cube"))
    assert out.shape == noised.shape and torch.isfinite(out).all()


def test_backbone_controls_name_the_training_command_for_a_missing_model(tmp_path):
    controls = load_experiment("janus_backbone_controls")
    argv = ["--backbones", "learned", "--scenes", "cube", "--cache_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"train_toy_denoiser.py --scene cube --n_steps 1200"):
        controls.main(argv)
