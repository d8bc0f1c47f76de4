"""A one-line progress display: trials done/total, best so far, the running trial's epoch, and the
time left at the pace now.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line per finished trial.

The time left is an estimate: the epochs the budget still needs (trials left times the mean
epochs a trial of the study runs, from its `epochs` range or value, less the epochs the running
trials have done) times the pace now: wall seconds per epoch over the last RECENT_TRIALS finished
trials (from the end of the trial before them, so every overhead and parallel worker is in it).
Other work on a shared machine changes the pace within a run; a mean over the whole run followed
such changes late (24% low as the load rose, then high as it fell). A run that resumes a study
says it as it starts, at the pace of the study's last run; every run says it once its own first
trial finishes, at that trial's pace, and updates it in the progress line after that.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO


QUIET_S = 30  # seconds: in a log, an epoch line when nothing was printed for this long
# Finished trials the pace is measured over: few enough to follow a change of load within a few
# trials (a quick-study trial is seconds), enough that one slow configuration does not swing it.
RECENT_TRIALS = 5


def mean_epochs(spec) -> float:
    """The mean epochs a trial of the study is set to run: the middle of a searched range, the mean
    of searched choices, or the fixed (or default) value."""
    p = spec.search.get("epochs")
    if p is None:
        from model import TrainConfig

        return float(spec.fixed.get("epochs", TrainConfig().epochs))
    if p.choices is not None:
        return sum(p.choices) / len(p.choices)
    return (p.low + p.high) / 2


def earlier_pace(trials) -> float | None:
    """Wall seconds per epoch of the study's last run (its trials' run_id): from its first trial's
    start to its last one's end, over the epochs its finished trials ran. None for a new study."""
    runs: dict = {}
    for t in trials:
        epochs = t.user_attrs.get("epochs_run")
        if t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete and epochs:
            runs.setdefault(t.user_attrs.get("run_id"), []).append(t)
    if not runs:
        return None
    last = max(runs.values(), key=lambda ts: max(t.datetime_complete for t in ts))
    wall = (max(t.datetime_complete for t in last) - min(t.datetime_start for t in last)).total_seconds()
    epochs = sum(t.user_attrs["epochs_run"] for t in last)
    return wall / epochs if wall > 0 else None


def say_duration(seconds: float) -> str:
    if seconds < 45:
        return "under a minute"
    if seconds < 90:
        return "about a minute"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


def say_trials(n: int) -> str:
    return "the last trial" if n == 1 else f"the last {n} trials"


