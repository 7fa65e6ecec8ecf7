"""Stopping a run on request: SIGTERM, SIGUSR1 and Ctrl-C become a stop after the current step."""

from __future__ import annotations

import signal
import threading
from typing import Any

# Exit codes of a run stopped on request, after its checkpoint was written.
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopRequest:
    """Turns SIGTERM, SIGUSR1 and a first Ctrl-C into a request to stop after the current step.

    Installed only in the main thread; a second Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: Any) -> None:
        if number == signal.SIGINT and self.event.is_set():
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        self.event.set()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signal_name == "SIGINT" else EXIT_PREEMPTED
