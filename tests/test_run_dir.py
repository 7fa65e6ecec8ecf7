"""Run directory rules, atomic writes, metrics log and checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sjc_dsds.checkpoint import load_checkpoint, save_checkpoint
from sjc_dsds.config import SJCConfig, dump_config, load_config
from sjc_dsds.errors import CheckpointError, ConfigError, RunDirExistsError, StorageError
from sjc_dsds.run_dir import (
    MetricsLog,
    RunDir,
    atomic_write_bytes,
    create_run_dir,
    default_run_dir,
    read_metrics,
    slugify,
)


def test_default_run_dir_is_under_outputs_never_cwd() -> None:
    cfg = SJCConfig.model_validate({"sd": {"prompt": "A colorful Toucan, with a large beak!"}})
    path = default_run_dir(cfg)
    assert path.parts[:2] == ("outputs", "a_colorful_toucan_with_a_large_beak")
    assert slugify("///") == "run"


def test_existing_run_dir_is_refused_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "run"
    create_run_dir(root, SJCConfig(), resume=False, overwrite=False)
    (root / "keep.txt").write_text("old run's file")
    with pytest.raises(RunDirExistsError, match="--resume"):
        create_run_dir(root, SJCConfig(), resume=False, overwrite=False)
    assert (root / "keep.txt").exists()
    create_run_dir(root, SJCConfig(), resume=False, overwrite=True)
    assert not (root / "keep.txt").exists() and (root / "config.yaml").exists()


def test_resume_of_a_folder_that_is_no_run_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        create_run_dir(tmp_path / "missing", SJCConfig(), resume=True, overwrite=False)
    assert not (tmp_path / "missing").exists()


def test_config_yaml_holds_version_and_reloads(tmp_path: Path) -> None:
    cfg = SJCConfig.model_validate({"seed": 5, "out_dir": str(tmp_path / "r")})
    run = create_run_dir(tmp_path / "r", cfg, resume=False, overwrite=False)
    assert "version:" in run.config.read_text()
    data = run.config.read_text().replace("version:", "#version:")
    (tmp_path / "c.yaml").write_text(data)
    assert load_config(tmp_path / "c.yaml") == cfg


def test_atomic_write_leaves_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("sjc_dsds.run_dir.os.fsync", failing_fsync)
    with pytest.raises(StorageError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_metrics_log_drops_records_past_resume_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(5):
        log.write({"step": step})
    log.close()
    log = MetricsLog(path, start_step=3)
    log.write({"step": 3})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2, 3]


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adamax(module.parameters(), lr=0.05)
    module(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(11)
    torch.rand(3, generator=generator)
    path = RunDir(tmp_path).checkpoint_path(7)
    streams = {"camera": generator.get_state()}
    save_checkpoint(path, 7, module, optimizer, streams, dump_config(SJCConfig()))
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 7
    for name, value in module.state_dict().items():
        assert torch.equal(checkpoint.field_state[name], value)
    restored = torch.optim.Adamax(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    restored.load_state_dict(checkpoint.optimizer_state)
    assert restored.param_groups[0]["lr"] == 0.05
    saved_state = optimizer.state_dict()["state"][0]
    for key, value in restored.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved_state[key]))
    again = torch.Generator()
    again.set_state(checkpoint.stream_states["camera"])
    assert torch.equal(torch.rand(3, generator=again), torch.rand(3, generator=generator))
    assert RunDir(tmp_path).latest_checkpoint() == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_corrupt_checkpoint_gives_user_error(tmp_path: Path) -> None:
    path = tmp_path / "step_0000001.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
