"""`sweep confirm`: re-train the top trials with new seeds, so "best" means more than one lucky seed.

The results go in the study's attributes (`confirm:<trial number>`: seeds, val and test accuracy
of each, mean and standard deviation); `sweep export` shows mean +- std where they exist. Selection
stays on val: test accuracies are recorded, never used to choose.
"""

from __future__ import annotations

import json
import statistics

import optuna
from optuna.trial import TrialState

from model import train

from .errors import SweepError
from .runner import trial_seed

CONFIRM_PREFIX = "confirm:"
SEED_OFFSET = 7919  # confirmation seeds come from another stream than the trials' own


def confirmation_seeds(study_seed: int, number: int, n: int) -> list[int]:
    return [trial_seed(study_seed + SEED_OFFSET * (i + 1), number) for i in range(n)]


def confirm(study: optuna.Study, spec, dataset, *, top: int, seeds: int, device: str = "auto", progress=None) -> list[dict]:
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    if not ranked:
        raise SweepError(f"study '{study.study_name}' has no complete trial to confirm")
    study_seed = int(study.user_attrs.get("seed", spec.seed))
    out = []
    for t in ranked[:top]:
        val, test, used = [], [], confirmation_seeds(study_seed, t.number, seeds)
        for seed in used:
            r = train(dataset, spec.config_for(t.params, seed), device=device)
            val.append(r.val_acc)
            if r.test_acc is not None:
                test.append(r.test_acc)
            if progress:
                progress(f"trial {t.number} seed {seed}: val {r.val_acc:.2%}"
                         + (f", test {r.test_acc:.2%}" if r.test_acc is not None else ""))
        record = {
            "trial": t.number, "seeds": used, "val": val, "test": test,
            "val_mean": statistics.mean(val), "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
            "test_mean": statistics.mean(test) if test else None,
            "test_std": (statistics.stdev(test) if len(test) > 1 else 0.0) if test else None,
        }
        study.set_user_attr(f"{CONFIRM_PREFIX}{t.number}", json.dumps(record))
        out.append(record)
    return out


def confirmations(study_user_attrs: dict) -> dict[int, dict]:
    return {int(k[len(CONFIRM_PREFIX):]): json.loads(v) for k, v in study_user_attrs.items()
            if k.startswith(CONFIRM_PREFIX)}
