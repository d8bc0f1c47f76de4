"""What every part of the coordinator shares: trial states, limits, seeds and keys."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5  # trials failing in a row before the sweep gives up: something is broken
WORKER_START_S = 300  # a worker that is not ready by then (import + data load + --engine auto's measurement)
MAX_START_DEATHS = 3  # workers dying in a row before they are ready: something kills every one


def trial_seed(study_seed: int, number: int) -> int:
    """Each trial's training seed: distinct per trial, fixed by the study seed."""
    return (study_seed * 1_000_003 + number) % 2**31


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fuse_key_of(config: dict) -> tuple:
    """What a trial must share with a fused group to join it (model.FUSE_KEYS)."""
    from model import FUSE_KEYS

    return tuple(config[k] for k in FUSE_KEYS)
