"""Bookkeeping: a finished trial's record, state and kept weights, and the progress line."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from ..pool import Worker
from ..records import store_attrs, trial_record
from .common import count_finished


class Telling:
    def _finish(self, trial: optuna.Trial, result: dict, w: Worker) -> None:
        pruned = trial.number in self.pruned
        store_attrs(trial, trial_record(result, self.study.user_attrs, pruned=pruned, compile=self.compile,
                                        run_id=self.run_id))
        complete = result["stop_reason"] != "diverged" and not pruned and math.isfinite(result["val_acc"])
        self._weights(w, trial, result["val_acc"] if complete else None)
        if result["stop_reason"] == "diverged":
            # A hyperparameter's honest outcome, not a crash: it counts and steers the sampler away.
            trial.set_user_attr("fail_reason", "diverged: non-finite training loss")
            if result["epochs_run"] not in self.study._storage.get_trial(trial._trial_id).intermediate_values:
                trial.report(result["val_acc"], result["epochs_run"])
            self._tell(trial, TrialState.PRUNED, result["val_acc"], "diverged")
        elif pruned:
            self._tell(trial, TrialState.PRUNED, result["val_acc"], f"pruned at epoch {result['epochs_run']}")
        elif not math.isfinite(result["val_acc"]):
            self._finish_fail(trial, "non-finite validation accuracy")
        else:
            self._tell(trial, TrialState.COMPLETE, result["val_acc"], "")

    def _weights(self, w: Worker, trial: optuna.Trial, value: float | None) -> None:
        """Answer the worker's 'done': keep the weights of a trial that ranks in the top K."""
        if value is None or self.weights is None or not self.weights.wanted(value):
            self._reply(w, ("nosave", trial.number))
            return
        tmp = self.weights.temp_path(self.run_id, trial.number)
        self._reply(w, ("save", trial.number, tmp))
        try:
            reply = w.conn.recv()
        except (EOFError, OSError):
            return  # the worker died saving: the trial is told without weights
        if reply[0] == "saved" and reply[2] is not None:
            self.weights.upload(trial, value, tmp)

    def _tell(self, trial, state, value, note):
        if state == TrialState.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)
        self.consecutive_failures = 0
        self.consecutive_takeovers = 0
        self.told += 1
        self._progress(trial.number, state, value, note)

    def _progress(self, number, state, value, note) -> None:
        if self.bar:
            self.bar.done = count_finished(self.study)
            self.bar.total = self.target
            self.bar.best = self._best()[0]
            t = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, number))
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
                if t.datetime_complete and t.datetime_start else 0.0
            self.bar.trial_done(number, state.name, value, seconds, note)

    def _best(self) -> tuple[float | None, int | None]:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None, None
        t = max(done, key=lambda t: t.value)
        return t.value, t.number
