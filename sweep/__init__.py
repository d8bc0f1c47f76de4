"""Sweep orchestration: study files, Optuna storages, the run loop. The only package that imports Optuna."""

from .errors import SweepError
from .runner import RunSummary, count_finished, recover_abandoned, run_sweep, trial_seed
from .storage import DEFAULT_STORAGE, mask, open_storage
from .stored import best_trial_lines, pick_study, study_rows
from .study_file import Param, StudySpec, find_study_file, load_study_file, parse_study, shipped_studies

__all__ = [
    "SweepError", "RunSummary", "count_finished", "recover_abandoned", "run_sweep", "trial_seed",
    "DEFAULT_STORAGE", "mask", "open_storage", "best_trial_lines", "pick_study", "study_rows",
    "Param", "StudySpec", "find_study_file", "load_study_file", "parse_study", "shipped_studies",
]
