"""A run's progress on stderr: a bar on a terminal, plain periodic lines anywhere else.

On a terminal, :class:`Progress` draws a tqdm bar (steps done out of the run's end, with the
step's return, entropy and clip fraction), and every other line of the run (evaluations,
health findings, plugin messages) is printed above the bar by :func:`echo`, never through it.
Written to a file or a pipe (a scheduler's log, ``| tee``), it draws no ``\\r`` frames: it
prints one plain line after the first step, then one every ``every`` seconds, and one after
the last step.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

_BAR: Any = None  # the tqdm bar on the terminal, while one is drawn


def echo(line: str) -> None:
    """Print one line on stderr; on a terminal with a progress bar, above the bar."""
    if _BAR is not None:
        _BAR.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Steps ``initial+1 .. total`` of a run named ``desc``. ``tty`` (default: whether ``file``
    is a terminal) chooses the bar; ``every`` is the seconds between plain lines."""

    def __init__(
        self,
        desc: str,
        total: int,
        initial: int = 0,
        *,
        file: TextIO | None = None,
        tty: bool | None = None,
        every: float = 60.0,
    ) -> None:
        global _BAR
        self.desc, self.total, self.initial, self.every = desc, total, initial, every
        self.file = file or sys.stderr
        self.tty = self.file.isatty() if tty is None else tty
        self.bar = None
        self._t0 = time.monotonic()
        self._printed: float | None = None
        self._first = (initial, self._t0)  # (step, time) the pace is measured from
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                dynamic_ncols=True,
                file=self.file,
            )
            _BAR = self.bar

    def update(self, step: int, **postfix: str) -> None:
        """Step ``step`` is done; ``postfix`` are its numbers (``ret="+0.12"``, ...)."""
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **postfix)
            self.bar.update(step - self.bar.n)
            return
        now = time.monotonic()
        if self._printed is not None and step < self.total and now - self._printed < self.every:
            return
        parts = [f"{self.desc}: step {step}/{self.total} ({100 * step // max(self.total, 1)}%)"]
        if self._printed is None:  # the first step also warms up: it is no measure of the pace
            self._first = (step, now)
            parts.append(f"first step {_duration(now - self._t0)}")
        elif step > self._first[0]:
            pace = (now - self._first[1]) / (step - self._first[0])
            parts.append(f"{pace:.2f} s/step")
            if step < self.total:
                parts.append(f"{_duration(pace * (self.total - step))} left")
        self._printed = now
        line = ", ".join(parts)
        if postfix:
            line += "; " + " ".join(f"{k} {v}" for k, v in postfix.items())
        print(line, file=self.file, flush=True)

    def close(self) -> None:
        global _BAR
        if self.bar is not None:
            self.bar.close()
            if _BAR is self.bar:
                _BAR = None
            self.bar = None
