"""Safe, honest runs: nothing outside a run is deleted, stops keep state, records stay true."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sjc_dsds import optimize
from sjc_dsds.checkpoint import load_checkpoint
from sjc_dsds.cli import build_config, iter_flags, main
from sjc_dsds.config import SJCConfig
from sjc_dsds.errors import (
    CheckpointError,
    ConfigError,
    MissingModelError,
    NonFiniteError,
    RunDirBusyError,
    RunDirExistsError,
    StorageError,
)
from sjc_dsds.run_dir import RunDir, RunLock, default_run_dir, read_metrics, run_is_locked
from sjc_dsds.toy import ToyScoreModel

REPO = Path(__file__).resolve().parents[1]
N_STEPS = 8

TOY_FLAGS = {
    "family": "toy",
    "device": "cpu",
    "n_steps": N_STEPS,
    "vox.grid_size": 8,
    "pose.rend_hw": 16,
    "pose.n_test_frames": 2,
    "toy.n_images": 16,
    "save_every": 3,
    "vis_every": 100,
}


def toy_config(out_dir: Path, **overrides: object) -> SJCConfig:
    return build_config({**TOY_FLAGS, "out_dir": str(out_dir), **overrides})


def cli_flags(out_dir: Path, **overrides: object) -> list[str]:
    flags = {**TOY_FLAGS, "out_dir": str(out_dir), **overrides}
    return [item for name, value in flags.items() for item in (f"--{name}", str(value))]


@pytest.fixture(scope="module")
def toy_model() -> ToyScoreModel:
    cfg = toy_config(Path("unused"))
    return ToyScoreModel.from_config(cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def reference_run(toy_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: what every stopped-and-resumed run must equal bitwise."""
    out = tmp_path_factory.mktemp("reference") / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, progress=False)
    return out


def final_field(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunDir(run_dir).latest_checkpoint()).field_state


