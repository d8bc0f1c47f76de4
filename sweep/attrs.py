"""Attributes read back from a storage that other clients write too.

A study's storage is plain Optuna: the `optuna` CLI, scripts and optuna-dashboard can rewrite any
attribute `sweep` stored (NaN where a number was, a nested object where a number or a string was,
a megabyte of text). Every reader takes each attribute it knows through `trial_attrs` or
`study_attrs`: a value of the kind `sweep` writes, or missing (absent from the dict, None from
`.get`), so that nothing downstream meets a value it did not expect. Attributes `sweep` does not
know pass as they are. JSON output goes through `json_safe`: NaN and infinity become null.
"""

from __future__ import annotations

import json
import math

MAX_TEXT = 1_000  # characters: the longest text attribute sweep writes (a versions line) is ~100
MAX_DEFINITION = 1 << 20  # a study's definition: a study file holds at most 1 MiB


def number(value) -> float | int | None:
    """A finite number (not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def count(value) -> int | None:
    """A whole number of 0 or more (not a bool), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def text(value, limit: int = MAX_TEXT) -> str | None:
    return value if isinstance(value, str) and len(value) <= limit else None


def json_object(value, limit: int = MAX_DEFINITION) -> str | None:
    """JSON text of an object (a study definition, a confirmation record), or None."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    try:
        return value if isinstance(json.loads(value), dict) else None
    except ValueError:
        return None


def confusion(value) -> str | None:
    """JSON text of a square confusion matrix of counts, or None."""
    if not isinstance(value, str) or len(value) > MAX_TEXT * 10:
        return None
    try:
        rows = json.loads(value)
    except ValueError:
        return None
    ok = (isinstance(rows, list) and rows and all(isinstance(r, list) and len(r) == len(rows) for r in rows)
          and all(count(c) is not None for r in rows for c in r))
    return value if ok else None


_TEXTS = ("device_name", "device", "precision", "compile", "engine", "data_name", "data_hash", "versions",
          "git_commit", "stop_reason", "fail_reason", "fused_group", "weights_artifact", "run_id", "host")
TRIAL_KINDS = {
    **{k: number for k in ("val_acc", "best_val_acc", "test_acc", "train_s", "images_per_s", "concurrent", "call_s")},
    **{k: count for k in ("epochs_run", "n_params", "seed", "retries", "retry_of", "pid", "worker", "gpu_index")},
    **{k: text for k in _TEXTS},
    "val_confusion": confusion, "test_confusion": confusion,
}
STUDY_KINDS = {
    **{k: text for k in ("data_name", "data_source", "data_format", "data_hash", "split", "study_file", "artifact_dir",
                         "git_commit", "versions")},
    **{k: count for k in ("seed", "target_trials", "n_train", "n_val", "n_test")},
    "description": lambda v: text(v, 10_000),
    "definition": json_object,
}


def _kept(attrs: dict, kinds: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        if key in kinds:
            value = kinds[key](value)
            if value is None:
                continue
        out[key] = value
    return out


def trial_attrs(attrs: dict) -> dict:
    """A trial's user attributes, those of an unexpected kind left out."""
    return _kept(attrs, TRIAL_KINDS)


def study_attrs(attrs: dict) -> dict:
    """A study's user attributes, those of an unexpected kind left out."""
    return _kept(attrs, STUDY_KINDS)


def definition(attrs: dict) -> dict:
    """The study definition a study stored (parsed), or {} where there is none to read."""
    found = json_object(attrs.get("definition"))
    return json.loads(found) if found is not None else {}


def json_safe(value):
    """`value` for JSON output: NaN and infinity (which json.dumps writes as bare NaN, an invalid
    document) become null, in lists and objects too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """JSON text that is always valid JSON."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
