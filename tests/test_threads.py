"""threads.py: the default thread count on small CPUs, explicit counts, OMP_NUM_THREADS."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds.errors import ConfigError
from sjc_dsds.threads import configure_threads, default_threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_cpus_default_to_one_thread() -> None:
    # Measured on the 2-core machine: 2 threads next to a busy process are ~10x slower per step.
    assert default_threads(cores=1) == 1
    assert default_threads(cores=2) == 1
    torch.set_num_threads(3)
    assert default_threads(cores=16) == 3  # large CPUs keep torch's own choice


def test_configure_threads_applies_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr("sjc_dsds.threads.usable_cores", lambda: 2)
    assert configure_threads(None) == 1 and torch.get_num_threads() == 1


def test_omp_num_threads_in_the_environment_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr("sjc_dsds.threads.usable_cores", lambda: 2)
    assert configure_threads(None) == 2 and torch.get_num_threads() == 2
    assert configure_threads(1) == 1  # an explicit --threads wins over the environment


def test_non_positive_thread_count_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="--threads"):
        configure_threads(0)
