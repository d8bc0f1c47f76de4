"""Reading stored studies back: the list of studies, picking one, the best trial."""

from __future__ import annotations

import json
from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from . import attrs
from .errors import SweepError


def state_counts(storage, study_id: int) -> dict[TrialState, int]:
    """Trials of a study by state, counted in the database: loading thousands of trials with their
    attributes to count them took seconds."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:  # not an RDBStorage: count what it returns
        trials = storage.get_all_trials(study_id, deepcopy=False)
        return {s: sum(t.state == s for t in trials) for s in TrialState}
    from sqlalchemy import text

    with engine.connect() as con:
        rows = con.execute(text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"),
                           {"s": study_id}).all()
    by_name = {str(state).rsplit(".", 1)[-1]: n for state, n in rows}
    return {s: int(by_name.get(s.name, 0)) for s in TrialState}


def training_count(storage, study_id: int) -> int:
    """RUNNING trials that a worker holds; the others were asked ahead and wait for a slot."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return sum(1 for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                   if "worker" in t.user_attrs)
    from sqlalchemy import text

    with engine.connect() as con:
        return int(con.execute(text(
            "SELECT COUNT(*) FROM trials t WHERE t.study_id = :s AND t.state = 'RUNNING' AND EXISTS "
            "(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')"),
            {"s": study_id}).scalar())


def best_value(storage, study_id: int) -> float | None:
    try:
        return storage.get_best_trial(study_id).value  # one query
    except (ValueError, RuntimeError):  # no complete trial; several objectives (a study of another tool's)
        return None


def made_by_sweep(user_attrs: dict) -> bool:
    """Whether `sweep run` made the study: it stores the study's definition as it creates it."""
    return "definition" in user_attrs


@dataclass(frozen=True)
class Objective:
    """What a study's values are: sweep's validation accuracy (a fraction, maximised, shown in %),
    or in a study another tool made its own objective, shown as the plain number it is."""

    name: str  # as shown: "val accuracy", or the study's metric name ("value" without one)
    maximize: bool
    accuracy: bool  # sweep's own: shown as a percentage
    column: str = "val_acc"  # its key in tables and JSON: val_acc for sweep's, value for others

    def show(self, value) -> str:
        if value is None:
            return "-"
        return f"{value:.2%}" if self.accuracy else f"{value:.6g}"

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    def best_first(self, trials: list) -> list:
        """Complete trials, best first (ties: the lower trial number first)."""
        sign = -1 if self.maximize else 1
        return sorted(trials, key=lambda t: (sign * t.value, t.number))


def objective_of(name: str, directions, user_attrs: dict, metric_names) -> Objective:
    if len(directions) != 1:
        raise SweepError(f"study '{name}' has {len(directions)} objectives (another tool made it); sweep reads "
                         "studies of one: see it in optuna-dashboard")
    maximize = directions[0] == StudyDirection.MAXIMIZE
    if made_by_sweep(user_attrs) and maximize:
        return Objective("val accuracy", True, True)
    metric = metric_names[0] if metric_names and isinstance(metric_names[0], str) else "value"
    return Objective(metric, maximize, False, "value")


def objective(study: optuna.Study) -> Objective:
    return objective_of(study.study_name, study.directions, study.user_attrs, study.metric_names)


def study_rows(storage) -> list[dict]:
    """One row per study. Optuna's get_all_study_summaries loads every trial of every study (5 s
    at 5,000 trials): here the studies come without trials, counts and best value from queries."""
    rows = []
    for study in storage.get_all_studies():
        count = state_counts(storage, study._study_id)
        training = training_count(storage, study._study_id) if count[TrialState.RUNNING] else 0
        a = attrs.study_attrs(study.user_attrs)
        try:
            what = objective_of(study.study_name, study.directions, study.user_attrs,
                                study.system_attrs.get("study:metric_names"))
        except SweepError:  # several objectives: no one best value
            what = None
        rows.append({
            "study": study.study_name,
            "data": a.get("data_name"),
            "by_sweep": made_by_sweep(study.user_attrs),
            "complete": count[TrialState.COMPLETE],
            "pruned": count[TrialState.PRUNED],
            "failed": count[TrialState.FAIL],
            "running": count[TrialState.RUNNING],  # in the storage: training, or asked ahead for a slot
            "training": training,  # held by a worker
            "waiting": count[TrialState.RUNNING] - training + count[TrialState.WAITING],  # for a slot or a next run
            "budget": a.get("target_trials"),  # finished trials the study should hold
            "best_value": best_value(storage, study._study_id) if what is not None else None,
            "objective": what.column if what is not None else None,
            "direction": what.direction if what is not None else None,
            "shown": what,
        })
    return rows


