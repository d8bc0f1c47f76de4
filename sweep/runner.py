"""Run a sweep: ask Optuna for a trial, train it, report every epoch, tell the result.

The budget is the study's, not the process's: `trials=50` means the study ends with 50 finished
(COMPLETE + PRUNED) trials, so running the same command after an interruption runs only the
remainder. A trial's value is the validation accuracy of the model the run ends with (the final
epoch), never the best epoch's, which would be chosen by peeking at val.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import uuid
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from data import Dataset
from model import train

from .errors import SweepError
from .progress import Progress
from .provenance import git_commit, host, versions_line
from .sampling import distributions, grid_size, make_pruner, make_sampler
from .study_file import StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5  # trials failing in a row before the sweep gives up: something is broken
MAX_RETRIES = 2  # re-queues of an abandoned trial (same parameters and seed)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while a sweep runs; the running trial has been marked FAIL."""


@dataclass
class RunSummary:
    study_name: str
    target: int
    finished: int
    ran: int  # trials this process started
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_number: int | None
    stopped_by: str  # budget | timeout | grid


def trial_seed(study_seed: int, number: int) -> int:
    """Each trial's training seed: distinct per trial, fixed by the study seed."""
    return (study_seed * 1_000_003 + number) % 2**31


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def study_attrs(spec: StudySpec, data: Dataset, seed: int) -> dict:
    return {
        "study_file": spec.path,
        "definition": json.dumps(spec.raw, default=str),
        "description": spec.description,
        "seed": seed,
        **data.describe(),
        "versions": versions_line(),
        "git_commit": git_commit(),
    }


