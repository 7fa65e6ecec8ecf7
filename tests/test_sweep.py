"""Sweeps: spec expansion and names, the local executor (failure, re-run, SIGKILL and resume),
submitit's local executor with a pre-emption and requeue, and the SLURM dry run."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sjc_dsds import build_config, run_sjc
from sjc_dsds.sweep.cli import main
from sjc_dsds.sweep.spec import SweepSpecError, expand_runs, load_spec
from sjc_dsds.sweep.status import ledger_path, read_json

REPO = Path(__file__).resolve().parents[1]

# Tiny toy runs: about 2 s each on one CPU thread, most of it the ground-truth metrics.
BASE = {
    "family": "toy",
    "device": "cpu",
    "n_steps": 12,
    "save_every": 4,
    "vox.grid_size": 8,
    "pose.rend_hw": 16,
    "pose.n_test_frames": 2,
    "toy.n_images": 16,
}


def write_spec(path: Path, root: Path, **sections: object) -> Path:
    spec = {"root": str(root), "base": dict(BASE), **sections}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def final_field(run_dir: Path, n_steps: int) -> dict[str, torch.Tensor]:
    tensors = load_file(run_dir / "checkpoints" / f"step_{n_steps:07d}.safetensors")
    return {key: value for key, value in tensors.items() if key.startswith("field.")}


def assert_same_field(run_dir: Path, flags: dict, tmp_path: Path) -> None:
    """The run's final field equals an uninterrupted run of the same config, bitwise."""
    reference = tmp_path / "reference" / run_dir.name
    cfg = build_config({**flags, "out_dir": str(reference)})
    run_sjc(cfg, progress=False)
    got, want = final_field(run_dir, cfg.n_steps), final_field(reference, cfg.n_steps)
    assert got.keys() == want.keys() and got
    for key in want:
        assert torch.equal(got[key], want[key]), key


def table(root: Path) -> dict[str, dict[str, str]]:
    with (root / "sweep.csv").open() as stream:
        return {row["run"]: row for row in csv.DictReader(stream)}


def test_spec_expands_to_stable_unique_names_and_validated_configs(tmp_path: Path) -> None:
    grid = {"score_thres": [0, 2.5], "toy.prompt": ["a smiling head!", "a head"]}
    spec = load_spec(write_spec(tmp_path / "s.yaml", tmp_path / "out", grid=grid, seeds=2))
    runs = expand_runs(spec)
    names = [run.name for run in runs]
    assert names == [
        f"score_thres={t}__prompt={p}__seed={s}"
        for t in ("0", "2.5")
        for p in ("a_smiling_head", "a_head")
        for s in (0, 1)
    ]
    run = runs[5]  # score_thres 2.5, 'a smiling head!', seed 1
    cfg = run.config()
    assert (cfg.score_thres, cfg.toy.prompt, cfg.seed) == (2.5, "a smiling head!", 1)
    assert cfg.out_dir == str(tmp_path / "out" / names[5]) and cfg.n_steps == BASE["n_steps"]
    # Named variants cross the grid; labels shorten names.
    spec = load_spec(
        write_spec(
            tmp_path / "v.yaml",
            tmp_path / "out",
            variants=[{"name": "plain", "score_thres": 0}, {"name": "dsds", "score_thres": 8}],
            grid={"toy.front_bias": [0.5]},
            labels={"toy.front_bias": "bias"},
        )
    )
    names = [run.name for run in expand_runs(spec)]
    assert names == ["plain__bias=0.5__seed=0", "dsds__bias=0.5__seed=0"]
    bad = [
        ({"grid": {"toy.prompt": ["A head", "a head"]}}, "two runs get the name"),
        ({"grid": {"score_thres": [1]}, "variants": [{"score_thres": 2}]}, "set it in one"),
        ({"grid": {"sed": [1]}}, "unknown flag --sed"),
        ({"grid": {"seed": [1, 2]}}, "set by the sweep"),
        ({"grid": {"n_steps": [0]}}, "--n_steps must be > 0"),
        ({"seedz": [1]}, "seedz"),
    ]
    for sections, message in bad:
        path = write_spec(tmp_path / "bad.yaml", tmp_path / "out", **sections)
        with pytest.raises(SweepSpecError, match=message):
            expand_runs(load_spec(path))
    assert not (tmp_path / "out").exists()


