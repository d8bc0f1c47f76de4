"""The paper's network and a plain training function. Never imports Optuna."""

from .config import DEFAULTS, HYPERPARAMETERS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, TrainConfig
from .device import cpu_has_fast_bf16, device_name, resolve_device, use_bf16
from .fused_net import FusedFERNet
from .fused_optim import FusedOptimizer
from .fused_train import FUSE_KEYS, FusedTrainer, fuse_key, outcome, train_fused
from .net import FERNet, count_params, forward_flops
from .train import COMPILE_MODES, TrainResult, accuracy_by_class, check_compile, evaluate, train

__all__ = [
    "DEFAULTS", "HYPERPARAMETERS", "LR_SCHEDULES", "OPTIMIZERS", "PRECISIONS", "TrainConfig",
    "cpu_has_fast_bf16", "device_name", "resolve_device", "use_bf16",
    "FERNet", "count_params", "forward_flops",
    "FusedFERNet", "FusedOptimizer", "FUSE_KEYS", "FusedTrainer", "fuse_key", "outcome", "train_fused",
    "COMPILE_MODES", "TrainResult", "accuracy_by_class", "check_compile", "evaluate", "train",
]
