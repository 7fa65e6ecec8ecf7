"""The Janus benchmark v2 script: a tiny quick tier on held-out scenes writes gates first and
every arm's scores with intervals; G4 (neutral prompt: +prompt equals plain bit for bit) holds."""

from __future__ import annotations

import json

import pytest
from experiment_scripts import load_experiment


def _load_benchmark():
    return load_experiment("janus_benchmark")


@pytest.mark.slow
def test_quick_tier_on_held_out_scenes_writes_gates_and_per_arm_intervals(tmp_path, capsys):
    benchmark = _load_benchmark()
    out = tmp_path / "r.json"
    argv = ["--tier", "quick", "--scene_seeds", "3", "--n_steps", "3", "--guidance", "2.5"]
    argv += ["--out", str(out)]
    assert benchmark.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["world_hash"] and record["commit"]
    assert record["settings"]["scenes"] == ["seed3"]
    assert list(record["gates"]) == ["2.5"]  # --guidance replaced the tier's scales
    gates = record["gates"]["2.5"]
    assert set(gates) == {
        "G1_fixed_point",
        "G2_reachable",
        "G3_bias_present_and_removable",
        "G4_neutral_prompt_bit_equal",
    }
    assert gates["G4_neutral_prompt_bit_equal"] is True
    summary = record["summary"]["2.5"]
    assert set(summary) == set(benchmark.ARMS)
    for metrics in summary.values():
        for key in benchmark.TABLE_KEYS:
            mean, low, high = metrics[key]["mean"]
            assert low <= mean <= high or mean != mean  # nan when undefined
    # Plain minus plain is exactly zero: the arms are paired.
    assert summary["plain"]["psnr"]["minus_plain"] == [0.0, 0.0, 0.0]
    # Prompt debiasing dropped the front word from the back view's prompt.
    back = record["prompts"]["seed3"]["prompt_oracle"]["back"]
    assert record["prompts"]["seed3"]["plain"]["back"] != back
    printed = capsys.readouterr().out
    assert printed.index("G1_fixed_point") < printed.index("total")


def test_split_units_keeps_order_and_covers_every_unit():
    benchmark = _load_benchmark()
    units = [("gates", "a", -1), *[("seed", "a", s) for s in range(5)]]
    units += [("gates", "b", -1), *[("seed", "b", s) for s in range(5)]]
    for n_chunks in (1, 2, 3, 20):
        chunks = benchmark.split_units(units, n_chunks)
        assert [unit for chunk in chunks for unit in chunk] == units
        assert len(chunks) == n_chunks if n_chunks <= 3 else 1 <= len(chunks) <= len(units)
    halves = benchmark.split_units(units, 2)
    assert abs(len(halves[0]) - len(halves[1])) <= 2


def test_run_key_separates_arms_that_train_differently():
    benchmark = _load_benchmark()
    from sjc_dsds.prompts import ViewPrompts

    arms = benchmark.ARMS
    same = ViewPrompts(texts={"front": "front view of a head", "back": "back view of a head"})
    other = ViewPrompts(texts={"front": "front view of a head", "back": "back view of a"})
    key = benchmark.run_key
    assert key(arms["prompt_oracle"], same) == key(arms["prompt_independent"], same)
    assert key(arms["prompt_oracle"], same) != key(arms["prompt_independent"], other)
    assert key(arms["plain"], same) != key(arms["score_dynamic"], same)
    assert key(arms["score_norm_matched"], same) is None  # depends on another arm's run
    assert key(arms["oracle_captions"], same) is None  # ignores its prompts


@pytest.mark.slow
def test_two_workers_give_the_same_record_as_one(tmp_path):
    benchmark = _load_benchmark()
    records = []
    for workers in ("1", "2"):
        out = tmp_path / f"r{workers}.json"
        argv = ["--tier", "quick", "--seeds", "0,1", "--n_steps", "2", "--workers", workers]
        assert benchmark.main([*argv, "--out", str(out)]) == 0
        records.append(json.loads(out.read_text()))
    for key in ("runs", "fixed_point", "unbiased_scores", "neutral_equal", "gates", "prompts"):
        assert records[0][key] == records[1][key]


def test_controls_run_plain_sjc_although_the_default_config_clips_the_score():
    benchmark = _load_benchmark()
    from sjc_dsds.toy.protocol import world_config

    base = world_config("cube", n_steps=5)
    assert base.score_thres > 0  # the default would clip
    control = benchmark.plain_config(base, 3)
    assert (control.score_thres, control.seed) == (0.0, 3)
