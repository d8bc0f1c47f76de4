"""Failures and recovery: dead workers, out-of-memory, failed trials, interruptions, heartbeats.

Nothing is lost and nothing stays RUNNING: a dead worker's trials fail with the reason and are
queued again; an out-of-memory is never a verdict on hyperparameters; an interrupted run fails
the trials that trained and sends the ones that never did back to WAITING.
"""

from __future__ import annotations

import contextlib
import sys
import time

import optuna
from optuna.trial import TrialState

from ..errors import SweepError
from ..pool import Pool, Worker
from ..recovery import HEARTBEAT_S, back_to_waiting, beat, fail_stale, fail_trial, requeue
from .common import MAX_CONSECUTIVE_FAILURES, MAX_START_DEATHS


class Failures:
    def _group_oom(self, w: Worker, numbers: list[int]) -> None:
        """Out of memory in a fused group: never a verdict on its hyperparameters. The worker's
        group size halves and its trials start again (same parameters and seed); at size 1 the
        plain rule holds: one retry alone on the GPU, then FAIL with reason oom."""
        dropped = [r for r in (w.running.pop(n) for n in numbers if n in w.running) if not r.dropped]
        if w.capacity > 1:
            w.capacity = max(1, w.capacity // 2)
            for r in dropped:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    r.trial.set_user_attr("oom_regrouped", True)
            self.pending[:0] = dropped
            return
        for r in dropped:
            if r.trial.number in self.oom_retried:
                self._finish_fail(r.trial, "oom")
            else:
                self.oom_retried.add(r.trial.number)
                r.trial.set_user_attr("oom_retry", True)
                self.oom_waiting[w.gpu] = r

    def _worker_died(self, pool: Pool, w: Worker) -> None:
        code = w.proc.exitcode if not w.proc.is_alive() else None
        w.proc.join(1)
        code = w.proc.exitcode if code is None else code
        pool.respawn(w)
        if not w.running:
            if not w.ready:  # killed while loading (the OOM killer, say): replaced, up to a point
                self.start_deaths += 1
                if self.start_deaths >= MAX_START_DEATHS:
                    raise SweepError(f"{self.start_deaths} workers in a row died while starting (last exit code "
                                     f"{code}); is the machine out of memory?")
                print(f"sweep: a worker died while starting (exit code {code}); started another", file=sys.stderr)
            return
        reason = f"worker died (exit code {code}, signal {-code})" if code is not None and code < 0 else \
            f"worker died (exit code {code})"
        for r in w.running.values():  # every member of a fused group fails and is queued again
            if r.dropped:
                continue  # another process failed and re-queued it already
            with self.held():  # failed and queued again, or neither: a Ctrl-C must not lose the retry
                frozen = self.study._storage.get_trial(r.trial._trial_id)
                r.trial.set_user_attr("fail_reason", reason)
                self.study.tell(r.trial, state=TrialState.FAIL)
                requeue(self.study, frozen, reason)
            self._progress(r.trial.number, TrialState.FAIL, None, reason)

    def _finish_fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason[:500])
        self.study.tell(trial, state=TrialState.FAIL)
        self.consecutive_failures += 1
        self._progress(trial.number, TrialState.FAIL, None, reason)
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{self.consecutive_failures} trials failed in a row (last: {reason}); stopping the sweep")

    def fail_all_running(self, reason: str) -> None:
        """On Ctrl-C or an error: none of this run's trials is left RUNNING. Those that reported
        an epoch become FAIL with the reason; those that never trained (asked ahead and pending,
        or stopped inside their first epoch) go back to WAITING, for the next run to take first
        with the same parameters and seed."""
        try:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("run_id") == self.run_id:
                    with contextlib.suppress(Exception):  # (a full disk: failing it is tried all the same)
                        if not t.intermediate_values and back_to_waiting(self.study, t._trial_id):
                            continue
                    fail_trial(self.study, t._trial_id, reason)
        except Exception:  # noqa: BLE001 - the storage is gone: the error on its way out says so, and
            pass  # the trials' heartbeats stop, so the next process to look fails and re-queues them

    def _heartbeats(self) -> None:
        now = time.perf_counter()
        for w in self.pool.workers:
            if w.running and now - w.last_heartbeat >= HEARTBEAT_S:
                for r in w.running.values():
                    if not r.dropped:
                        beat(self.study._storage, r.trial._trial_id)
                w.last_heartbeat = now
        if self.pending and now - getattr(self, "pending_heartbeat", 0.0) >= HEARTBEAT_S:
            for r in self.pending:
                beat(self.study._storage, r.trial._trial_id)
            self.pending_heartbeat = now

    def _check_stale(self) -> None:
        now = time.perf_counter()
        if now - self.last_stale_check >= HEARTBEAT_S:
            fail_stale(self.study)
            self.last_stale_check = now
