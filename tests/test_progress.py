"""progress.py: tqdm's bar on a terminal, compact plain lines off one."""

from __future__ import annotations

import io
import itertools

from tqdm import tqdm

from sjc_dsds.progress import LogProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(bar, n_steps: int) -> None:
    bar.set_description("a colorful toucan with a large")
    for step in bar:
        bar.set_postfix(empty="1.23e+03", thres=2.0 + 6.0 * step / n_steps, clip="0.01")
    bar.close()


def test_off_a_terminal_1000_steps_write_under_10_kb_of_lines() -> None:
    stream = io.StringIO()  # not a TTY, like a SLURM log or `> log 2>&1`
    bar = progress(range(1000), total=1000, stream=stream)
    assert isinstance(bar, LogProgress)
    _drive(bar, 1000)
    text = stream.getvalue()
    assert len(text.encode()) <= 10_000
    assert "\r" not in text
    lines = text.splitlines()
    assert 10 <= len(lines) <= 25
    assert lines[-1].startswith("a colorful toucan with a large: 1000/1000 (100%)")
    assert "thres=7.994" in lines[-1] and "clip=0.01" in lines[-1]


def test_tqdm_off_a_terminal_is_what_the_limit_is_about() -> None:
    # The same 1000 steps through a plain tqdm bar: the carriage-return bar the issue measured.
    stream = io.StringIO()
    _drive(tqdm(range(1000), total=1000, file=stream, mininterval=0), 1000)
    assert len(stream.getvalue().encode()) > 10_000


def test_a_terminal_gets_the_tqdm_bar() -> None:
    stream = Terminal()
    bar = progress(range(5), total=5, stream=stream, mininterval=0)
    assert isinstance(bar, tqdm)
    _drive(bar, 5)
    assert "\r" in stream.getvalue() and "5/5" in stream.getvalue()


def test_slow_steps_get_a_line_every_interval_and_resume_counts_from_initial() -> None:
    stream, ticks = io.StringIO(), itertools.count(step=25.0)  # 25 s per step
    bar = LogProgress(range(40, 50), 100, 40, stream, 1000, 60.0, clock=lambda: next(ticks))
    for _ in bar:
        pass
    bar.close()
    lines = stream.getvalue().splitlines()
    # Lines after 75, 150, 225 s (every third step: 75 s >= 60 s), plus the last one at step 50.
    assert [line.split(" ", 1)[0] for line in lines] == ["43/100", "46/100", "49/100", "50/100"]
    assert "01:15 elapsed, 25 s/step, 23:45 left" in lines[0]


def test_disabled_progress_writes_nothing() -> None:
    stream = io.StringIO()
    _drive(progress(range(10), total=10, stream=stream, disable=True), 10)
    assert stream.getvalue() == ""