def open_study(spec: StudySpec, data: Dataset, storage, name: str, seed: int) -> optuna.Study:
    """Create the study, or load it after checking it is the same experiment."""
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        attrs = existing[name].user_attrs
        wanted = study_attrs(spec, data, seed)
        for key in ("definition", "data_hash", "split", "seed"):
            if key in attrs and attrs[key] != wanted[key]:
                raise SweepError(f"study '{name}' already exists with a different {key.replace('_', ' ')} "
                                 f"({attrs[key] if key != 'definition' else 'study file changed'}); "
                                 "use --name to start a new study")
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=make_sampler(spec, seed), pruner=make_pruner(spec), load_if_exists=True)
    if name not in existing:
        for k, v in study_attrs(spec, data, seed).items():
            study.set_user_attr(k, v)
        for params in spec.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_abandoned(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead processes on this host FAIL, and queue them again."""
    me = host()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != me or not isinstance(pid, int) or _pid_alive(pid):
            continue
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, "fail_reason", f"abandoned: process {pid} on {me} died")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        retries = int(t.user_attrs.get("retries", 0))
        if retries < MAX_RETRIES:
            study.enqueue_trial(t.params, user_attrs={"seed": t.user_attrs.get("seed"), "retries": retries + 1,
                                                      "retry_of": t.number})
        recovered.append(t.number)
    return recovered


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_sweep(spec: StudySpec, data: Dataset, storage, *, trials: int, name: str | None = None,
              add: bool = False, device: str = "auto", timeout_s: float | None = None,
              seed: int | None = None, progress: bool = True) -> RunSummary:
    """Run trials until the study holds `trials` finished ones (or `trials` more with `add`)."""
    name = name or spec.name
    seed = spec.seed if seed is None else seed
    study = open_study(spec, data, storage, name, seed)
    recover_abandoned(study)
    dists = distributions(spec)

    already = count_finished(study)
    target = already + trials if add else trials
    stopped_by = "budget"
    size = grid_size(spec)
    if size is not None and target > size:
        target = max(size, already)
        stopped_by = "grid"

    best = _best(study)
    bar = Progress(target, already, best[0]) if progress else None
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    ran = 0
    consecutive_failures = 0
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while count_finished(study) < target:
            if timeout_s is not None and time.perf_counter() - started >= timeout_s:
                stopped_by = "timeout"
                break
            trial = study.ask(dists)
            ran += 1
            seed_i = trial.user_attrs.get("seed")
            if not isinstance(seed_i, int):
                seed_i = trial_seed(seed, trial.number)
            for k, v in {"run_id": run_id, "host": host(), "pid": os.getpid(), "seed": seed_i}.items():
                trial.set_user_attr(k, v)
            state, value, note = _run_trial(trial, spec, data, device, seed_i, bar, study)
            consecutive_failures = consecutive_failures + 1 if state == TrialState.FAIL else 0
            if bar:
                bar.done = count_finished(study)
                bar.best = _best(study)[0]
                bar.trial_done(trial.number, state.name, value, _trial_seconds(study, trial.number), note)
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                raise SweepError(f"{consecutive_failures} trials failed in a row (last: {note}); stopping the sweep")
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if bar:
            bar.close()

    trials_now = study.get_trials(deepcopy=False)
    by_state = {s: sum(t.state == s for t in trials_now) for s in TrialState}
    best_value, best_number = _best(study)
    return RunSummary(name, target, count_finished(study), ran, by_state[TrialState.COMPLETE],
                      by_state[TrialState.PRUNED], by_state[TrialState.FAIL], best_value, best_number, stopped_by)


def _run_trial(trial: optuna.Trial, spec: StudySpec, data: Dataset, device: str, seed: int,
               bar: Progress | None, study: optuna.Study) -> tuple[TrialState, float | None, str]:
    try:
        config = spec.config_for(trial.params, seed)
    except ValueError as e:
        return _fail(study, trial, f"invalid configuration: {e}")
    pruned = False

    def on_epoch(record: dict) -> bool:
        nonlocal pruned
        trial.report(record["val_acc"], record["epoch"])
        if bar:
            bar.epoch(trial.number, record["epoch"], config.epochs, record["val_acc"])
        if trial.should_prune():
            pruned = True
            return True
        return False

    try:
        result = train(data, config, device=device, on_epoch=on_epoch)
    except KeyboardInterrupt:
        _fail(study, trial, "interrupted (Ctrl-C or SIGTERM)")
        raise
    except Exception as e:  # a trial's crash must not end the sweep
        reason = "oom" if "out of memory" in str(e).lower() else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return _fail(study, trial, reason)

    attrs = {
        "val_acc": result.val_acc,
        "best_val_acc": result.best_val_acc,
        "train_s": round(result.train_s, 3),
        "images_per_s": round(result.images_per_s, 1),
        "epochs_run": result.epochs_run,
        "stop_reason": "pruned" if pruned else result.stop_reason,
        "n_params": result.n_params,
        "device": result.device,
        "device_name": result.device_name,
        "precision": result.precision,
        "data_name": data.name,
        "data_hash": data.content_hash,
        "versions": versions_line(),
        "git_commit": git_commit(),
        "val_confusion": json.dumps(result.val_confusion),
    }
    if result.test_acc is not None:
        attrs["test_acc"] = result.test_acc
        attrs["test_confusion"] = json.dumps(result.test_confusion)
    for k, v in attrs.items():
        trial.set_user_attr(k, v)

    if result.stop_reason == "diverged":
        # A hyperparameter's honest outcome, not a crash: it counts and steers the sampler away.
        trial.set_user_attr("fail_reason", "diverged: non-finite training loss")
        if result.epochs_run not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(result.val_acc, result.epochs_run)
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED, result.val_acc, "diverged"
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED, result.val_acc, f"pruned at epoch {result.epochs_run}"
    if not math.isfinite(result.val_acc):
        return _fail(study, trial, "non-finite validation accuracy")
    study.tell(trial, result.val_acc)
    return TrialState.COMPLETE, result.val_acc, ""


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> tuple[TrialState, None, str]:
    trial.set_user_attr("fail_reason", reason[:500])
    study.tell(trial, state=TrialState.FAIL)
    return TrialState.FAIL, None, reason


def _best(study: optuna.Study) -> tuple[float | None, int | None]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None, None
    t = max(done, key=lambda t: t.value)
    return t.value, t.number


def _trial_seconds(study: optuna.Study, number: int) -> float:
    t = study.get_trials(deepcopy=False)[number]
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return 0.0

