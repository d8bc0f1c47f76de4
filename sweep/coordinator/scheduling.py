"""Scheduling: which trial each worker takes next, asked of Optuna under the study's budget.

A worker's slots are filled with, in turn: a trial waiting to retry an out-of-memory alone on its
GPU, a pending trial that fits it, or a new one. Fused workers need trials of their group's key:
to find them the coordinator asks ahead (up to two trials per fused slot) and keeps what does not
fit yet in `pending` (RUNNING in the storage, which is what TPE's constant liar is for). Multi and
plain workers take any trial.
"""

from __future__ import annotations

import os
import time
import warnings

import optuna
from optuna.trial import TrialState

from ..attrs import count
from ..errors import SweepError
from ..locks import budget_lock
from ..pool import Running, Worker
from ..provenance import host
from ..proxy import budget_refused
from ..recovery import back_to_waiting, beat, fail_trial, requeue
from ..records import store_attrs
from .common import FINISHED, fuse_key_of, trial_seed


class Scheduling:
    def _out_of_time(self) -> bool:
        if self.timeout_s is not None and time.perf_counter() - self.started >= self.timeout_s:
            self.stopped_by = "timeout"
            return True
        return False

    def _ask(self) -> Running | None:
        """A new trial if the study's budget allows one, counting every process's running trials."""
        with self.held():  # once created, the trial is marked as this run's before a Ctrl-C lands
            asked = self._ask_marked()
        if asked is None:
            return None
        trial, seed = asked
        try:
            config = self.spec.config_for(trial.params, seed)
        except ValueError as e:
            self._finish_fail(trial, f"invalid configuration: {e}")
            return self._ask()
        return Running(trial, config.to_dict())

    def _ask_marked(self) -> tuple[optuna.Trial, int] | None:
        with budget_lock(self.study._storage, self.study.study_name):
            # as it is now: another run may have changed it (another client's rewrite of it is no budget)
            self.target = count(self.study.user_attrs.get("target_trials")) or self.target
            trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if len(trials) >= self.target:
                return None
            before = {t._trial_id for t in trials}
            try:
                with warnings.catch_warnings():
                    # Optuna warns that heartbeats expect Study.optimize: here the coordinator writes them.
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = self.study.ask(self.dists)
            except Exception as e:  # noqa: BLE001 - the sampler or the storage failed inside ask
                if budget_refused(e):  # a storage proxy counted the budget taken: nothing was created
                    return None
                self._fail_half_asked(before, e)
                raise SweepError(f"asking Optuna for a trial failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
            beat(self.study._storage, trial._trial_id)
        self.ran += 1
        seed = trial.user_attrs.get("seed")
        if not isinstance(seed, int):
            seed = trial_seed(self.seed, trial.number)
        store_attrs(trial, {"run_id": self.run_id, "host": host(), "pid": os.getpid(), "seed": seed})
        return trial, seed

    def _fail_half_asked(self, before: set[int], error: Exception) -> None:
        """Optuna's ask creates the trial, then samples: a sampler that raises leaves a RUNNING
        trial no process owns, which nothing could ever recover. Under the budget lock only this
        process asks, so the RUNNING trials that appeared meanwhile are that one: FAIL them."""
        reason = f"ask failed: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in before:
                fail_trial(self.study, t._trial_id, reason)

    def _next_for(self, w: Worker) -> Running | None:
        """The trial `w` should take next: a waiting OOM retry, a pending trial of its group's
        key, or a new one; None when nothing fits now."""
        waiting = self.oom_waiting.get(w.gpu)
        if waiting is not None:
            if w.running or any(o.running and o.gpu == w.gpu for o in self.pool.workers):
                return None  # the OOM retry runs alone on its GPU: hold this worker back
            return self.oom_waiting.pop(w.gpu)
        if self._out_of_time():
            return None
        key = w.group_key
        if key is None and self.pending and w.engine == "fused":  # an empty group forms around the commonest waiting key
            keys = [fuse_key_of(r.config) for r in self.pending]
            key = max(keys, key=keys.count)
        for r in self.pending:
            if key is None or fuse_key_of(r.config) == key:
                self.pending.remove(r)
                return r
        # Ask ahead up to two trials per fused slot: enough for groups to find members of their key.
        slots = sum(o.capacity for o in self.pool.workers if o.engine == "fused" and o.capacity > 1)
        while len(self.pending) < 2 * slots or key is None:
            r = self._ask()
            if r is None:
                return None
            if key is None or w.capacity == 1 or fuse_key_of(r.config) == key:
                return r
            self.pending.append(r)
        return None

    def _fill(self, w: Worker) -> None:
        while w.ready and len(w.running) < w.capacity:
            r = self._next_for(w)
            if r is None:
                return
            self._send(w, r)

    def _send(self, w: Worker, r: Running) -> None:
        r.epochs = 0
        w.running[r.trial.number] = r
        store_attrs(r.trial, {"worker": w.index, "worker_pid": w.proc.pid,
                              **({"gpu_index": w.gpu} if w.gpu is not None else {})})
        try:
            w.conn.send(("train", r.trial.number, r.config, w.device))
        except (OSError, ValueError):
            pass  # the death shows up on the sentinel next round

    def _drop_pending(self, reason: str) -> None:
        """Pending trials that will not start now: back to WAITING for the next run, which runs
        them first (failed and queued again where the storage cannot)."""
        for r in self.pending:
            with self.held():
                if back_to_waiting(self.study, r.trial._trial_id):
                    continue
                frozen = self.study._storage.get_trial(r.trial._trial_id)
                if fail_trial(self.study, r.trial._trial_id, reason):
                    requeue(self.study, frozen, reason)
        self.pending = []
