"""Nothing stays stuck: trials of processes that died are failed with their reason and queued again.

A trial is RUNNING in the storage while some process trains it. When that process dies (kill -9,
the OOM killer, a lost machine), its trials are found by process id on the same host or by a
heartbeat older than GRACE_S on any host, marked FAIL, and queued again with the same parameters
and seed, a bounded number of times.
"""

from __future__ import annotations

import os

import optuna
from optuna.trial import TrialState

from .attrs import count
from .provenance import host

# How often a running trial's heartbeat is written (s), and how old a heartbeat may get before its
# trial is taken as abandoned (s). The environment overrides them (tests shorten them).
HEARTBEAT_S = int(os.environ.get("SWEEP_HEARTBEAT_S", 5))
GRACE_S = int(os.environ.get("SWEEP_GRACE_S", 30))
MAX_RETRIES = 2  # re-queues of a trial whose process died (same parameters and seed)
# Optuna's gRPC proxy carries no heartbeats: through it, a heartbeat is this system attribute,
# which `sweep proxy` records as a real heartbeat instead of storing it (sweep.proxy).
HEARTBEAT_ATTR = "sweep:heartbeat"
# What a trial records when it is handed to a worker; a RUNNING trial without them waits for a slot.
WORKER_ATTRS = ("worker", "worker_pid", "gpu_index")


def beat(storage, trial_id: int) -> None:
    """Record that a RUNNING trial's process is alive: directly in a database, via the proxy otherwise."""
    if hasattr(storage, "record_heartbeat"):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, True)


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Queue a failed trial again with its parameters and seed, a bounded number of times."""
    retries = count(trial.user_attrs.get("retries")) or 0
    if retries < MAX_RETRIES and trial.params:
        study.enqueue_trial(trial.params, user_attrs={"seed": trial.user_attrs.get("seed"), "retries": retries + 1,
                                                      "retry_of": trial.number, "retry_reason": reason[:500]})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_trial(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with its reason; False when another process finished it first."""
    try:
        study._storage.set_trial_user_attr(trial_id, "fail_reason", reason[:500])
        return study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def back_to_waiting(study: optuna.Study, trial_id: int) -> bool:
    """A RUNNING trial that never reported an epoch goes back to WAITING, as if never asked: the
    next `ask` anywhere runs it first, with the parameters it has and its seed, and nothing records
    it as failed. Its heartbeat goes with it: an old one would make it look abandoned the moment it
    runs again. False where the storage cannot (a storage proxy) or the trial is no longer RUNNING
    or has an epoch: the caller fails it instead."""
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return False
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        if trial.state != TrialState.RUNNING or trial.intermediate_values:
            return False
        trial.state = TrialState.WAITING
        session.query(models.TrialHeartbeatModel).filter(models.TrialHeartbeatModel.trial_id == trial_id).delete()
        # no longer any worker's: `sweep studies` counts a RUNNING trial with a worker as training
        attrs = models.TrialUserAttributeModel
        session.query(attrs).filter(attrs.trial_id == trial_id, attrs.key.in_(WORKER_ATTRS)).delete()
    return True


def recover_abandoned(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials of dead processes: by pid on this host, by heartbeat elsewhere."""
    me = host()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != me or not isinstance(pid, int) or _pid_alive(pid):
            continue
        reason = f"abandoned: process {pid} on {me} died"
        if fail_trial(study, t._trial_id, reason):
            requeue(study, t, reason)
            recovered.append(t.number)
    recovered += fail_stale(study)
    return recovered


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials whose heartbeat is older than GRACE_S, with the reason.

    Optuna's own `fail_stale_trials` marks them FAIL first, after which no reason can be
    attached: here the reason goes on while the trial is still RUNNING. Through a storage proxy the
    proxy does this (only it sees the database's clock)."""
    storage = study._storage
    failed = []
    if not hasattr(storage, "_get_stale_trial_ids"):
        return failed
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        t = storage.get_trial(trial_id)
        reason = (f"abandoned: no heartbeat for {GRACE_S} s (process {t.user_attrs.get('pid', '?')} on "
                  f"{t.user_attrs.get('host', '?')} died, stalled or lost the database)")
        if fail_trial(study, trial_id, reason):
            requeue(study, t, reason)
            failed.append(t.number)
    return failed
