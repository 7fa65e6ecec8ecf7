"""Shared fixtures: tiny randomly initialised models saved to temporary folders, run dirs."""

from __future__ import annotations

import pytest
import torch
from fixtures_bert import *  # noqa: F401,F403
from fixtures_sd import *  # noqa: F401,F403

# One thread: the suite's tensors are tiny, and two threads on a 2-core machine shared with other
# processes stall in OpenMP barriers (measured: render tests 17 s -> 1.9 s under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: the Hugging Face hub is offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
