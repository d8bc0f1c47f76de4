"""Every training hyperparameter, its default, unit and why, in one place.

A study file may fix or search any of these names; nothing else is a hyperparameter.
The defaults are the paper's run (SGD lr 0.05, no momentum, weight decay 1e-5, batch 128,
200 epochs, constant lr, no augmentation) at full width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "plateau")
# What trials must share to train fused as one network (model.fused_train): batch size (members
# step in lockstep), width (one shape), optimizer (one update rule) and precision.
FUSE_KEYS = ("batch_size", "width", "optimizer", "precision")
# Ceilings on values no one can mean: a run past them is a typo that would never end or never fit.
MAX_EPOCHS = 10_000  # 50x the paper's 200 epochs
MAX_BATCH_SIZE = 65_536  # twice FER2013's training split
MAX_WIDTH = 4.0  # 4x the paper's network: about 680 M parameters, 11 GB of fp32 weights and state


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # passes over the training split; the paper's run
    batch_size: int = 128  # images per step; the paper's run
    lr: float = 0.05  # learning rate, constant over the run (the paper uses no schedule)
    optimizer: str = "sgd"  # one of OPTIMIZERS
    momentum: float = 0.0  # sgd and rmsprop only; the paper uses none
    nesterov: bool = False  # sgd only; needs momentum > 0
    weight_decay: float = 1e-5  # L2 penalty (decoupled for adamw); the paper's value
    augment: bool = False  # random 4-px-padded crop + horizontal flip; the paper uses none
    label_smoothing: float = 0.0  # cross-entropy target smoothing in [0, 1); the paper uses none
    lr_schedule: str = "constant"  # constant (the paper) | cosine (to 0 over `epochs`) | plateau (halve after 3 flat val epochs)
    width: float = 1.0  # network width multiplier; 1.0 is the paper's 42.6 M-parameter network
    seed: int = 0  # seeds weights, shuffling, dropout, RReLU slopes and augmentation
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it fast, else fp32

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, not {value}")
        checks = [
            (1 <= self.epochs <= MAX_EPOCHS, f"epochs must be between 1 and {MAX_EPOCHS:,}"),
            (1 <= self.batch_size <= MAX_BATCH_SIZE, f"batch_size must be between 1 and {MAX_BATCH_SIZE:,}"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.momentum >= 0, "momentum must be >= 0"),
            (not self.nesterov or self.momentum > 0, "nesterov needs momentum > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 < self.width <= MAX_WIDTH, f"width must be > 0 and at most {MAX_WIDTH:g}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return asdict(self)


HYPERPARAMETERS = {f.name: f.type for f in fields(TrainConfig)}
DEFAULTS = TrainConfig()

# Engine option, not a hyperparameter: off | on (torch.compile; one compile per process, reused by
# every later run of the same shapes) | cudagraphs (torch.compile's reduce-overhead mode, CUDA only:
# replays each step as one CUDA graph, which pays where small batches leave the GPU launch-bound).
COMPILE_MODES = ("off", "on", "cudagraphs")
