"""Host reads per steady SJC step with the CUDA code path (fixed-shape render) on CPU tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sjc_dsds import optimize
from sjc_dsds.cli import build_config
from sjc_dsds.stable_diffusion import StableDiffusionDenoiser
from tests.sync_counter import HostSyncCounter


def test_counter_counts_item_bool_nonzero_and_tolist() -> None:
    values = torch.tensor([0.0, 1.0, 2.0])
    with HostSyncCounter() as counter:
        values.sum().item()
        bool(values.any())
        torch.nonzero(values)
        values.tolist()
        (values * 2).cumsum(0)  # no read
        with counter.paused():
            float(values[0])
    assert dict(counter.by_name) == {"_local_scalar_dense": 2, "nonzero": 1, "tolist": 1}
    assert torch.Tensor.tolist(values) == [0.0, 1.0, 2.0]


def _paused(counter: HostSyncCounter, function):  # noqa: ANN001, ANN202
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with counter.paused():
            return function(*args, **kwargs)

    return wrapper


def test_steady_sd_step_on_the_cuda_path_reads_the_host_at_most_once(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = {
        "sd.model_id": str(tiny_sd_dir),
        "sd.prompt": "a colorful toucan",
        "n_steps": 6,
        "vox.grid_size": 12,
        "pose.rend_hw": 16,
        "device": "cpu",
        "out_dir": str(tmp_path / "run"),
    }
    cfg = build_config(flags)
    model = StableDiffusionDenoiser.from_config(cfg.sd, torch.device("cpu"))
    state = optimize.RunState.create(cfg, model)
    state.render_fixed_shape = True
    optimize.sjc_step(state)  # warm-up: prompt embeddings are cached on the first call
    counter = HostSyncCounter()
    # Reads of host tensors even on CUDA are not counted: camera and noise-level draws (host
    # generators), snapping sigma to the model's ladder (a CPU float64 table) and Adamax's
    # step counts (CPU tensors for a non-capturable optimizer).
    monkeypatch.setattr(optimize, "sample_train_view", _paused(counter, optimize.sample_train_view))
    monkeypatch.setattr(
        optimize, "sample_train_sigma", _paused(counter, optimize.sample_train_sigma)
    )
    assert model.sigmas.device.type == "cpu"
    assert all(entry["step"].device.type == "cpu" for entry in state.optimizer.state.values())
    monkeypatch.setattr(model, "snap", _paused(counter, model.snap))
    monkeypatch.setattr(state.optimizer, "step", _paused(counter, state.optimizer.step))
    for _ in range(2):
        with counter:
            optimize.sjc_step(state)
    assert counter.total / 2 <= 1, dict(counter.by_name)
    # The packed CPU renderer reads the host (it sizes its packing from the data): the counter
    # sees it, so the bound above is not vacuous.
    state.render_fixed_shape = False
    packed = HostSyncCounter()
    with packed:
        optimize.sjc_step(state)
    assert packed.total > 1
