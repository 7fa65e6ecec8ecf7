"""Device resolution and seeding."""

from __future__ import annotations

import pytest
import torch

from sjc_dsds.errors import ConfigError
from sjc_dsds.runtime import make_generator, resolve_device


def test_auto_and_cpu_resolve() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        resolve_device("cuda")


def test_generator_is_seeded() -> None:
    first = torch.rand(4, generator=make_generator(3))
    assert torch.equal(first, torch.rand(4, generator=make_generator(3)))
    assert not torch.equal(first, torch.rand(4, generator=make_generator(4)))
