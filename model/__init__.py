"""The paper's network, fused networks and plain training functions. Never imports Optuna.

Only `model.config` (the hyperparameters) is loaded with the package; everything else needs torch
and is imported on first use, so that commands that train nothing start without torch.
"""

from .config import COMPILE_MODES, DEFAULTS, FUSE_KEYS, HYPERPARAMETERS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, TrainConfig
from .metrics import accuracy_by_class

_LAZY = {
    "device": ("cpu_has_fast_bf16", "device_name", "resolve_device", "use_bf16"),
    "net": ("FERNet", "count_params", "forward_flops"),
    "fused_net": ("FusedFERNet",),
    "fused_optim": ("FusedOptimizer",),
    "fused_train": ("FusedTrainer", "fuse_key", "outcome", "train_fused"),
    "multi_train": ("MultiTrainer", "train_multi"),
    "auto_engine": ("choose_engine",),
    "trial_run": ("DeviceData", "TrialRun"),
    "step_optim": ("StepOptimizer",),
    "capture_check": ("CaptureCheck", "CaptureUnsafe"),
    "training": ("TrainResult", "check_compile", "evaluate", "make_lr_schedule", "train"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'model' has no attribute '{name}'")


__all__ = ["COMPILE_MODES", "DEFAULTS", "FUSE_KEYS", "HYPERPARAMETERS", "LR_SCHEDULES", "OPTIMIZERS", "PRECISIONS", "TrainConfig",
           "accuracy_by_class", *_WHERE]
