"""Reading stored studies back: the list of studies, picking one, the best trial."""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

from .errors import SweepError


def study_rows(storage) -> list[dict]:
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        rows.append({
            "study": summary.study_name,
            "data": summary.user_attrs.get("data_name", "?"),
            "complete": count[TrialState.COMPLETE],
            "pruned": count[TrialState.PRUNED],
            "failed": count[TrialState.FAIL],
            "running": count[TrialState.RUNNING],
            "budget": summary.user_attrs.get("target_trials"),  # finished trials the study should hold
            "best_value": max((t.value for t in complete), default=None),
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
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SweepError(f"study '{study.study_name}' has no complete trial yet")
    t = study.best_trial
    a = t.user_attrs
    lines = [f"study '{study.study_name}' on {study.user_attrs.get('data_name', '?')}: best trial {t.number}",
             f"  val accuracy   {t.value:.4f}  (final epoch)"]
    if "test_acc" in a:
        lines.append(f"  test accuracy  {a['test_acc']:.4f}")
    for k, v in t.params.items():
        lines.append(f"  {k:<14} {v:.4g}" if isinstance(v, float) else f"  {k:<14} {v}")
    fixed = json.loads(study.user_attrs.get("definition", "{}")).get("fixed", {})
    if fixed:
        lines.append("  fixed          " + ", ".join(f"{k}={v}" for k, v in sorted(fixed.items())))
    for k in ("epochs_run", "train_s", "images_per_s", "device_name", "precision", "seed", "git_commit"):
        if k in a:
            lines.append(f"  {k:<14} {a[k]}")
    return lines


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
