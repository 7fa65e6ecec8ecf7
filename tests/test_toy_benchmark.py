"""The Janus benchmark script: table arithmetic, and a tiny run writes every metric of every run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "janus_benchmark.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("janus_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_is_mean_and_sample_standard_deviation():
    benchmark = _load_benchmark()
    # mean(1, 2, 3, 6) = 3; sample variance = (4 + 1 + 0 + 9) / 3 = 14/3.
    mean, spread = benchmark.summarize([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert spread == pytest.approx((14 / 3) ** 0.5)
    assert benchmark.summarize([0.5]) == (0.5, 0.0)


def test_scene_prompts_carry_the_front_word():
    benchmark = _load_benchmark()
    assert benchmark.scene_prompt("head") == "a smiling head"
    assert benchmark.scene_prompt("cube") == "a red cube"


@pytest.mark.slow
def test_quick_benchmark_writes_every_metric_per_method_scene_and_seed(tmp_path, capsys):
    benchmark = _load_benchmark()
    out = tmp_path / "results.json"
    argv = ["--quick", "--n_steps", "4", "--seeds", "0", "1", "--out_dir", str(tmp_path), "--out"]
    assert benchmark.main([*argv, str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["results"]) == set(benchmark.METHODS)
    for per_scene in record["results"].values():
        assert set(per_scene) == {"head"}
        assert set(per_scene["head"]) == {"0", "1"}
        for metrics in per_scene["head"].values():
            assert {key for key, _, _ in benchmark.COLUMNS} <= set(metrics)
    # Prompt debiasing ran on the toy caption probe: its prompts.json records the word drops.
    prompts = json.loads((tmp_path / "head" / "sjc+prompt" / "seed0" / "prompts.json").read_text())
    assert prompts["view_prompts"]["texts"]["back"] == "backside view of a head"
    assert (tmp_path / "orbits_head.png").is_file()
    printed = capsys.readouterr().out
    assert all(f"| head | {method} |" in printed for method in benchmark.METHODS)