def pick_study(storage, name: str | None) -> optuna.Study:
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) == 1:
            name = names[0]
        elif not names:
            raise SweepError("the storage holds no study")
        else:
            raise SweepError(f"the storage holds several studies; pick one with --study ({', '.join(sorted(names))})")
    if name not in names:
        raise SweepError(f"no study '{name}' in the storage (studies: {', '.join(sorted(names)) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


def require_sweep_study(study: optuna.Study, what: str) -> None:
    """`what` (a command) works only on a study `sweep run` made: it needs its definition and data."""
    if not made_by_sweep(study.user_attrs):
        raise SweepError(f"study '{study.study_name}' was not made by `sweep run` (another tool made it): {what} "
                         "works on sweep's studies only")


def _best(study: optuna.Study):
    what = objective(study)
    try:
        return study.best_trial, what  # one query, not every trial loaded
    except ValueError:
        raise SweepError(f"study '{study.study_name}' has no complete trial yet") from None


def best_trial_lines(study: optuna.Study) -> list[str]:
    t, what = _best(study)
    a = attrs.trial_attrs(t.user_attrs)
    s = attrs.study_attrs(study.user_attrs)
    if what.accuracy:
        head = [f"study '{study.study_name}' on {s.get('data_name', '?')}: best trial {t.number}",
                f"  val accuracy   {what.show(t.value)}  (final epoch)"]
    else:
        head = [f"study '{study.study_name}' (made by another tool, not by sweep run): best trial {t.number}",
                f"  {what.name:<14} {what.show(t.value)}  ({what.direction}d)"]
    lines = head
    if "test_acc" in a and what.accuracy:
        lines.append(f"  test accuracy  {a['test_acc']:.2%}")
    for k, v in t.params.items():
        lines.append(f"  {k:<14} {v:.4g}" if isinstance(v, float) else f"  {k:<14} {v}")
    fixed = attrs.definition(s).get("fixed", {})
    if isinstance(fixed, dict) and fixed:
        lines.append("  fixed          " + ", ".join(f"{k}={v}" for k, v in sorted(fixed.items())))
    for k in BEST_ATTRS:
        if k in a:
            lines.append(f"  {k:<14} {a[k]}")
    return lines


BEST_ATTRS = ("epochs_run", "train_s", "images_per_s", "device_name", "precision", "seed", "git_commit")


def best_record(study: optuna.Study) -> dict:
    """`sweep best --json`: the best trial as one object with fixed keys (null where not recorded);
    accuracies are fractions (0.7711), not percentages. In a study another tool made, val_acc is
    null and value is its own objective's."""
    t, what = _best(study)
    a = attrs.trial_attrs(t.user_attrs)
    s = attrs.study_attrs(study.user_attrs)
    fixed = attrs.definition(s).get("fixed", {})
    return {
        "study": study.study_name,
        "data": s.get("data_name"),
        "trial": t.number,
        "val_acc": t.value if what.accuracy else None,
        "test_acc": a.get("test_acc") if what.accuracy else None,
        "params": dict(t.params),
        "fixed": fixed if isinstance(fixed, dict) else {},
        **{k: a.get(k) for k in BEST_ATTRS},
        "objective": what.column,
        "direction": what.direction,
        "value": t.value,
    }


def spec_and_data(study: optuna.Study, data: str | None = None, command: str = "this command"):
    """The study file and data set a stored study ran on (data from its recorded path, or `data`),
    checked against the content hash the study recorded."""
    from pathlib import Path

    from data import load_dataset

    from .study_file import parse_study

    require_sweep_study(study, command)
    stored = attrs.study_attrs(study.user_attrs)
    if "definition" not in stored or "data_hash" not in stored:
        raise SweepError(f"study '{study.study_name}': its stored definition or data hash was rewritten by another "
                         "client and cannot be read; nothing can be checked against it")
    spec = parse_study(json.loads(stored["definition"]), Path(stored.get("study_file", study.study_name)))
    source = data or stored.get("data_source")
    if source is None:
        raise SweepError(f"study '{study.study_name}' records no readable data path; pass --data")
    d = spec.data
    dataset = load_dataset(source, d.split, n_images=d.n_images, val_fraction=d.val_fraction, seed=d.seed,
                           paper_n_train=d.paper_n_train)
    if dataset.content_hash != stored["data_hash"]:
        raise SweepError(f"{source}: not the data study '{study.study_name}' runs on (content hash "
                         f"{dataset.content_hash}, study has {stored['data_hash']}); pass --data")
    return spec, dataset
