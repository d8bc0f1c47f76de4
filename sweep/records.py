"""What a finished trial stores beside its value: how it trained, on what, with which code.

Attributes stay small and scalar (or short JSON): optuna-dashboard re-reads every trial's
attributes every few seconds.
"""

from __future__ import annotations

import json

from .provenance import git_commit, versions_line


def trial_record(result: dict, study_attrs: dict, *, pruned: bool, compile: str, run_id: str) -> dict:
    """The user attributes of a trial from its worker's result (a TrainResult as a dict)."""
    attrs = {
        "val_acc": result["val_acc"],
        "best_val_acc": result["best_val_acc"],
        "train_s": round(result["train_s"], 3),  # in company (fused, multi): its share of the worker's time
        "images_per_s": round(result["images_per_s"], 1),
        "epochs_run": result["epochs_run"],
        "stop_reason": "pruned" if pruned else result["stop_reason"],
        "n_params": result["n_params"],
        "device": result["device"],
        "device_name": result["device_name"],
        "precision": result["precision"],
        "compile": compile,
        "engine": result.get("engine", "plain"),  # how its worker trained it: plain | fused | multi | graph
        "concurrent": result.get("concurrent", 1),  # mean trials its worker trained at once with it (1: alone)
        "data_name": study_attrs.get("data_name"),
        "data_hash": study_attrs.get("data_hash"),
        "versions": versions_line(),
        "git_commit": git_commit(),
        "val_confusion": json.dumps(result["val_confusion"]),
        "call_s": round(result["call_s"], 3),
    }
    if result.get("engine") == "graph":  # whether its steps replayed a CUDA graph, or why not
        attrs["cuda_graph"] = bool(result.get("cuda_graph"))
        if result.get("graph_fallback"):
            attrs["graph_fallback"] = str(result["graph_fallback"])[:300]
    if "fused_group" in result:
        attrs["fused_group"] = f"{run_id}.{result['fused_group']}"
    if result["test_acc"] is not None:
        attrs["test_acc"] = result["test_acc"]
        attrs["test_confusion"] = json.dumps(result["test_confusion"])
    return attrs


def store_attrs(trial, attrs: dict) -> None:
    """Set a running trial's user attributes: in one transaction where the storage can (sweep's
    own database storage), one by one otherwise (through a storage proxy)."""
    backend = getattr(trial.storage, "_backend", trial.storage)
    if hasattr(backend, "set_trial_user_attrs"):
        backend.set_trial_user_attrs(trial._trial_id, attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)  # as Trial.set_user_attr keeps it
    else:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
