"""The coordinator's state and its loop; each concern is a part of its own (scheduling,
messages, failures, telling), mixed into one object."""

from __future__ import annotations

import contextlib
import time
import uuid
from multiprocessing.connection import wait

from ..errors import SweepError
from ..pool import Pool, Running
from ..progress import Progress, earlier_pace, mean_epochs
from ..recovery import HEARTBEAT_S
from ..storage import check_same_file
from .common import WORKER_START_S, count_finished
from .failures import Failures
from .messages import Messages
from .scheduling import Scheduling
from .telling import Telling


class Coordinator(Scheduling, Messages, Failures, Telling):
    def __init__(self, study, spec, dists, seed, target, timeout_s, progress, compile="off", weights=None):
        self.study, self.spec, self.dists, self.seed = study, spec, dists, seed
        self.target, self.timeout_s, self.compile, self.weights = target, timeout_s, compile, weights
        self.run_id = uuid.uuid4().hex[:12]
        self.started = time.perf_counter()
        self.ran = 0
        self.told = 0  # trials this run finished (complete or pruned)
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
        self.auto_said = False  # whether the run said what --engine auto chose
        self.held = contextlib.nullcontext  # a step a Ctrl-C must not split (runner.InterruptOnce.held)
        self.bar = Progress(target, count_finished(study), self._best()[0],
                            epochs_per_trial=mean_epochs(spec)) if progress else None

    def loop(self, pool: Pool, data_hash: str, interrupt=None) -> None:
        """Until the budget is met. `interrupt` (runner.InterruptOnce) raises KeyboardInterrupt
        where the signal lands; should library code swallow it there, the loop raises it again."""
        self.pool = pool
        if interrupt is not None:
            self.held = interrupt.held
        if self.bar:
            self.bar.start(earlier_pace(_as_sweep_wrote_them(self.study.get_trials(deepcopy=False))))
        while True:
            if interrupt is not None and interrupt.fired:
                raise KeyboardInterrupt
            self._heartbeats()  # first: after a pause, our own trials must not look abandoned to us
            check_same_file(self.study._storage)  # a SQLite file deleted under the run takes every result with it
            self._check_stale()
            for w in pool.workers:
                self._fill(w)
            if self.bar:
                self.bar.training = sum(len(w.running) for w in pool.workers)
                self.bar.waiting = len(self.pending) + len(self.oom_waiting)
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


def _as_sweep_wrote_them(trials: list) -> list:
    """Copies of `trials` whose user attributes of an unexpected kind (another client's rewrite) are
    left out, for readers that expect what sweep wrote."""
    import copy

    from ..attrs import trial_attrs

    out = []
    for t in trials:
        t = copy.copy(t)
        t.user_attrs = trial_attrs(t.user_attrs)
        out.append(t)
    return out
