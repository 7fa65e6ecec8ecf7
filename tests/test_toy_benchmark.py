"""The Janus benchmark v2 script: a tiny quick tier on held-out scenes writes gates first and
every arm's scores with intervals; G4 (neutral prompt: +prompt equals plain bit for bit) holds."""

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
