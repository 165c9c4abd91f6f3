"""Progress of the long steps of a run: checking, decoding, feature extraction.

`Progress` is called with ``(done, total)`` as work finishes. In a terminal it redraws
one line: count, percentage, rate and time left; in a log (output that is not a
terminal) it prints one line each time another 10% is done, so a log of a 100,000-photo
run has ten lines per step, not a hundred thousand.

    progress = Progress("Decoding train photos")
    for done in ...:
        progress(done, total)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Report ``(done, total)`` of one step, by 10% lines in a log or a live line in a
    terminal.

    Args:
        what: The step, as the line begins (``"Decoding train photos"``).
        unit: What is counted (``"photos"``).
        stream: Where to write (standard output by default).
        live: Redraw one line (``True``), print by 10% (``False``); ``None``: live when
            ``stream`` is a terminal.
        minimum_total: Smaller steps print nothing (a few dozen photos need no bar).
    """

    def __init__(self, what: str, unit: str = "", stream: TextIO | None = None,
                 live: bool | None = None, minimum_total: int = 1):
        self.what, self.unit = what, unit
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self.minimum_total = minimum_total
        self.started = time.monotonic()
        self.next_tenth = 1
        self.finished = False

    def line(self, done: int, total: int) -> str:
        """``what: done/total unit (pct%), rate/s, time left`` for the current state."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else float("inf")
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.what}: {done}/{total}{unit} ({done / total:.0%}), {rate:,.1f}/s"
        if done < total and left != float("inf"):
            text += f", {_duration(left)} left"
        elif done >= total:
            text += f", {_duration(elapsed)} in all"
        return text

    def __call__(self, done: int, total: int) -> None:
        if total < self.minimum_total or total <= 0 or self.finished:
            return
        done = min(int(done), int(total))
        if self.live:
            end = "\n" if done >= total else ""
            self.stream.write("\r" + self.line(done, total) + end)
            self.stream.flush()
        else:
            tenth = done * 10 // total
            if tenth >= self.next_tenth:
                self.next_tenth = tenth + 1
                self.stream.write(self.line(done, total) + "\n")
                self.stream.flush()
        self.finished = done >= total
