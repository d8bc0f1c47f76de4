"""`train(data, config) -> TrainResult`: one training run, a plain function (no Optuna here).

The data set sits on the device as uint8 for the whole run; each step slices a batch by a
randperm index, scales it to [0, 1] (and augments it) there. Loss and accuracy accumulate on the
device and are read once per epoch, so the host never waits inside an epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from data import Dataset, N_CLASSES, augment, to_float

from .config import COMPILE_MODES, TrainConfig
from .device import device_name, resolve_device, use_bf16
from .net import FERNet, count_params

EVAL_BATCH = 512  # images per evaluation step: large for speed, small enough for CPU memory

OnEpoch = Callable[[dict], bool]  # gets the epoch's record; returns True to stop training


@dataclass
class TrainResult:
    history: list[dict]  # one record per epoch: epoch, train_loss, train_acc, val_acc, epoch_s, images_per_s
    val_acc: float  # of the final model (the one the run ends with)
    best_val_acc: float  # best over epochs, for information only: choosing on it would peek at val
    test_acc: float | None  # of the final model; None when the data has no test split
    epochs_run: int
    stop_reason: str  # completed | stopped (by on_epoch) | diverged (non-finite loss)
    train_s: float  # seconds spent in training steps, evaluation excluded
    images_per_s: float  # training images per second over the run
    n_params: int
    device: str  # e.g. "cuda", "cpu"
    device_name: str
    precision: str  # what ran: bf16 or fp32
    val_confusion: list[list[int]]  # [true][predicted] counts on val, final model
    test_confusion: list[list[int]] | None  # the same on test; None without a test split
    model: nn.Module | None = field(default=None, repr=False)


def _make_optimizer(cfg: TrainConfig, params, fused: bool = False) -> torch.optim.Optimizer:
    # fused kernels: one launch per step for all parameters on CUDA (no effect on CPU results)
    extra = {"fused": True} if fused else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_lr_schedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """The lr scheduler of `cfg.lr_schedule`, stepped once per epoch; None for a constant lr."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    return None


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast) -> tuple[float, torch.Tensor]:
    """Accuracy and the (true, predicted) confusion counts of `model` on uint8 images `x`."""
    model.eval()
    confusion = torch.zeros(N_CLASSES * N_CLASSES, dtype=torch.long, device=x.device)
    for i in range(0, len(x), EVAL_BATCH):
        with autocast():
            logits = model(to_float(x[i:i + EVAL_BATCH]))
        pred = logits.float().argmax(1)
        confusion += torch.bincount(y[i:i + EVAL_BATCH] * N_CLASSES + pred, minlength=N_CLASSES * N_CLASSES)
    confusion = confusion.view(N_CLASSES, N_CLASSES).cpu()
    return float(confusion.trace()) / max(1, len(x)), confusion


def check_compile(compile: str, dev: torch.device) -> None:
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not '{compile}'")
    if compile == "cudagraphs" and dev.type != "cuda":
        raise ValueError(f"compile 'cudagraphs' needs a CUDA device; this run trains on {dev.type}")


def use_channels_last(dev: torch.device, bf16: bool) -> bool:
    """channels_last pays with bf16 on CUDA; on CPU it measured slower for the paper's network
    (docs/benchmarks.md), so it stays off there."""
    return dev.type == "cuda" and bf16


def train(data: Dataset, config: TrainConfig | None = None, *, device: str = "auto",
          on_epoch: OnEpoch | None = None, keep_model: bool = False, channels_last: bool | None = None,
          compile: str = "off", **hyp) -> TrainResult:
    """Train the paper's network on `data` with `config` (or keyword hyperparameters).

    Engine options (no effect on the result beyond float rounding): `channels_last` (None: where
    it measured faster) and `compile` (one of COMPILE_MODES).
    """
    cfg = TrainConfig(**{**(config.to_dict() if config is not None else {}), **hyp})
    dev = resolve_device(device)
    check_compile(compile, dev)
    bf16 = use_bf16(dev, cfg.precision)
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(cfg.seed)
    x_train = torch.from_numpy(data.x_train).to(dev)
    y_train = torch.from_numpy(data.y_train).to(dev)
    x_val = torch.from_numpy(data.x_val).to(dev)
    y_val = torch.from_numpy(data.y_val).to(dev)
    has_test = len(data.y_test) > 0
    x_test = torch.from_numpy(data.x_test).to(dev)
    y_test = torch.from_numpy(data.y_test).to(dev)

    model = FERNet(cfg.width).to(dev)
    memory_format = torch.channels_last if (channels_last if channels_last is not None
                                            else use_channels_last(dev, bf16)) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # Dynamo caches the compiled graph per process, keyed by module class and shapes, not by this
    # model object: the next trial in the same worker reuses it (tests/test_speed.py counts it).
    step_model = model if compile == "off" else \
        torch.compile(model, mode="reduce-overhead" if compile == "cudagraphs" else None)
    optimizer = _make_optimizer(cfg, model.parameters(), fused=dev.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scheduler = make_lr_schedule(cfg, optimizer)
    n = len(x_train)
    # Drop the ragged last batch: a batch of one breaks BatchNorm, and a fresh permutation each
    # epoch means every image is still seen.
    n_steps = max(1, n // cfg.batch_size)

    history: list[dict] = []
    stop_reason = "completed"
    train_s = 0.0
    images_seen = 0
    confusion = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen, device=gen.device).to(dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        for step in range(n_steps):
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = to_float(x_train[idx])
            if cfg.augment:
                x = augment(x, gen)
            x = x.contiguous(memory_format=memory_format)
            y = y_train[idx]
            if compile == "cudagraphs":  # a new step: the graph may overwrite the last step's outputs
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                logits = step_model(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        step_s = time.perf_counter() - t0
        seen = n_steps * min(cfg.batch_size, n)
        train_s += step_s
        images_seen += seen

        train_loss = float(loss_sum) / seen
        val_acc, confusion = evaluate(model, x_val, y_val, autocast)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": float(correct) / seen,
            "val_acc": val_acc,
            "epoch_s": time.perf_counter() - t0,
            "images_per_s": seen / step_s if step_s > 0 else 0.0,
        }
        history.append(record)
        if scheduler is not None:  # per epoch; plateau watches val accuracy, the selection split
            scheduler.step(val_acc) if cfg.lr_schedule == "plateau" else scheduler.step()
        if not math.isfinite(train_loss):
            stop_reason = "diverged"
            break
        if on_epoch is not None and on_epoch(record):
            stop_reason = "stopped" if epoch < cfg.epochs else "completed"
            break

    test_acc, test_confusion = evaluate(model, x_test, y_test, autocast) if has_test else (None, None)
    return TrainResult(
        history=history,
        val_acc=history[-1]["val_acc"],
        best_val_acc=max(r["val_acc"] for r in history),
        test_acc=test_acc,
        epochs_run=len(history),
        stop_reason=stop_reason,
        train_s=train_s,
        images_per_s=images_seen / train_s if train_s > 0 else 0.0,
        n_params=count_params(model),
        device=dev.type,
        device_name=device_name(dev),
        precision="bf16" if bf16 else "fp32",
        val_confusion=confusion.tolist(),
        test_confusion=test_confusion.tolist() if test_confusion is not None else None,
        model=model if keep_model else None,
    )
