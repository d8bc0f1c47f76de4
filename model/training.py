"""`train(data, config) -> TrainResult`: one training run, a plain function (no Optuna here).

The data set sits on the device as uint8 for the whole run; each step slices a batch by a
randperm index, scales it to [0, 1] (and augments it) there. Loss and accuracy accumulate on the
device and are read once per epoch, so the host never waits inside an epoch. The steps
themselves are `TrialRun`'s (model/trial_run.py), the same code that trains several trials at
once in `MultiTrainer`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from data import Dataset

from .config import COMPILE_MODES, TrainConfig
from .device import resolve_device
from .trial_run import DeviceData, TrainResult, TrialRun, evaluate, make_lr_schedule, use_channels_last

__all__ = ["OnEpoch", "TrainResult", "check_compile", "evaluate", "make_lr_schedule", "train", "use_channels_last"]

OnEpoch = Callable[[dict], bool]  # gets the epoch's record; returns True to stop training


def check_compile(compile: str, dev: torch.device) -> None:
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not '{compile}'")
    if compile == "cudagraphs" and dev.type != "cuda":
        raise ValueError(f"compile 'cudagraphs' needs a CUDA device; this run trains on {dev.type}")


def train(data: Dataset, config: TrainConfig | None = None, *, device: str = "auto",
          on_epoch: OnEpoch | None = None, keep_model: bool = False, channels_last: bool | None = None,
          compile: str = "off", dtype: torch.dtype = torch.float32, **hyp) -> TrainResult:
    """Train the paper's network on `data` with `config` (or keyword hyperparameters).

    Engine options (no effect on the result beyond float rounding): `channels_last` (None: where
    it measured faster), `compile` (one of COMPILE_MODES) and `dtype` (float64 checks the algebra:
    tests).
    """
    cfg = TrainConfig(**{**(config.to_dict() if config is not None else {}), **hyp})
    dev = resolve_device(device)
    check_compile(compile, dev)
    run = TrialRun(DeviceData.of(data, dev), cfg, dev, channels_last=channels_last, compile=compile, dtype=dtype)
    stop_reason = "completed"
    for epoch in range(1, cfg.epochs + 1):
        run.begin_epoch()
        for step in range(run.n_steps):
            run.step()
        record = run.end_epoch()
        if not math.isfinite(record["train_loss"]):
            stop_reason = "diverged"
            break
        if on_epoch is not None and on_epoch(record):
            stop_reason = "stopped" if epoch < cfg.epochs else "completed"
            break
    return run.result(stop_reason, keep_model)
