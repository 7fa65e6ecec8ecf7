"""summarize: rows, status fallbacks, differing flags, CSV/markdown tables and the curve plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sjc_dsds.cli import build_config
from sjc_dsds.config import dump_config
from sjc_dsds.summarize import collect_runs, main, read_curves, write_tables


def make_run(
    folder: Path,
    flags: dict[str, object],
    status: dict | None = None,
    summary: dict | None = None,
    checkpoints: tuple[int, ...] = (),
    test_metrics: dict | None = None,
    n_lines: int = 4,
) -> Path:
    """A hand-built run directory: config.yaml, metrics.jsonl and whichever records are given."""
    folder.mkdir(parents=True)
    cfg = build_config({"family": "toy", "n_steps": 4, "out_dir": str(folder), **flags})
    (folder / "config.yaml").write_text(dump_config(cfg))
    lines = [{"step": s, "loss_emptiness": 1.0 / (s + 1), "view": "front"} for s in range(n_lines)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "checkpoints").mkdir()
    for step in checkpoints:
        (folder / "checkpoints" / f"step_{step:07d}.safetensors").write_bytes(b"")
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    if test_metrics is not None:
        (folder / "test").mkdir()
        (folder / "test" / "metrics.json").write_text(json.dumps(test_metrics))
    return folder


@pytest.fixture
def four_runs(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    make_run(
        root / "a_finished",
        {"score_thres": 4.0, "seed": 1},
        status={"state": "finished", "step": 4, "n_steps": 4, "reason": None, "exit_code": 0},
        summary={"final_step": 4, "finished": True, "final_metrics": {"gt_janus_rate": 0.25}},
        checkpoints=(2, 4),
        test_metrics={"clip_score": 30.5, "a_lpips": None},
    )
    make_run(
        root / "b_failed",
        {"score_thres": 8.0, "toy.scene": "cube"},
        status={"state": "failed", "step": 1, "n_steps": 4, "reason": "non-finite score"},
    )
    make_run(
        root / "c_killed",
        {"score_thres": 8.0},
        status={"state": "running", "step": 2, "n_steps": 4, "reason": None},
        checkpoints=(2,),
    )
    # Older layout: no status.json, only checkpoints.
    make_run(root / "nested" / "d_old", {"score_thres": 8.0}, checkpoints=(2,), n_lines=2)
    return root


def test_rows_status_and_differing_flags(four_runs: Path) -> None:
    rows = {row["run"]: row for row in collect_runs(four_runs)}
    assert sorted(rows) == ["a_finished", "b_failed", "c_killed", "nested/d_old"]
    assert [rows[r]["status"] for r in sorted(rows)] == ["finished", "failed", "killed", "stopped"]
    assert rows["b_failed"]["reason"] == "non-finite score"
    assert "no live process" in rows["c_killed"]["reason"]
    assert (
        rows["nested/d_old"]["final_step"] == 2 and "checkpoint" in rows["nested/d_old"]["reason"]
    )
    assert rows["a_finished"]["seed"] == 1 and rows["b_failed"]["seed"] == 0
    assert rows["b_failed"]["prompt"] == "a cube" and rows["a_finished"]["prompt"] == "a head"
    # Exactly the flags that differ (seed and out_dir are columns of their own / ignored).
    flags = {key for key in rows["a_finished"] if key.startswith("--")}
    assert flags == {"--score_thres", "--toy.scene"}
    assert rows["a_finished"]["--score_thres"] == 4.0
    assert rows["a_finished"]["gt_janus_rate"] == 0.25 and rows["a_finished"]["clip_score"] == 30.5
    assert rows["a_finished"]["a_lpips"] is None and "clip_score" not in rows["b_failed"]


def test_tables_hold_every_row_and_column(four_runs: Path, tmp_path: Path) -> None:
    rows = collect_runs(four_runs)
    columns = write_tables(rows, tmp_path / "t.csv", tmp_path / "t.md")
    with (tmp_path / "t.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert [r["run"] for r in table] == [r["run"] for r in rows]
    assert table[0]["--score_thres"] == "4.0" and table[1]["--toy.scene"] == "cube"
    assert table[1]["clip_score"] == "" and columns[-1] == "reason"
    markdown = (tmp_path / "t.md").read_text().splitlines()
    assert len(markdown) == 2 + len(rows) and markdown[0].count("|") == len(columns) + 1
    write_tables(rows, None, tmp_path / "few.md", columns=["run", "status"])
    assert (tmp_path / "few.md").read_text().splitlines()[2] == "| a_finished | finished |"


def test_curves_skip_a_cut_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", {}, n_lines=3)
    with (run / "metrics.jsonl").open("a") as stream:
        stream.write('{"step": 3, "loss_empt')
    steps, values = read_curves(run, ["loss_emptiness"])["loss_emptiness"]
    assert steps == [0, 1, 2] and values == [1.0, 0.5, pytest.approx(1 / 3)]


def test_cli_writes_csv_markdown_and_plot(four_runs: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    assert main([str(four_runs)]) == 0
    assert (four_runs / "summary.csv").read_text().count("\n") == 5
    assert (four_runs / "summary.md").exists()
    assert (four_runs / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "4 runs" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2
    assert main([str(tmp_path), "--out", "x.txt"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "no such folder" in errors[0] and "no run directory" in errors[1]


def test_running_with_a_live_lock_stays_running(tmp_path: Path) -> None:
    from sjc_dsds.run_dir import RunDir, RunLock

    run = make_run(tmp_path / "r", {}, status={"state": "running", "step": 1, "n_steps": 4})
    lock = RunLock(RunDir(run)).acquire()
    try:
        assert collect_runs(tmp_path)[0]["status"] == "running"
    finally:
        lock.release()
    assert collect_runs(tmp_path)[0]["status"] == "killed"
