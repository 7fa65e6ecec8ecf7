"""Counting host reads of tensor values (what would be a host-device synchronisation on CUDA).

`HostSyncCounter` is a TorchDispatchMode that counts the aten ops whose result needs the
tensor's data on the host (`_local_scalar_dense`, behind `item()`, `bool()`, `float()`) or
whose output shape depends on the data (nonzero, masked_select, unique, ...), plus patched
`Tensor.tolist` (which reads the data without dispatching). Works on CPU tensors, so a test
can count what the CUDA code path would synchronise on.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that read values on the host, or size their output from the data (a sync on CUDA).
HOST_READ_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "nonzero_static_fallback",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "repeat_interleave",
    "bincount",
    "histc",
}


class HostSyncCounter(TorchDispatchMode):
    """Counts host reads while active: `total` and `by_name` (op name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self._paused = 0
        self._original_tolist = torch.Tensor.tolist

    @property
    def total(self) -> int:
        """Host reads counted so far."""
        return sum(self.by_name.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if not self._paused and name in HOST_READ_OPS:
            # repeat_interleave with output_size given sizes nothing from the data.
            if not (name == "repeat_interleave" and (kwargs or {}).get("output_size")):
                self.by_name[name] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Do not count inside: for work that runs on the host by design."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def __enter__(self) -> HostSyncCounter:
        counter = self
        original = self._original_tolist

        def counted_tolist(tensor: torch.Tensor) -> Any:
            if not counter._paused:
                counter.by_name["tolist"] += 1
            return original(tensor)

        torch.Tensor.tolist = counted_tolist  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        torch.Tensor.tolist = self._original_tolist  # type: ignore[method-assign]
        return super().__exit__(*exc)
