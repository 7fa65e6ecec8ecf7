"""Progress of the optimisation loop: tqdm's bar on a terminal, plain log lines elsewhere.

Off a terminal (SLURM logs, `> log 2>&1`) a carriage-return bar piles up as one huge line
(108-185 KB per 1000 steps); there a line is printed every `every_steps` steps or
`every_seconds` seconds instead, about 2-4 KB per 1000 steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

# Off a terminal: about 20 lines per run, and at least one a minute for slow steps.
LINES_PER_RUN = 20
EVERY_SECONDS = 60.0


def progress(
    iterable: Iterable[int],
    *,
    total: int,
    initial: int = 0,
    disable: bool = False,
    mininterval: float = 0.5,
    stream: TextIO | None = None,
    every_steps: int | None = None,
    every_seconds: float = EVERY_SECONDS,
) -> Any:
    """A tqdm bar over `iterable` when `stream` (default stderr) is a terminal, else LogProgress.

    Both offer iteration, `set_description`, `set_postfix` and `close`. `every_steps` defaults
    to total / 20.
    """
    stream = sys.stderr if stream is None else stream
    if disable or _is_terminal(stream):
        return tqdm(
            iterable,
            initial=initial,
            total=total,
            disable=disable,
            mininterval=mininterval,
            file=stream,
        )
    steps = every_steps if every_steps is not None else max(1, math.ceil(total / LINES_PER_RUN))
    return LogProgress(iterable, total, initial, stream, steps, every_seconds)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogProgress:
    """Progress as plain lines: `desc: n/total (pct %), elapsed, s/step, left | postfix`."""

    def __init__(
        self,
        iterable: Iterable[int],
        total: int,
        initial: int,
        stream: TextIO,
        every_steps: int,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iterable, self.total, self.n, self.stream = iterable, total, initial, stream
        self.every_steps, self.every_seconds, self.clock = every_steps, every_seconds, clock
        self.description, self.postfix = "", ""
        self.start_n, self.start_time = initial, clock()
        self.logged_n, self.logged_time = initial, self.start_time

    def __iter__(self) -> Iterator[int]:
        for item in self.iterable:
            yield item
            self.n += 1  # counted once the loop body is done, as tqdm does
            now = self.clock()
            due = self.n - self.logged_n >= self.every_steps
            if due or now - self.logged_time >= self.every_seconds or self.n == self.total:
                self._write(now)

    def set_description(self, description: str) -> None:
        """Text at the start of every line (tqdm: the bar's prefix)."""
        self.description = description

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line, e.g. set_postfix(loss=0.1)."""
        self.postfix = ", ".join(f"{key}={_format(value)}" for key, value in values.items())

    def close(self) -> None:
        """Print a last line if steps ran since the previous one."""
        if self.n != self.logged_n:
            self._write(self.clock())

    def _write(self, now: float) -> None:
        elapsed, done = now - self.start_time, self.n - self.start_n
        per_step = elapsed / done if done else 0.0
        left = per_step * max(self.total - self.n, 0)
        head = f"{self.description}: " if self.description else ""
        line = (
            f"{head}{self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%), "
            f"{_clock_text(elapsed)} elapsed, {per_step:.3g} s/step, {_clock_text(left)} left"
        )
        self.stream.write(line + (f" | {self.postfix}" if self.postfix else "") + "\n")
        self.stream.flush()
        self.logged_n, self.logged_time = self.n, now


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
