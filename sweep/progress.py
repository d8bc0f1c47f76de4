"""A one-line progress display: trials done/total, best so far, the running trial's epoch.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line per finished trial.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


QUIET_S = 30  # seconds: in a log, an epoch line when nothing was printed for this long


class Progress:
    def __init__(self, total: int, done: int, best: float | None, stream: TextIO | None = None):
        self.total = total
        self.done = done
        self.best = best
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.perf_counter()
        self._last = ""
        self._last_line_at = time.perf_counter()

    def _bar(self, width: int = 20) -> str:
        filled = int(width * self.done / max(1, self.total))
        return "#" * filled + "-" * (width - filled)

    def _head(self) -> str:
        best = f"{self.best:.2%}" if self.best is not None else "-"
        return f"[{self._bar()}] {self.done}/{self.total} trials | best val {best}"

    def epoch(self, number: int, epoch: int, epochs: int, val_acc: float) -> None:
        line = f"{self._head()} | trial {number} epoch {epoch}/{epochs} val {val_acc:.2%}"
        if self.live:
            self._draw(line)
        elif time.perf_counter() - self._last_line_at >= QUIET_S:
            # In a log (CI, Slurm) long trials still show signs of life, at most every QUIET_S.
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line_at = time.perf_counter()

    def trial_done(self, number: int, state: str, value: float | None, seconds: float, note: str = "") -> None:
        shown = f"{value:.2%}" if value is not None else "-"
        line = f"trial {number} {state.lower()} val {shown} in {seconds:.1f}s{(' (' + note + ')') if note else ''}"
        if self.live:
            self._draw("")
            self.stream.write("\r" + line + "\n")
            self._draw(self._head())
        else:
            self.stream.write(f"{self._head()} | {line}\n")
            self._last_line_at = time.perf_counter()
        self.stream.flush()

    def _draw(self, text: str) -> None:
        pad = max(0, len(self._last) - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._last = text

    def close(self) -> None:
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()
