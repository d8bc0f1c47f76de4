"""Sweep orchestration: study files, Optuna storages, the run loop. The only package that imports Optuna.

The public names below load on first use, so that `sweep --help` and the entry point's signal
handling come before any heavy import.
"""

import warnings

# Heartbeats, fail_stale_trials and metric names are marked experimental in Optuna 5; we use them on
# purpose, and a warning on every command would bury the one-line messages users need to read.
warnings.filterwarnings("ignore", message=r".* is (an )?experimental")

_PUBLIC = {
    "errors": ("SweepError",),
    "runner": ("RunSummary", "count_finished", "recover_abandoned", "run_sweep", "trial_seed"),
    "storage": ("DEFAULT_STORAGE", "mask", "open_storage"),
    "stored": ("best_trial_lines", "pick_study", "study_rows"),
    "study_file": ("Param", "StudySpec", "find_study_file", "load_study_file", "parse_study", "shipped_studies"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'sweep' has no attribute '{name}'")


__all__ = list(_WHERE)