def test_local_sweep_runs_grid_reports_failure_and_rerun_skips_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "out"
    spec = write_spec(
        tmp_path / "s.yaml",
        root,
        variants=[{"name": "ok"}, {"name": "broken", "device": "cuda:99"}],
        grid={"score_thres": [0, 4], "emptiness_weight": [1000, 3000]},
        seeds=[0, 1],
        local={"workers": 2, "gpus": []},
    )
    assert main([str(spec), "--executor", "local"]) == 1  # a run failed; the others finished
    runs = expand_runs(load_spec(spec))
    ok = [run for run in runs if run.name.startswith("ok__")]
    assert sorted(path.name for path in root.iterdir() if path.name.startswith("ok__")) == sorted(
        f"ok__score_thres={t}__emptiness_weight={w}__seed={s}"
        for t in (0, 4)
        for w in (1000, 3000)
        for s in (0, 1)
    )
    for run in ok:
        saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        want = run.varying
        assert (saved["score_thres"], saved["emptiness_weight"], saved["seed"]) == (
            want["score_thres"],
            want["emptiness_weight"],
            want["seed"],
        )
        assert saved["out_dir"] == str(run.run_dir) and saved["n_steps"] == BASE["n_steps"]
        assert json.loads((run.run_dir / "summary.json").read_text())["finished"]
    rows = table(root)
    assert len(rows) == 16 and (root / "sweep.md").read_text().count("\n") == 18
    for run in runs:
        row = rows[run.name]
        if run in ok:
            assert (row["status"], row["final_step"], row["reason"]) == ("done", "12", "")
            assert row["gt_psnr"] != ""
        else:
            assert row["status"] == "failed" and "cuda:99" in row["reason"], row
    # The workers reused their score model: at most one load per worker for the 8 good runs.
    loads = sum(
        (run.run_dir / "sweep.log").read_text().count("loaded the toy score model") for run in ok
    )
    assert 1 <= loads <= 2
    # ... and reuse does not change a run: it equals a standalone run bitwise.
    assert_same_field(ok[3].run_dir, ok[3].flags, tmp_path)

    capsys.readouterr()
    before = {run.name: (run.run_dir / "summary.json").stat().st_mtime_ns for run in ok}
    assert main([str(spec), "--executor", "local"]) == 1
    out = capsys.readouterr().out
    assert out.count(": skip (done)") == 8 and out.count(": retry (failed)") == 8
    assert before == {run.name: (run.run_dir / "summary.json").stat().st_mtime_ns for run in ok}
    attempts = {run.name: read_json(ledger_path(root, run.name))["attempts"] for run in runs}
    assert attempts == {run.name: 1 if run in ok else 2 for run in runs}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sweep_command(spec: Path) -> list[str]:
    return [sys.executable, "-m", "sjc_dsds.sweep", str(spec), "--executor", "local"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_sigkilled_sweep_resumes_to_the_uninterrupted_fields(tmp_path: Path) -> None:
    root = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", root, seeds=[0, 1, 2], local={"workers": 2, "gpus": []})
    spec.write_text(spec.read_text().replace("n_steps: 12", "n_steps: 60"))
    runs = expand_runs(load_spec(spec))
    driver = subprocess.Popen(
        _sweep_command(spec), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def running() -> list[dict]:
        records = [read_json(ledger_path(root, run.name)) for run in runs[:2]]
        return [r for r in records if r and r["state"] == "running"]

    try:
        _wait_for(lambda: len(running()) == 2, 60, "two running runs")
        first = runs[0].run_dir / "checkpoints"
        _wait_for(lambda: len(list(first.glob("*.safetensors"))) >= 2, 60, "a checkpoint")
        workers = [record["pid"] for record in running()]
        os.kill(driver.pid, signal.SIGKILL)
        os.kill(workers[0], signal.SIGKILL)
        driver.wait()
        # The other worker notices its driver is gone and stops by itself.
        _wait_for(lambda: not _pid_alive(workers[1]), 30, "the orphaned worker to stop")
    finally:
        driver.kill()
    unfinished = [run for run in runs if not (run.run_dir / "summary.json").exists()]
    assert len(unfinished) >= 2
    done = subprocess.run(_sweep_command(spec), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resume from step" in done.stdout
    for run in unfinished[:2]:
        assert_same_field(run.run_dir, run.flags, tmp_path)
    assert {row["status"] for row in table(root).values()} == {"done"}


def test_submitit_local_preemption_requeues_and_resumes_to_the_same_field(tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    from sjc_dsds.sweep.cluster import submit_runs, submitit_folder

    root = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", root, seeds=[0])
    spec.write_text(spec.read_text().replace("n_steps: 12", "n_steps: 300"))
    runs = expand_runs(load_spec(spec))
    executor = submitit.LocalExecutor(submitit_folder(root))
    executor.update_parameters(timeout_min=10)
    (job,) = submit_runs(executor, runs, root)
    metrics = runs[0].run_dir / "metrics.jsonl"

    def lines() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    _wait_for(lambda: lines() >= 20, 60, "the run to start")
    os.kill(read_json(ledger_path(root, runs[0].name))["pid"], signal.SIGUSR2)  # pre-emption
    (outcome,) = job.results()
    assert outcome.state == "done" and outcome.step == 300
    record = read_json(ledger_path(root, runs[0].name))
    assert record["attempts"] == 2  # the requeued task resumed the run
    log = (runs[0].run_dir / "sweep.log").read_text()
    stopped_at = int(log.split("stopped at step ")[1].split()[0])
    assert 20 <= stopped_at < 300
    assert list(runs[0].run_dir.glob("slurm-*.out"))  # submitit's log, linked into the run
    assert_same_field(runs[0].run_dir, {**runs[0].flags, "n_steps": 300}, tmp_path)


def _fake_slurm(bin_dir: Path, log: Path) -> None:
    """sbatch that records the submitted file and answers like SLURM; srun for submitit's check."""
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncat "$1" >> {log}\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)


def test_slurm_dry_run_prints_the_submission_that_sbatch_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    root = tmp_path / "out"
    slurm = {"partition": "gpu", "time_min": 90, "cpus_per_task": 4, "mem_gb": 16, "account": "lab"}
    spec = write_spec(
        tmp_path / "s.yaml", root, grid={"score_thres": [0, 2], "lr": [0.05, 0.1]}, seeds=[0, 1]
    )
    spec.write_text(spec.read_text() + yaml.safe_dump({"slurm": slurm}))
    sbatch_log = tmp_path / "sbatch.txt"
    _fake_slurm(tmp_path / "bin", sbatch_log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    argv = [str(spec), "--executor", "slurm", "--max_parallel", "3", "--slurm.gpus_per_node", "2"]
    assert main([*argv, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert not root.exists() and not sbatch_log.exists()  # nothing written, nothing submitted
    assert "array size: 8" in out
    sbatch = dict(
        line.removeprefix("#SBATCH --").split("=", 1)
        for line in out.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    folder = root.absolute() / ".sweep" / "submitit" / "%A_%a"  # one folder per array task
    assert sbatch == {
        "array": "0-7%3",
        "account": "lab",
        "cpus-per-task": "4",
        "error": str(folder / "%A_%a_0_log.err"),
        "gpus-per-node": "2",
        "job-name": "sjc_sweep",
        "mem": "16GB",
        "nodes": "1",
        "ntasks-per-node": "1",
        "open-mode": "append",
        "output": str(folder / "%A_%a_0_log.out"),
        "partition": "gpu",
        "signal": "USR2@120",
        "time": "90",
        "wckey": "submitit",
    }
    printed = out[out.index("#!/bin/bash") :].rsplit("\n", 1)[0]
    # The real submission sends sbatch exactly that file, as one array of the 8 runs.
    assert main(argv) == 0
    assert sbatch_log.read_text().strip() == printed.strip()
    jobs = json.loads((root / ".sweep" / "slurm_jobs.json").read_text())
    assert sorted(jobs.values()) == sorted(f"4242_{index}" for index in range(8))
    assert all((run.run_dir / "config.yaml").exists() for run in expand_runs(load_spec(spec)))
