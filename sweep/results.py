"""A stored study as plain rows: what `export` and `report` both read."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from . import attrs
from .stored import Objective, made_by_sweep, objective
from .trial_rows import read_trials


@dataclass
class StudyResults:
    name: str
    data_name: str
    params: list[str]  # searched parameters, in the study file's order
    log_params: set[str]  # searched on a log scale (shown in scientific notation)
    fixed: dict
    trials: list[FrozenTrial]  # every trial, by number
    complete: list[FrozenTrial]  # COMPLETE, best first (ties: lower trial number first)
    counts: dict[str, int]  # complete / pruned / failed / running / waiting
    compute_s: float  # training seconds over all trials that recorded them
    user_attrs: dict  # those of an unexpected kind (another client's) left out
    objective: Objective  # sweep's val accuracy, or the objective of a study another tool made
    by_sweep: bool = True  # made by `sweep run` (else: no data, accuracies or training seconds to show)


# The trial attributes that tables and reports show; the others (provenance, timings) stay unread.
SHOWN_ATTRS = frozenset({"test_acc", "train_s", "device_name", "val_confusion", "test_confusion"})


def load_results(study: optuna.Study, *, intermediate: bool = True) -> StudyResults:
    """Trials come with the user attributes in SHOWN_ATTRS only, and without `intermediate` without
    their per-epoch values (a table needs none)."""
    what = objective(study)
    trials = read_trials(study._storage, study._study_id, intermediate=intermediate, user_keys=SHOWN_ATTRS)
    for t in trials:  # what another client rewrote into something unexpected counts as not recorded
        t.user_attrs = attrs.trial_attrs(t.user_attrs)
    study_attrs = attrs.study_attrs(study.user_attrs)
    definition = attrs.definition(study_attrs)
    search, fixed = definition.get("search", {}), definition.get("fixed", {})
    order = list(search) if isinstance(search, dict) else []
    seen = {k for t in trials for k in t.params}
    params = [p for p in order if p in seen] + sorted(seen - set(order))
    log_params = {k for t in trials for k, d in t.distributions.items()
                  if isinstance(d, FloatDistribution) and d.log}
    complete = what.best_first([t for t in trials if t.state == TrialState.COMPLETE])
    counts = {name: sum(t.state == s for t in trials) for name, s in (
        ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("failed", TrialState.FAIL),
        ("running", TrialState.RUNNING), ("waiting", TrialState.WAITING))}
    compute_s = sum(t.user_attrs.get("train_s", 0.0) for t in trials)
    return StudyResults(study.study_name, study_attrs.get("data_name", "?"), params, log_params,
                        fixed if isinstance(fixed, dict) else {}, trials, complete, counts, compute_s, study_attrs,
                        what, made_by_sweep(study.user_attrs))


def param_value(t: FrozenTrial, name: str, fixed: dict):
    return t.params.get(name, fixed.get(name))
