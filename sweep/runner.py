"""Run a sweep: open the study, start the workers (sweep.pool), let the coordinator
(sweep.coordinator) ask and tell until the budget is met, and stop cleanly however it ends.

The budget is the study's, not the process's: `trials=50` means the study ends with 50 finished
(COMPLETE + PRUNED) trials, whoever ran them, so rerunning the same command after an interruption
runs only the remainder, and workers on other machines share it. A trial's value is the
validation accuracy of the model the run ends with (the final epoch), never the best epoch's.

Nothing is lost and nothing stays stuck: a worker that dies fails its trials and they are
queued again with the same parameters and seed; RUNNING trials of a dead coordinator are found by
pid (same host) or stale heartbeat (any host) and queued again (sweep.recovery); a CUDA
out-of-memory halves a worker's group (fused or multi), and a lone trial is retried once alone on
its GPU before it counts as a failure.
"""

from __future__ import annotations

import contextlib
import json
import signal
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from data import Dataset
from model import FUSE_KEYS

from .attrs import count
from .coordinator import FINISHED, Coordinator, count_finished, trial_seed
from .errors import SweepError
from .locks import budget_lock
from .pool import Pool, plan_workers
from .provenance import git_commit, versions_line
from .recovery import recover_abandoned
from .storage import SpaceReserve, check_same_file, disk_full, file_identity
from .stored import made_by_sweep
from .sampling import distributions, grid_size, make_pruner, make_sampler
from .study_file import StudySpec
from .weights import KeptWeights

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC = "val_acc"  # what a trial's value is: the final model's validation accuracy

__all__ = ["FINISHED", "Interrupted", "InterruptOnce", "RunSummary", "count_finished", "open_study",
           "plan_workers", "recover_abandoned", "run_sweep", "study_attrs", "trial_seed"]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a sweep or a confirmation; what was done is stored (running trials FAIL)."""


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
    with budget_lock(storage, name):
        existing = {s.study_name: s for s in storage.get_all_studies()}  # without their trials
        if name in existing:
            refuse_foreign(storage, existing[name])
            attrs = existing[name].user_attrs
            wanted = study_attrs(spec, data, seed)
            for key in ("definition", "data_hash", "split", "seed"):
                if key in attrs and attrs[key] != wanted[key]:
                    raise SweepError(f"study '{name}' already exists with {_differs(key, attrs[key], wanted[key])}; "
                                     f"{'pass --seed ' + str(attrs[key]) + ' to continue it, or ' if key == 'seed' else ''}"
                                     "use --name to start a new study")
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=make_sampler(spec, seed), pruner=make_pruner(spec), load_if_exists=True)
        if study.metric_names is None:  # optuna-dashboard labels the value with it ("Objective 0" without)
            study.set_metric_names([METRIC])
        if name not in existing:
            # The definition last: it is what marks the study as sweep's (stored.made_by_sweep), so a
            # run stopped between these writes leaves a study that says it is not finished.
            written = study_attrs(spec, data, seed)
            for k, v in sorted(written.items(), key=lambda kv: kv[0] == "definition"):
                study.set_user_attr(k, v)
            for params in spec.enqueue:
                study.enqueue_trial(params, skip_if_exists=True)
    return study


def refuse_foreign(storage, found) -> None:
    """A study `sweep run` did not make (the `optuna` CLI's, a script's) is never trained into:
    whatever its direction, it has no definition to check a run against, and its trials are not
    sweep's. Refused in one line saying why and what to do instead."""
    if not made_by_sweep(found.user_attrs) or found.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise SweepError(foreign_study_line(storage, found))


def foreign_study_line(storage, found) -> str:
    """Why a study `sweep run` did not make is not trained into, and what to do instead."""
    import shlex

    from .stored import state_counts
    from .storage import storage_url

    name = found.study_name
    held = sum(state_counts(storage, found._study_id).values())
    directions = [d.name.lower() for d in found.directions]
    if directions != ["maximize"]:
        why = (f"its direction is {' and '.join(directions)}, and sweep maximises validation accuracy; Optuna cannot "
               "change a study's direction")
    elif held:
        why = f"it holds {held} trial{'s' if held != 1 else ''} of another tool's"
    else:
        why = "it has no sweep study definition to check runs against: no search space, data or seed"
    delete = (f", or delete it if it is yours: optuna delete-study --study-name {shlex.quote(name)} --storage "
              f"{shlex.quote(storage_url(storage))}" if not held else "")
    return f"study '{name}' was not made by `sweep run` ({why}); sweep never trains into it: pick another --name{delete}"


