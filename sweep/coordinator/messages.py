"""Messages from workers: epochs reported and pruned, results told, the engine a worker chose.

Every "epoch" and "done" a worker sends waits for an answer; whatever happens while handling it
(the trial was taken over by another process meanwhile), the worker gets one.
"""

from __future__ import annotations

import sys

import optuna

from ..errors import SweepError
from ..pool import Pool, Worker
from ..recovery import HEARTBEAT_S
from .common import MAX_CONSECUTIVE_FAILURES


class Messages:
    def _handle(self, pool: Pool, w: Worker, msg: tuple, data_hash: str) -> None:
        kind = msg[0]
        if kind == "ready":
            if msg[2] != data_hash:
                raise SweepError("a worker loaded different data than the coordinator (the file changed?)")
            w.ready = True
            self.start_deaths = 0
            if w.engine == "auto" and len(msg) > 3:
                self._auto_chosen(w, *msg[3:6])
            return
        if kind == "note":  # a worker's one line for the user (a trial that trains eagerly, say)
            print(f"sweep: {msg[2]}", file=sys.stderr)
            return
        r = w.running.get(msg[1]) if kind != "oom" or msg[1] is not None else None
        self.replied = False
        try:
            self._handle_trial(w, msg)
        except optuna.exceptions.UpdateFinishedTrialError:
            # This process was late (paused, swapped out, cut off from the database) and another one
            # failed the trial as abandoned and queued it again: drop it here and go on. The worker
            # keeps its slot until it lets the trial go (its "done"), so no job crosses the answers.
            if r is not None:
                r.dropped = True
            if not self.replied and kind in ("epoch", "done"):  # the worker waits for an answer to these
                self._answer_dropped(w, msg)
            number = r.trial.number if r is not None else msg[1]
            print(f"sweep: trial {number} was taken over by another process while this one was late "
                  "(its heartbeat went stale); dropped here, it runs again elsewhere", file=sys.stderr)
            self.consecutive_takeovers += 1
            if self.consecutive_takeovers >= MAX_CONSECUTIVE_FAILURES:
                # Late once is a pause; late every time is a setting: this process's heartbeats come
                # less often than another process's grace period allows (SWEEP_HEARTBEAT_S, SWEEP_GRACE_S).
                raise SweepError(f"{self.consecutive_takeovers} trials in a row were taken over as abandoned while "
                                 f"this process ran them: its heartbeat (every {HEARTBEAT_S} s) comes later than "
                                 "the other processes' grace period allows; stopping")

    def _auto_chosen(self, w: Worker, engine: str, k: int, choice: dict | None) -> None:
        """An auto worker measured its engine: it trains so from now on (at most as many trials
        as an out-of-memory left it), and the first one says so."""
        w.engine, w.capacity = engine, max(1, min(k, w.capacity))
        if not self.auto_said and choice:
            self.auto_said = True
            if "error" in choice:
                what = f"measuring failed ({choice['error']}); plain"
            else:
                figures = ", ".join(f"{c} {v:,.0f}" for c, v in choice.get("figures", {}).items())
                what = (f"{engine}{f':{k}' if engine != 'plain' else ''} "
                        f"({'cached' if choice.get('cached') else 'measured'}, images/s: {figures})")
            print(f"sweep: --engine auto: {what}", file=sys.stderr)

    def _answer_dropped(self, w: Worker, msg: tuple) -> None:
        """Messages about a dropped trial: stop it, keep no weights, free the slot when it ends."""
        kind = msg[0]
        if kind == "epoch":
            self._reply(w, "prune")
            return
        if kind == "done":
            self._reply(w, ("nosave", msg[1]))
        w.running.pop(msg[1], None)

    def _reply(self, w: Worker, answer) -> None:
        try:
            w.conn.send(answer)
        except (OSError, ValueError):
            pass  # the worker died after it asked (kill -9): its death shows up on its sentinel next round
        self.replied = True

    def _handle_trial(self, w: Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "oom" and msg[1] is None:  # a fused group ran out of memory: shrink it, run it again
            self._group_oom(w, msg[3])
            return
        r = w.running.get(msg[1]) if msg[1] is not None else None
        if r is not None and r.dropped:
            self._answer_dropped(w, msg)
            return
        if r is None:
            if kind == "error" and msg[1] is None:
                raise SweepError(msg[2])
            if kind == "epoch":
                self._reply(w, "prune")  # not a trial we run (any more): never leave a worker waiting
            elif kind == "done":
                self._reply(w, ("nosave", msg[1]))
            return
        trial = r.trial
        if kind == "epoch":
            record = msg[2]
            r.epochs = record["epoch"]
            trial.report(record["val_acc"], record["epoch"])
            if self.bar:
                self.bar.epoch(trial.number, record["epoch"], r.config["epochs"], record["val_acc"])
            prune = trial.should_prune()
            if prune:
                self.pruned.add(trial.number)
            self._reply(w, "prune" if prune else "go")
        elif kind == "done":
            del w.running[trial.number]
            self._finish(trial, msg[2], w)
        elif kind == "oom":
            del w.running[trial.number]
            if trial.number in self.oom_retried:
                self._finish_fail(trial, "oom")
            else:
                self.oom_retried.add(trial.number)
                trial.set_user_attr("oom_retry", True)
                self.oom_waiting[w.gpu] = r
        elif kind == "error":
            del w.running[trial.number]
            self._finish_fail(trial, msg[2])