class Progress:
    def __init__(self, total: int, done: int, best: float | None, stream: TextIO | None = None,
                 epochs_per_trial: float | None = None):
        self.total = total
        self.done = done
        self.best = best
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.perf_counter()
        self._last = ""
        self._last_line_at = time.perf_counter()
        self.epochs_per_trial = epochs_per_trial
        self._first_epoch_at: float | None = None
        self._epochs_since = 0  # epochs reported after the run's first one
        # (time, _epochs_since) at the run's first epoch, then at each finished trial's end: the pace
        # is measured from the oldest, i.e. over the last RECENT_TRIALS trials
        self._marks: deque[tuple[float, int]] = deque(maxlen=RECENT_TRIALS + 1)
        self._running: dict[int, int] = {}  # trial -> epochs it has reported
        self._trials_done = 0  # finished in this run
        self.estimate_said = False
        self.earlier_pace: float | None = None  # the study's last run's, until this run has its own
        self.training = 0  # trials this run's workers hold now
        self.waiting = 0  # trials this run asked ahead that wait for a worker's slot

    def _bar(self, width: int = 20) -> str:
        filled = int(width * self.done / max(1, self.total))
        return "#" * filled + "-" * (width - filled)

    def pace(self) -> float | None:
        """Wall seconds per epoch over this run's last RECENT_TRIALS finished trials, once one has
        finished; before that, the study's last run's."""
        if self.epochs_per_trial is None:
            return None
        if not self._trials_done or not self._epochs_since:
            return self.earlier_pace
        since, epochs = self._marks[0]
        if epochs >= self._epochs_since:  # those trials failed before an epoch: the whole run's pace
            since, epochs = self._first_epoch_at, 0
        return (time.perf_counter() - since) / (self._epochs_since - epochs)

    def recent_trials(self) -> int:
        """How many finished trials the pace is measured over (up to RECENT_TRIALS)."""
        return len(self._marks) - 1

    def start(self, earlier_pace: float | None) -> None:
        """As the run starts: the estimate at the pace of the study's last run, if it had one."""
        self.earlier_pace = earlier_pace
        left = self.seconds_left()
        if left is None or self.done >= self.total:
            return
        self.stream.write(f"estimate: {say_duration(left)} for the remaining {self.total - self.done} trials at the "
                          f"pace of the study's last run ({earlier_pace:.2f} s per epoch, {self.epochs_per_trial:g} "
                          "epochs per trial on average); said again once this run's first trial is done\n")
        self.stream.flush()

    def epochs_left(self) -> float:
        return max(0.0, max(0, self.total - self.done) * (self.epochs_per_trial or 0) - sum(self._running.values()))

    def seconds_left(self) -> float | None:
        """The time the budget still needs at the pace (this run's, else the study's last run's); None
        while neither is known."""
        pace = self.pace()
        return None if pace is None else self.epochs_left() * pace

    def _left(self) -> str:
        left = self.seconds_left()
        if left is None or self.done >= self.total:
            return ""
        return f" | ~{max(1, round(left / 60))} min left" if left >= 45 else " | <1 min left"

    def _head(self) -> str:
        best = f"{self.best:.2%}" if self.best is not None else "-"
        return f"[{self._bar()}] {self.done}/{self.total} trials | best val {best}{self._at_once()}{self._left()}"

    def _at_once(self) -> str:
        """Trials training and waiting, where a run has more than one at a time."""
        if self.training <= 1 and not self.waiting:
            return ""
        return f" | {self.training} training" + (f", {self.waiting} waiting" if self.waiting else "")

    def epoch(self, number: int, epoch: int, epochs: int, val_acc: float) -> None:
        if self._first_epoch_at is None:
            self._first_epoch_at = time.perf_counter()
            self._marks.append((self._first_epoch_at, 0))
        else:
            self._epochs_since += 1
        self._running[number] = epoch
        line = f"{self._head()} | trial {number} epoch {epoch}/{epochs} val {val_acc:.2%}"
        if self.live:
            self._draw(line)
        elif time.perf_counter() - self._last_line_at >= QUIET_S:
            # In a log (CI, Slurm) long trials still show signs of life, at most every QUIET_S.
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line_at = time.perf_counter()

    def trial_done(self, number: int, state: str, value: float | None, seconds: float, note: str = "") -> None:
        self._running.pop(number, None)
        self._trials_done += 1
        if self._first_epoch_at is not None:
            self._marks.append((time.perf_counter(), self._epochs_since))
        shown = f"{value:.2%}" if value is not None else "-"
        line = f"trial {number} {state.lower()} val {shown} in {seconds:.1f}s{(' (' + note + ')') if note else ''}"
        if self.live:
            self._draw("")
            self.stream.write("\r" + line + "\n")
        else:
            self.stream.write(f"{self._head()} | {line}\n")
            self._last_line_at = time.perf_counter()
        self._say_estimate()
        if self.live:
            self._draw(self._head())
        self.stream.flush()

    def _say_estimate(self) -> None:
        """Once, when the run's first trial is done: the whole remainder at the current pace."""
        left = self.seconds_left()
        own = self._trials_done and self._epochs_since  # this run's pace, not the last run's
        if self.estimate_said or not own or left is None or self.done >= self.total:
            return
        self.estimate_said = True
        self.stream.write(f"estimate: {say_duration(left)} for the remaining {self.total - self.done} trials at the pace "
                          f"now ({self.pace():.2f} s per epoch over {say_trials(self.recent_trials())}, "
                          f"{self.epochs_per_trial:g} epochs per trial on average); the progress line keeps it up to "
                          f"date at the pace of the last {RECENT_TRIALS} trials\n")

    def _draw(self, text: str) -> None:
        pad = max(0, len(self._last) - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._last = text

    def close(self) -> None:
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()