def assert_same_fields(a: Path, b: Path) -> None:
    fa, fb = final_field(a), final_field(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert torch.equal(fa[name], fb[name]), name


def tree(path: Path) -> dict[str, bytes]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


# 1. --overwrite deletes only a run directory.


def test_overwrite_refuses_a_folder_of_unrelated_files(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "thesis.tex").write_text("years of work")
    (data / "config.yaml").write_text("not: ours\n")
    before = tree(data)
    assert main([*cli_flags(data), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --overwrite deletes only a run directory")
    assert err.count("\n") == 1
    assert tree(data) == before


def test_overwrite_refuses_a_parent_of_runs(toy_model, tmp_path, capsys) -> None:
    outputs = tmp_path / "outputs"
    for name in ("a", "b"):
        optimize.run_sjc(toy_config(outputs / name, n_steps=1), model=toy_model, progress=False)
    (outputs / "config.yaml").write_text((outputs / "a" / "config.yaml").read_text())
    (outputs / "metrics.jsonl").write_text("")
    before = tree(outputs)
    assert main([*cli_flags(outputs), "--overwrite"]) == 2
    assert "contains other runs" in capsys.readouterr().err
    assert tree(outputs) == before


def test_overwrite_refuses_a_symlink_and_replaces_a_real_run(toy_model, tmp_path, capsys) -> None:
    real = tmp_path / "real"
    optimize.run_sjc(toy_config(real, n_steps=1), model=toy_model, progress=False)
    link = tmp_path / "link"
    link.symlink_to(real)
    before = tree(real)
    assert main([*cli_flags(link), "--overwrite"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert tree(real) == before
    (real / "stale.txt").write_text("from the old run")
    assert main([*cli_flags(real, n_steps=2), "--overwrite"]) == 0
    assert not (real / "stale.txt").exists()
    assert json.loads(RunDir(real).summary.read_text())["final_step"] == 2


# 2. Pre-emption: SIGTERM / SIGUSR1 checkpoint, exit 75, resume equals the uninterrupted run.


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_signal_at_a_random_step_checkpoints_and_resume_is_bitwise_equal(
    signal_name, reference_run, tmp_path
) -> None:
    out = tmp_path / "run"
    stop_at = random.Random(signal_name).randint(1, N_STEPS - 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    slow_flags = cli_flags(out, log_every=1)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run_sjc.py"), *slow_flags],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = RunDir(out).metrics
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(read_metrics(metrics)) >= stop_at:
            process.send_signal(getattr(signal, signal_name))
            break
        time.sleep(0.005)
    _, err = process.communicate(timeout=120)
    status = json.loads(RunDir(out).status.read_text())
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived (machine too fast)")
    assert process.returncode == 75, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {signal_name} after step") and f"--resume {out}" in last
    assert status["state"] == "stopped" and status["exit_code"] == 75
    assert 0 < status["step"] < N_STEPS
    assert main(["--resume", str(out)]) == 0
    assert_same_fields(reference_run, out)


def test_stop_event_finishes_the_step_and_raises_run_stopped(toy_model, reference_run, tmp_path):
    import threading

    from sjc_dsds.errors import RunStopped

    out = tmp_path / "run"
    stop = threading.Event()
    real_step = optimize.sjc_step

    def step_then_request_stop(state):
        result = real_step(state)
        if state.step == 5:
            stop.set()
        return result

    optimize.sjc_step = step_then_request_stop
    try:
        with pytest.raises(RunStopped) as stopped:
            optimize.run_sjc(toy_config(out), model=toy_model, progress=False, stop=stop)
    finally:
        optimize.sjc_step = real_step
    assert stopped.value.step == 5 and stopped.value.exit_code == 75
    assert load_checkpoint(RunDir(out).latest_checkpoint()).step == 5
    optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert_same_fields(reference_run, out)


# 3. Disk: pruning, disk full, unwritable or file out_dir.


def test_keep_checkpoints_prunes_but_never_the_only_readable_one(
    toy_model, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out, save_every=1), model=toy_model, progress=False)
    names = [p.name for p in RunDir(out).checkpoint_paths()]
    assert names == ["step_0000007.safetensors", "step_0000008.safetensors"]

    kept = tmp_path / "kept"
    import sjc_dsds.checkpoint as checkpoint_module

    real_load = checkpoint_module.load_checkpoint
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", _failing_after(real_load, 2))
    optimize.run_sjc(toy_config(kept, save_every=1, keep_checkpoints=1), model=toy_model)
    steps = [load_checkpoint(p).step for p in RunDir(kept).checkpoint_paths()]
    # From step 3 on the newest never verifies, so step 2 (the last readable) is never pruned.
    assert steps == list(range(2, N_STEPS + 1))


def _failing_after(real_load, step):
    def load(path):
        checkpoint = real_load(path)
        if checkpoint.step > step:
            raise CheckpointError(f"cannot read checkpoint {path}: simulated")
        return checkpoint

    return load


def test_disk_full_is_one_line_and_the_previous_checkpoint_still_loads(
    toy_model, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    real_fsync = os.fsync
    calls = {"checkpoints": 0}

    def fsync_fills_disk_at_second_checkpoint(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".safetensors." in name:
            calls["checkpoints"] += 1
            if calls["checkpoints"] == 2:
                raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr("sjc_dsds.run_dir.os.fsync", fsync_fills_disk_at_second_checkpoint)
    monkeypatch.setattr(optimize, "build_score_model", lambda cfg, device: toy_model)
    assert main(cli_flags(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write") and "No space left on device" in err[-1]
    paths = RunDir(out).checkpoint_paths()
    assert [load_checkpoint(p).step for p in paths] == [3]
    assert not [p for p in RunDir(out).checkpoints.iterdir() if p.suffix == ".tmp"]
    assert json.loads(RunDir(out).status.read_text())["state"] == "failed"


def test_out_dir_that_is_a_file_or_unwritable_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert main(cli_flags(a_file)) == 2
    assert capsys.readouterr().err == (
        f"error: --out_dir {a_file} is a file, not a folder; choose another --out_dir\n"
    )
    assert a_file.read_text() == "keep"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(cli_flags(tmp_path / "read_only" / "run")) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"error: --out_dir {tmp_path / 'read_only' / 'run'}: cannot create")
    assert "Permission denied" in last


# 4. Corrupt newest checkpoint on --resume.


def test_resume_falls_back_past_a_truncated_newest_checkpoint(
    toy_model, reference_run, tmp_path, caplog
) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=6, progress=False)
    newest = RunDir(out).latest_checkpoint()
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert any("using step_0000003.safetensors instead" in r.message for r in caplog.records)
    assert_same_fields(reference_run, out)


def test_resume_with_no_loadable_checkpoint_names_the_files(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=6, progress=False)
    for path in RunDir(out).checkpoint_paths():
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="step_0000003.safetensors, step_0000006"):
        optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)


def test_flipped_bytes_in_a_checkpoint_fail_its_checksum(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    path = RunDir(out).latest_checkpoint()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


# 5. Ordinary permissions.


def test_written_files_get_ordinary_permissions(toy_model, tmp_path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        optimize.run_sjc(toy_config(out, n_steps=2), model=toy_model, progress=False)
    finally:
        os.umask(old)
    run = RunDir(out)
    for path in (run.config, run.summary, run.status, run.latest_checkpoint(), run.metrics):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# 6. Two runs in the same second.


def test_default_run_dirs_of_one_second_differ_and_name_the_seed() -> None:
    from datetime import datetime

    now = datetime(2026, 12, 2, 12, 0, 0)
    cfg = SJCConfig.model_validate({"seed": 7})
    first, second = default_run_dir(cfg, now), default_run_dir(cfg, now)
    assert first != second
    assert first.name.startswith("20261202-120000-seed7-")


# Fault injection.


def test_run_killed_before_its_first_checkpoint_can_be_resumed(
    toy_model, reference_run, tmp_path
) -> None:
    out = tmp_path / "run"
    real_step = optimize.sjc_step

    def die_at_step_1(state):
        if state.step == 1:
            raise SystemExit("killed")
        return real_step(state)

    optimize.sjc_step = die_at_step_1
    try:
        with pytest.raises(SystemExit):
            optimize.run_sjc(toy_config(out), model=toy_model, progress=False)
    finally:
        optimize.sjc_step = real_step
    for path in RunDir(out).checkpoint_paths():
        path.unlink()  # a SIGKILL leaves none
    optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert_same_fields(reference_run, out)


def test_ctrl_c_in_the_middle_of_a_step_then_resume_is_bitwise_equal(
    toy_model, reference_run, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "run"
    calls = {"n": 0}
    real_denoise = toy_model.denoise

    def interrupt_inside_fifth_denoise(noised, sigma, cond):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4: camera, t and noise already drawn
            raise KeyboardInterrupt
        return real_denoise(noised, sigma, cond)

    monkeypatch.setattr(toy_model, "denoise", interrupt_inside_fifth_denoise)
    with pytest.raises(KeyboardInterrupt):
        optimize.run_sjc(toy_config(out, save_every=100), model=toy_model, progress=False)
    monkeypatch.setattr(toy_model, "denoise", real_denoise)
    assert load_checkpoint(RunDir(out).latest_checkpoint()).step == 4
    optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert_same_fields(reference_run, out)


def test_a_torn_metrics_line_does_not_break_resume(toy_model, reference_run, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    with RunDir(out).metrics.open("a") as stream:
        stream.write('{"step": 3, "view": "fr')
    optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert [r["step"] for r in read_metrics(RunDir(out).metrics)] == list(range(N_STEPS))
    assert_same_fields(reference_run, out)


def test_stale_temporaries_are_removed_on_resume(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    stale = RunDir(out).checkpoints / ".step_0000006.safetensors.abc123.tmp"
    stale.write_bytes(b"\0" * 1000)
    mine = RunDir(out).checkpoints / "notes.tmp"
    mine.write_text("a user's file")
    optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    assert not stale.exists() and mine.exists()


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300"])
def test_non_finite_and_huge_numbers_are_refused(value) -> None:
    with pytest.raises(ConfigError, match="--sd.scale"):
        build_config({"sd.scale": value})


def test_every_numeric_flag_has_an_upper_bound() -> None:
    for name, info in iter_flags():
        annotation = str(info.annotation)
        if ("int" in annotation or "float" in annotation) and "tuple" not in annotation:
            bounds = [m for m in info.metadata if getattr(m, "le", None) or getattr(m, "lt", None)]
            assert bounds, f"--{name} has no upper bound"


def test_grid_size_has_an_upper_bound() -> None:
    with pytest.raises(ConfigError, match="--vox.grid_size"):
        build_config({"vox.grid_size": "100000"})


def test_an_infinite_score_element_stops_before_clipping(toy_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_denoise = toy_model.denoise
    calls = {"n": 0}

    def one_infinite_element_at_third_call(noised, sigma, cond):
        calls["n"] += 1
        denoised = real_denoise(noised, sigma, cond)
        if calls["n"] == 3:
            denoised = denoised.clone()
            denoised.view(-1)[0] = float("inf")
        return denoised

    monkeypatch.setattr(toy_model, "denoise", one_infinite_element_at_third_call)
    with pytest.raises(NonFiniteError, match="step 2"):
        optimize.run_sjc(toy_config(out, score_thres=8.0), model=toy_model, progress=False)
    assert json.loads(RunDir(out).status.read_text())["state"] == "failed"


@pytest.mark.parametrize(
    "flags", [["--pose.polar_max_deg", "2"], ["--pose.front_half_width_deg", "0"]]
)
def test_toy_settings_without_front_views_are_refused_at_once(flags, tmp_path, capsys) -> None:
    assert main([*cli_flags(tmp_path / "run"), *flags]) == 2
    assert "needs front training views" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_toy_run_with_a_narrow_front_finishes_with_its_metrics(tmp_path) -> None:
    cfg = toy_config(tmp_path / "run", n_steps=2, **{"pose.front_half_width_deg": 2})
    optimize.run_sjc(cfg, progress=False)  # used to crash after training (no front orbit view)
    summary = json.loads(RunDir(cfg.out_dir).summary.read_text())
    assert summary["finished"] is True and "gt_janus_rate" in summary["final_metrics"]


def test_binary_config_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(bytes(range(256)))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --config") and err.count("\n") == 1


def test_corrupt_prompts_json_on_resume_is_one_line(toy_model, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    RunDir(out).prompts.write_text('{"view_prompts": ')
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"error: --resume: {RunDir(out).prompts} is corrupt")


@pytest.mark.parametrize("device", ["cuda:x", "gpu", "cuda:"])
def test_bad_device_is_one_line(device, capsys) -> None:
    assert main(["--device", device, "--print_config"]) == 2
    assert capsys.readouterr().err.startswith("error: --device must be one of auto, cpu, cuda")


def test_model_folder_with_non_tensor_weights_is_one_line(tiny_sd_dir, tmp_path) -> None:
    import shutil

    from sjc_dsds.stable_diffusion import StableDiffusionDenoiser

    broken = tmp_path / "broken_sd"
    shutil.copytree(tiny_sd_dir, broken)
    for path in broken.rglob("*.safetensors"):
        path.write_text("these are not tensors")
    cfg = build_config({"sd.model_id": str(broken), "device": "cpu"})
    with pytest.raises(MissingModelError, match="not readable weights") as error:
        StableDiffusionDenoiser.from_config(cfg.sd, torch.device("cpu"))
    assert "\n" not in str(error.value)


def test_a_locked_run_directory_refuses_a_second_writer(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    assert not run_is_locked(out)
    lock = RunLock(RunDir(out)).acquire()
    try:
        assert run_is_locked(out)
        with pytest.raises(RunDirBusyError, match=f"pid {os.getpid()}"):
            optimize.run_sjc(toy_config(out), resume=True, model=toy_model, progress=False)
    finally:
        lock.release()
    assert load_checkpoint(RunDir(out).latest_checkpoint()).step == 3


def test_existing_run_dir_still_refused_without_flags(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out, n_steps=1), model=toy_model, progress=False)
    with pytest.raises(RunDirExistsError):
        optimize.run_sjc(toy_config(out, n_steps=1), model=toy_model, progress=False)


def test_storage_error_is_a_user_error() -> None:
    assert issubclass(StorageError, Exception)
    from sjc_dsds.errors import UserError

    assert issubclass(StorageError, UserError) and not issubclass(NonFiniteError, UserError)


# 7. The run directory is the authority on its config.


def test_resume_refuses_a_changed_setting_naming_the_flag(toy_model, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    before = tree(out)
    capsys.readouterr()
    assert main(["--resume", str(out), "--score_thres", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --score_thres cannot change on --resume") and "--n_steps" in err
    assert main(["--resume", str(out), "--toy.prompt", "a cube"]) == 2
    assert "--toy.prompt cannot change" in capsys.readouterr().err
    assert tree(out) == before


def test_resume_applies_and_records_an_allowed_change(toy_model, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out), model=toy_model, stop_after=3, progress=False)
    monkeypatch.setattr(optimize, "build_score_model", lambda cfg, device: toy_model)
    assert main(["--resume", str(out), "--n_steps", "10"]) == 0
    run = RunDir(out)
    assert yaml.safe_load(run.config.read_text())["n_steps"] == 10
    history = [json.loads(line) for line in run.history.read_text().splitlines()]
    assert [h["kind"] for h in history] == ["start", "resume"]
    assert history[1]["changes"] == {"n_steps": [N_STEPS, 10]}
    checkpoint = load_checkpoint(run.latest_checkpoint())
    assert checkpoint.step == 10 and yaml.safe_load(checkpoint.config_yaml)["n_steps"] == 10


def test_eval_only_applies_device_and_frame_overrides(toy_model, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out, n_steps=2), model=toy_model, progress=False)
    saved = yaml.safe_load(RunDir(out).config.read_text())
    saved["device"] = "cuda:1"  # a run made on a GPU machine, re-rendered here
    RunDir(out).config.write_text(yaml.safe_dump(saved))
    monkeypatch.setattr(optimize, "build_score_model", lambda cfg, device: toy_model)
    assert main(["--eval_only", str(out), "--device", "cpu", "--pose.n_test_frames", "3"]) == 0
    assert len(list((out / "test_step_0000002" / "frames").glob("*.png"))) == 3
    history = [json.loads(line) for line in RunDir(out).history.read_text().splitlines()]
    assert history[-1]["kind"] == "eval_only"
    assert history[-1]["changes"]["pose.n_test_frames"] == [2, 3]


# 8. Provenance.


def test_every_run_saves_how_it_was_made(toy_model, tmp_path) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out, n_steps=1), model=toy_model, progress=False)
    record = json.loads((out / "provenance.json").read_text())
    assert record["package_version"] and record["argv"]
    assert record["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"diffusers", "transformers"} <= record["libraries"].keys()
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["device"] == "cpu" and record["device_name"]
    if (REPO / ".git").exists():
        assert len(record["git"]["commit"]) == 40


# 9. A saved config as a preset.


def test_saved_config_as_a_preset_gets_a_fresh_folder(toy_model, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    optimize.run_sjc(toy_config(out, n_steps=1), model=toy_model, progress=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optimize, "build_score_model", lambda cfg, device: toy_model)
    assert main(["--config", str(out / "config.yaml")]) == 0
    fresh = [p for p in (tmp_path / "outputs").rglob("config.yaml")]
    assert len(fresh) == 1 and fresh[0].parent != out
    assert main(["--config", str(out / "config.yaml"), "--out_dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "summary.json").exists()


def test_shipped_cpu_demo_preset_is_the_readme_demo() -> None:
    preset = REPO / "configs" / "cpu_demo.yaml"
    cfg = build_config({}, yaml.safe_load(preset.read_text()))
    assert cfg.family == "toy" and cfg.out_dir is None
    assert f"--config {preset.relative_to(REPO)}" in (REPO / "README.md").read_text()


# 10. Separate random streams keep ablations paired.


def _cameras(run_dir: Path) -> list[tuple[float, float]]:
    return [(r["azimuth_deg"], r["elevation_deg"]) for r in read_metrics(RunDir(run_dir).metrics)]


def test_training_cameras_do_not_depend_on_grid_size_or_family(
    toy_model, tiny_sd_dir, tmp_path
) -> None:
    from sjc_dsds.stable_diffusion import StableDiffusionDenoiser

    flags = {"n_steps": 20, "save_every": 100, "vis_every": 100, "pose.n_test_frames": 1}
    for grid in (16, 17):
        cfg = toy_config(tmp_path / f"toy{grid}", **flags, **{"vox.grid_size": grid})
        optimize.run_sjc(cfg, model=toy_model, progress=False)
    sd_cfg = build_config(
        {
            "sd.model_id": str(tiny_sd_dir),
            "device": "cpu",
            "vox.grid_size": 8,
            "pose.rend_hw": 16,
            "out_dir": str(tmp_path / "sd"),
            **flags,
        }
    )
    sd_model = StableDiffusionDenoiser.from_config(sd_cfg.sd, torch.device("cpu"))
    optimize.run_sjc(sd_cfg, model=sd_model, progress=False)
    toy16, toy17, sd = (_cameras(tmp_path / name) for name in ("toy16", "toy17", "sd"))
    assert len(toy16) == 20
    assert toy16 == toy17 == sd
    assert len(set(toy16)) == 20  # twenty different cameras, not one repeated


def test_verbose_shows_the_traceback_of_a_user_error(capsys, monkeypatch) -> None:
    assert main(["--device", "cuda:x", "--print_config"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--verbose", "--device", "cuda:x", "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: --device")
    monkeypatch.setenv("SJC_DSDS_VERBOSE", "1")
    assert main(["--device", "cuda:x", "--print_config"]) == 2
    assert "Traceback" in capsys.readouterr().err
