"""How many CPU threads torch uses: the `--threads` flag, or a default that survives a busy CPU.

On a small shared CPU, OpenMP's worker threads wait for each other at every parallel region; when
another process holds a core, a two-thread step stalls in those barriers and becomes many times
slower than one thread (measured in experiments/README.md, "Threads"). So the default is one
thread on machines with few cores, and torch's own choice elsewhere.
"""

from __future__ import annotations

import logging
import os

import torch

from sjc_dsds.errors import ConfigError

logger = logging.getLogger(__name__)

# At or below this many usable cores the default is one thread (see the module docstring).
SMALL_CPU_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """The thread count used without `--threads`: 1 on small CPUs, else torch's current count.

    `OMP_NUM_THREADS` set in the environment wins: the user chose it.
    """
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = usable_cores() if cores is None else cores
    return 1 if cores <= SMALL_CPU_CORES else torch.get_num_threads()


def configure_threads(requested: int | None) -> int:
    """Set torch's intra-op thread count to `requested` (None: `default_threads()`); return it."""
    if requested is not None and requested < 1:
        raise ConfigError(f"--threads must be a positive integer or None (got {requested})")
    threads = default_threads() if requested is None else requested
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logger.debug("torch uses %d CPU thread(s)", threads)
    return threads
