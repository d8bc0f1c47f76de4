"""The coordinator: asks Optuna for trials, keeps every worker's slots full, tells the results.

It is the only process of a run that writes the storage. Each worker streams every epoch's
validation accuracy of each of its trials; the coordinator reports it, asks the pruner, answers,
and tells the result when the worker says a trial is done.

Fused workers train a group of trials that share model.FUSE_KEYS. To keep their groups full the
coordinator asks ahead: a trial that fits no group yet waits in `pending` (RUNNING in the storage,
which is what TPE's constant liar is for) until a group with its key has room or a worker's group
empties and forms around it. Pending trials count toward the budget and are recovered like running
ones if this process dies.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import uuid
import warnings
from multiprocessing.connection import wait

import optuna
from optuna.trial import TrialState

from .errors import SweepError
from .locks import budget_lock
from .pool import Pool, Running, Worker
from .proxy import budget_refused
from .progress import Progress, earlier_pace, mean_epochs
from .provenance import host
from .recovery import HEARTBEAT_S, beat, fail_stale, fail_trial, requeue
from .records import store_attrs, trial_record

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5  # trials failing in a row before the sweep gives up: something is broken
WORKER_START_S = 300  # a worker that is not ready by then (import + data load) is a failure
MAX_START_DEATHS = 3  # workers dying in a row before they are ready: something kills every one


def trial_seed(study_seed: int, number: int) -> int:
    """Each trial's training seed: distinct per trial, fixed by the study seed."""
    return (study_seed * 1_000_003 + number) % 2**31


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _key(config: dict) -> tuple:
    from model import FUSE_KEYS

    return tuple(config[k] for k in FUSE_KEYS)


class Coordinator:
    def __init__(self, study, spec, dists, seed, target, timeout_s, progress, compile="off", weights=None):
        self.study, self.spec, self.dists, self.seed = study, spec, dists, seed
        self.target, self.timeout_s, self.compile, self.weights = target, timeout_s, compile, weights
        self.run_id = uuid.uuid4().hex[:12]
        self.started = time.perf_counter()
        self.ran = 0
        self.consecutive_failures = 0
        self.consecutive_takeovers = 0  # trials taken over by another process, none finished here since
        self.stopped_by = "budget"
        self.pending: list[Running] = []  # asked, waiting for a group with room (fused workers only)
        self.oom_waiting: dict[int | None, Running] = {}  # gpu -> trial to retry alone there
        self.oom_retried: set[int] = set()
        self.pruned: set[int] = set()  # trials the pruner stopped
        self.last_stale_check = 0.0
        self.start_deaths = 0  # workers that died in a row before they were ready
        self.replied = False  # whether the worker's message being handled has had its answer
        self.held = contextlib.nullcontext  # a step a Ctrl-C must not split (runner.InterruptOnce.held)
        self.bar = Progress(target, count_finished(study), self._best()[0],
                            epochs_per_trial=mean_epochs(spec)) if progress else None

    # ---- asking

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
            self.target = int(self.study.user_attrs.get("target_trials", self.target))
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
        if key is None and self.pending:  # an empty worker forms its group around the commonest waiting key
            keys = [_key(r.config) for r in self.pending]
            key = max(keys, key=keys.count)
        for r in self.pending:
            if key is None or _key(r.config) == key:
                self.pending.remove(r)
                return r
        # Ask ahead up to two trials per slot: enough for groups to find members of their key.
        slots = sum(o.capacity for o in self.pool.workers if o.capacity > 1)
        while len(self.pending) < 2 * slots or key is None:
            r = self._ask()
            if r is None:
                return None
            if key is None or w.capacity == 1 or _key(r.config) == key:
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

    # ---- the loop

    def loop(self, pool: Pool, data_hash: str, interrupt=None) -> None:
        """Until the budget is met. `interrupt` (runner.InterruptOnce) raises KeyboardInterrupt
        where the signal lands; should library code swallow it there, the loop raises it again."""
        self.pool = pool
        if interrupt is not None:
            self.held = interrupt.held
        if self.bar:
            self.bar.start(earlier_pace(self.study.get_trials(deepcopy=False)))
        while True:
            if interrupt is not None and interrupt.fired:
                raise KeyboardInterrupt
            self._heartbeats()  # first: after a pause, our own trials must not look abandoned to us
            self._check_stale()
            for w in pool.workers:
                self._fill(w)
            if not any(w.running for w in pool.workers):
                if count_finished(self.study) >= self.target or (self._out_of_time() and not self.oom_waiting):
                    self._drop_pending("not started before --timeout")
                    return
                if all(w.ready for w in pool.workers):
                    # Nothing runs here, yet the budget is not met: other processes hold the rest
                    # (or a waiting OOM retry). Wait for them, checking for the dead.
                    time.sleep(min(HEARTBEAT_S, 1.0))
            self._heartbeats()
            handles = {}
            for w in pool.workers:
                handles[w.conn] = w
                handles[w.proc.sentinel] = w
            for h in wait(list(handles), timeout=1.0):
                w = handles[h]
                if w not in pool.workers:
                    continue  # respawned while handling an earlier handle
                if h is w.conn:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._worker_died(pool, w)
                        continue
                    self._handle(pool, w, msg, data_hash)
                elif not w.proc.is_alive():
                    self._worker_died(pool, w)
            for w in list(pool.workers):
                if not w.ready and time.perf_counter() - w.started > WORKER_START_S:
                    raise SweepError(f"worker {w.index} did not start within {WORKER_START_S} s")

    def _drop_pending(self, reason: str) -> None:
        """Pending trials that will not start now: failed and queued again for the next run."""
        for r in self.pending:
            with self.held():
                frozen = self.study._storage.get_trial(r.trial._trial_id)
                if fail_trial(self.study, r.trial._trial_id, reason):
                    requeue(self.study, frozen, reason)
        self.pending = []

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

    def _handle(self, pool: Pool, w: Worker, msg: tuple, data_hash: str) -> None:
        kind = msg[0]
        if kind == "ready":
            if msg[2] != data_hash:
                raise SweepError("a worker loaded different data than the coordinator (the file changed?)")
            w.ready = True
            self.start_deaths = 0
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
        w.conn.send(answer)
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

    # ---- telling

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
        self._progress(trial.number, state, value, note)

    def _finish_fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason[:500])
        self.study.tell(trial, state=TrialState.FAIL)
        self.consecutive_failures += 1
        self._progress(trial.number, TrialState.FAIL, None, reason)
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{self.consecutive_failures} trials failed in a row (last: {reason}); stopping the sweep")

    def fail_all_running(self, reason: str) -> None:
        """On Ctrl-C or an error: this run's RUNNING trials (pending ones too) become FAIL with the
        reason, never left RUNNING."""
        try:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("run_id") == self.run_id:
                    fail_trial(self.study, t._trial_id, reason)
        except Exception:  # noqa: BLE001 - the storage is gone: the error on its way out says so, and
            pass  # the trials' heartbeats stop, so the next process to look fails and re-queues them

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
