"""Reading stored studies back: the list of studies, picking one, the best trial."""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

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
    except ValueError:  # no complete trial
        return None


def study_rows(storage) -> list[dict]:
    """One row per study. Optuna's get_all_study_summaries loads every trial of every study (5 s
    at 5,000 trials): here the studies come without trials, counts and best value from queries."""
    rows = []
    for study in storage.get_all_studies():
        count = state_counts(storage, study._study_id)
        training = training_count(storage, study._study_id) if count[TrialState.RUNNING] else 0
        rows.append({
            "study": study.study_name,
            "data": study.user_attrs.get("data_name", "?"),
            "complete": count[TrialState.COMPLETE],
            "pruned": count[TrialState.PRUNED],
            "failed": count[TrialState.FAIL],
            "running": count[TrialState.RUNNING],  # in the storage: training, or asked ahead for a slot
            "training": training,  # held by a worker
            "waiting": count[TrialState.RUNNING] - training + count[TrialState.WAITING],  # for a slot or a next run
            "budget": study.user_attrs.get("target_trials"),  # finished trials the study should hold
            "best_value": best_value(storage, study._study_id),
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


def best_trial_lines(study: optuna.Study) -> list[str]:
    try:
        t = study.best_trial  # one query, not every trial loaded
    except ValueError:
        raise SweepError(f"study '{study.study_name}' has no complete trial yet") from None
    a = t.user_attrs
    lines = [f"study '{study.study_name}' on {study.user_attrs.get('data_name', '?')}: best trial {t.number}",
             f"  val accuracy   {t.value:.2%}  (final epoch)"]
    if "test_acc" in a:
        lines.append(f"  test accuracy  {a['test_acc']:.2%}")
    for k, v in t.params.items():
        lines.append(f"  {k:<14} {v:.4g}" if isinstance(v, float) else f"  {k:<14} {v}")
    fixed = json.loads(study.user_attrs.get("definition", "{}")).get("fixed", {})
    if fixed:
        lines.append("  fixed          " + ", ".join(f"{k}={v}" for k, v in sorted(fixed.items())))
    for k in BEST_ATTRS:
        if k in a:
            lines.append(f"  {k:<14} {a[k]}")
    return lines


BEST_ATTRS = ("epochs_run", "train_s", "images_per_s", "device_name", "precision", "seed", "git_commit")


def best_record(study: optuna.Study) -> dict:
    """`sweep best --json`: the best trial as one object with fixed keys (null where not recorded);
    accuracies are fractions (0.7711), not percentages."""
    try:
        t = study.best_trial
    except ValueError:
        raise SweepError(f"study '{study.study_name}' has no complete trial yet") from None
    a = t.user_attrs
    return {
        "study": study.study_name,
        "data": study.user_attrs.get("data_name"),
        "trial": t.number,
        "val_acc": t.value,
        "test_acc": a.get("test_acc"),
        "params": dict(t.params),
        "fixed": json.loads(study.user_attrs.get("definition", "{}")).get("fixed", {}),
        **{k: a.get(k) for k in BEST_ATTRS},
    }


def spec_and_data(study: optuna.Study, data: str | None = None):
    """The study file and data set a stored study ran on (data from its recorded path, or `data`),
    checked against the content hash the study recorded."""
    from pathlib import Path

    from data import load_dataset

    from .study_file import parse_study

    attrs = study.user_attrs
    if "definition" not in attrs:
        raise SweepError(f"study '{study.study_name}' was not made by `sweep run`")
    spec = parse_study(json.loads(attrs["definition"]), Path(attrs.get("study_file", study.study_name)))
    source = data or attrs["data_source"]
    d = spec.data
    dataset = load_dataset(source, d.split, n_images=d.n_images, val_fraction=d.val_fraction, seed=d.seed,
                           paper_n_train=d.paper_n_train)
    if dataset.content_hash != attrs.get("data_hash"):
        raise SweepError(f"{source}: not the data study '{study.study_name}' runs on (content hash "
                         f"{dataset.content_hash}, study has {attrs.get('data_hash')}); pass --data")
    return spec, dataset
