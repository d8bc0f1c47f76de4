"""Sweep orchestration: study files, Optuna storages, the run loop. The only package that imports Optuna."""

import warnings

from optuna.exceptions import ExperimentalWarning

# Heartbeats and fail_stale_trials are marked experimental in Optuna 5; we use them on purpose and
# a warning on every command would bury the one-line messages users need to read.
warnings.filterwarnings("ignore", category=ExperimentalWarning)

from .errors import SweepError  # noqa: E402
from .runner import RunSummary, count_finished, recover_abandoned, run_sweep, trial_seed
from .storage import DEFAULT_STORAGE, mask, open_storage
from .stored import best_trial_lines, pick_study, study_rows
from .study_file import Param, StudySpec, find_study_file, load_study_file, parse_study, shipped_studies

__all__ = [
    "SweepError", "RunSummary", "count_finished", "recover_abandoned", "run_sweep", "trial_seed",
    "DEFAULT_STORAGE", "mask", "open_storage", "best_trial_lines", "pick_study", "study_rows",
    "Param", "StudySpec", "find_study_file", "load_study_file", "parse_study", "shipped_studies",
]
