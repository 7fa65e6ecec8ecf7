"""Gate logic, bootstrap intervals and the probes' decision accuracy."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds.toy.arms import train_arm, view_prompts
from sjc_dsds.toy.denoiser import ToyScoreModel
from sjc_dsds.toy.gates import (
    bootstrap_mean,
    gate_bias,
    gate_fixed_point,
    gate_reachable,
    paired_differences,
)
from sjc_dsds.toy.probes import RateProbe, decision_accuracy, ideal_probe, independent_probe
from sjc_dsds.toy.protocol import world_config


def _seeds(*values: float) -> dict[str, float]:
    return {str(i): v for i, v in enumerate(values)}


def test_fixed_point_gate_needs_under_one_db_loss_and_ten_degrees():
    good = {"start_psnr": 30.0, "end_psnr": 29.2, "end_pose_error_deg": 9.0}
    assert gate_fixed_point([good])
    assert not gate_fixed_point([good, {**good, "end_psnr": 28.9}])
    assert not gate_fixed_point([{**good, "end_pose_error_deg": 10.0}])
    assert not gate_fixed_point([])


def test_reachable_gate_needs_four_of_five_seeds_on_every_scene():
    assert gate_reachable({"a": _seeds(0.8, 0.9, 1, 1, 0.1), "b": _seeds(1, 1, 1, 1, 1)})
    assert not gate_reachable({"a": _seeds(0.8, 0.9, 1, 0.7, 0.1), "b": _seeds(1, 1, 1, 1, 1)})


def test_bias_gate_needs_janus_on_two_scenes_and_none_without_bias():
    biased = {"a": _seeds(0.5, 0.6, 0.9, 0, 0), "b": _seeds(1, 1, 1, 0, 0), "c": _seeds(0, 0)}
    clean = {"a": _seeds(0.0, 0.1, 0.1), "b": _seeds(0, 0, 0), "c": _seeds(0.1)}
    assert gate_bias(biased, clean)
    assert not gate_bias({**biased, "b": _seeds(1, 1, 0, 0, 0)}, clean)
    assert not gate_bias(biased, {**clean, "c": _seeds(0.3)})


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_constant_values():
    mean, low, high = bootstrap_mean({"a": _seeds(1, 2, 3), "b": _seeds(5, 6, 7)})
    assert mean == pytest.approx(4.0) and low < mean < high and 1 <= low and high <= 7
    assert bootstrap_mean({"a": _seeds(2, 2), "b": _seeds(2, 2)}) == (2.0, 2.0, 2.0)
    diff = paired_differences({"a": _seeds(3, 5)}, {"a": _seeds(1, 1)})
    assert diff == {"a": {"0": 2, "1": 4}}


def test_probe_decision_accuracy_against_the_ideal_decisions():
    cfg = world_config("head", **{"toy.n_images": 256})
    ideal = ideal_probe(cfg)
    assert decision_accuracy(ideal, ideal, cfg)["accuracy"] == 1.0
    # The ideal drops 'smiling' from side, back, overhead and 'braided' from front (4 of 8
    # decisions); a probe that knows nothing (uniform) drops nothing: accuracy 4 / 8.
    ideal_drops = decision_accuracy(ideal, ideal, cfg)["ideal"]
    assert sum(ideal_drops.values()) == 4
    assert ideal_drops["a braided head | braided | front"]
    uniform = RateProbe(dict.fromkeys(("front", "side", "back", "overhead"), 0.25), {}, {})
    assert decision_accuracy(uniform, ideal, cfg)["accuracy"] == 0.5
    probe = independent_probe(cfg, 0.1)
    p = probe.p_view(["a smiling head", "a braided head"])
    assert p[0, 0] > p[1, 0]
    assert torch.allclose(p.sum(1), torch.ones(2))


def test_view_condition_replaces_the_label_prompt_of_each_step():
    small = {"toy.n_images": 32, "vox.grid_size": 8, "pose.rend_hw": 8, "n_steps": 4}
    cfg = world_config("head", **small)
    model = ToyScoreModel.from_config(cfg, torch.device("cpu"))
    prompts = view_prompts(cfg, torch.device("cpu"), None)
    seen = []

    def same_as_label(view):
        seen.append(view.label)
        return model.condition(prompts.text(view.label))

    plain = train_arm(cfg, model, prompts)
    hooked = train_arm(cfg, model, prompts, view_condition=same_as_label)
    assert len(seen) == 4
    assert torch.equal(plain.field.raw_density, hooked.field.raw_density)
    # Another conditioning per view changes the run: the hook is what the step used.
    other = train_arm(cfg, model, prompts, view_condition=lambda view: model.condition("a head"))
    assert not torch.equal(plain.field.raw_density, other.field.raw_density)