def _differs(key: str, stored, wanted) -> str:
    """What a stored study has that this run does not, both said."""
    if key == "definition":
        return "a different study definition (the study file changed)"
    if key == "data_hash":
        return f"different data (content hash {stored}; this data's is {wanted})"
    return f"{key} {stored} (this run asks for {wanted})"


class InterruptOnce:
    """`with InterruptOnce():` around a run: the first Ctrl-C or SIGTERM stops it (KeyboardInterrupt);
    later ones are ignored, so they cannot cut short the clean-up that records what was done.
    `timeout` sends two SIGTERMs at once (to the run, then to its process group): on a GPU machine
    the second one left trials RUNNING. On leaving, the previous handlers come back; once
    interrupted, both signals stay ignored instead until the process ends (Python drops its own
    handlers while it shuts down, and a late SIGTERM would then kill it).

    `with interrupt.held():` makes a step whole: a signal landing inside it is raised when the step
    ends. Asking for a trial is one: Optuna creates the RUNNING trial, then the coordinator marks it
    as its own, and a Ctrl-C between the two left a trial RUNNING that no clean-up knew was its."""

    def __enter__(self):
        self.fired = False
        self.holding = 0
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __call__(self, signum, frame):
        if not self.fired:
            self.fired = True
            if not self.holding:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if self.fired and not self.holding:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_IGN if self.fired else handler)


# ---------------------------------------------------------------- the coordinator


def probe_config(spec: StudySpec, dists: dict) -> dict:
    """A study's typical trial, for --engine auto to measure: each searched number at the middle
    of its range (geometric, on a log scale), the middle of numeric choices, the first of others."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    params = {}
    for name, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices)
            params[name] = sorted(d.choices)[len(d.choices) // 2] if numeric else d.choices[0]
        else:
            mid = (d.low * d.high) ** 0.5 if d.log else (d.low + d.high) / 2
            if isinstance(d, IntDistribution):
                mid = d.low + round((mid - d.low) / d.step) * d.step
            elif d.step is not None:
                mid = d.low + round((mid - d.low) / d.step) * d.step
            params[name] = mid
    try:
        return spec.config_for(params, 0).to_dict()
    except ValueError:  # a combination no trial could train with (the sampler never asks it): the fixed part alone
        return spec.config_for({}, 0).to_dict()


def run_sweep(spec: StudySpec, data: Dataset, storage, *, trials: int, name: str | None = None,
              add: bool = False, device: str = "auto", timeout_s: float | None = None,
              seed: int | None = None, progress: bool = True, workers: int | None = None,
              gpus: list[int] | None = None, per_gpu: int | None = None,
              data_args: dict | None = None, artifact_dir: str | None = None, keep_top: int = 3,
              compile: str = "off", engine: str = "plain", announce=None) -> RunSummary:
    """Run trials until the study holds its budget of finished ones (`trials`, or `trials` more with `add`).

    `announce(line)` is told when this changes a budget the study already had."""
    name = name or spec.name
    seed = spec.seed if seed is None else seed
    n_workers, slots, threads, engine_kind, concurrent = plan_workers(device, workers, gpus, per_gpu, compile, engine)
    study = open_study(spec, data, storage, name, seed)
    recover_abandoned(study)
    dists = distributions(spec)

    with budget_lock(storage, name):
        already = count_finished(study)
        target = already + trials if add else trials
        size = grid_size(spec)
        stopped_by = "budget"
        if size is not None and target > size:
            target, stopped_by = max(size, already), "grid"
        before = count(study.user_attrs.get("target_trials"))  # None: none yet, or another client rewrote it
        study.set_user_attr("target_trials", target)
    if announce is not None and before is not None and before != target:
        held = f"; it holds {already} finished already, so nothing is left to run" if already >= target else ""
        announce(f"study '{name}': budget {'lowered' if target < before else 'raised'} from {before} to "
                 f"{target} finished trials{held}")

    if data_args is None:  # the workers load the same data the coordinator did (from the cache)
        d = spec.data
        data_args = {"source": data.source, "split": data.split, "n_images": d.n_images,
                     "val_fraction": d.val_fraction, "seed": d.seed, "paper_n_train": d.paper_n_train}
    weights = KeptWeights(study, artifact_dir, keep_top) if artifact_dir is not None and keep_top > 0 else None
    coordinator = Coordinator(study, spec, dists, seed, target, timeout_s, progress, compile, weights)
    coordinator.stopped_by = stopped_by
    if already >= target or timeout_s == 0:
        # Nothing to train here (the budget is met, or the run only sets the study up): no worker
        # processes to start, which costs seconds per process (each imports torch and loads the data).
        if already < target:
            coordinator.stopped_by = "timeout"
        if coordinator.bar:
            coordinator.bar.close()
        return summary(coordinator, name)
    reserve = SpaceReserve(storage)  # room to fail the running trials should the disk fill
    with InterruptOnce() as interrupt:
        pool = None
        clean = False
        try:
            auto = {"probe": probe_config(spec, dists), "fusable": not any(k in spec.search for k in FUSE_KEYS)}
            pool = Pool(n_workers, slots, data_args, threads, compile, engine_kind, concurrent, auto)
            coordinator.loop(pool, data.content_hash, interrupt)
            check_same_file(storage)  # deleted during the last trial: its result went with the file
            clean = True
        except KeyboardInterrupt:
            if pool is not None:
                pool.close(graceful=False)  # stop the training now; the trials are failed below
            coordinator.fail_all_running("interrupted (Ctrl-C or SIGTERM)")
            raise Interrupted() from None
        except BaseException as e:
            if pool is not None:
                pool.close(graceful=False)
            try:
                check_same_file(storage)
            except SweepError as gone:  # whatever failed, a vanished file is what to say
                coordinator.fail_all_running("the storage file was deleted or replaced")
                raise gone from None
            if study_deleted(storage, study._study_id):  # `optuna delete-study` by another client
                raise SweepError(_deleted_line(coordinator, name)) from None
            full = disk_full(e)
            if full is None:
                coordinator.fail_all_running("the coordinator stopped on an error")
                raise
            reserve.release()
            raise SweepError(_disk_full_line(coordinator, storage, full)) from None
        finally:
            reserve.release()
            if pool is not None and clean:
                pool.close()
            if coordinator.bar:
                coordinator.bar.close()
    return summary(coordinator, name)


def study_deleted(storage, study_id: int) -> bool:
    """Whether the study is gone from the storage (deleted by another client while this process
    used it); False where the storage cannot say (then the error itself is what to report)."""
    try:
        storage.get_study_name_from_id(study_id)
    except KeyError:
        return True
    except Exception:  # noqa: BLE001 - the storage itself failed: not a deletion
        return False
    return False


def _deleted_line(coordinator: Coordinator, name: str) -> str:
    done = coordinator.told
    return (f"study '{name}' was deleted from the storage by another client (optuna delete-study?) while this run "
            f"trained it: its trials went with it{f', the {done} this run finished among them' if done else ''}; "
            "the run stopped its workers and wrote nothing more (run it again to start the study anew)")


def _disk_full_line(coordinator: Coordinator, storage, reason: str) -> str:
    """A write failed for want of space: fail the run's RUNNING trials (in the room the run's
    SpaceReserve just gave back), and say so in one line."""
    coordinator.fail_all_running(f"the disk is full ({reason})")
    left = 0
    with contextlib.suppress(Exception):
        left = sum(t.user_attrs.get("run_id") == coordinator.run_id
                   for t in coordinator.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    where = ""
    path = file_identity(storage)
    if path is not None:
        where = f" holding {path[0]}"
    after = ("its trials in training were marked FAIL, those not yet trained wait for the next run" if not left else
             f"{left} trial(s) stay RUNNING until the next run fails and re-queues them")
    return (f"the disk{where} is full ({reason}): the sweep stopped, {after}; free some space and run the same "
            "command to resume")


def summary(coordinator: Coordinator, name: str) -> RunSummary:
    trials = coordinator.study.get_trials(deepcopy=False)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    best_value, best_number = coordinator._best()
    return RunSummary(name, coordinator.target, count_finished(coordinator.study), coordinator.ran,
                      by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED], by_state[TrialState.FAIL],
                      best_value, best_number, coordinator.stopped_by)
