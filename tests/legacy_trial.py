"""`TrialRun` as it was before its step became graph-safe: the reference the new step is checked
against (tests/test_graph_step.py). PyTorch's own optimizers with the lr as a host number, the
batch sliced by a Python step number, the autocast cast cache on. Changed only to take `dtype`
(float64 checks the algebra) as the new one does."""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from data import N_CLASSES, augment, to_float
from model.config import TrainConfig
from model.device import use_bf16
from model.net import FERNet
from model.trial_run import DeviceData, evaluate, make_lr_schedule, use_channels_last


def make_optimizer(cfg: TrainConfig, params, fused: bool = False) -> torch.optim.Optimizer:
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


class LegacyTrialRun:
    """A trial from its initial weights on: `begin_epoch`, `step` x `n_steps`, `end_epoch`, and
    so on; `result` when it ends. Seeds the global random stream with the trial's seed (initial
    weights, dropout, RReLU), as the trial alone does."""

    def __init__(self, data: DeviceData, cfg: TrainConfig, dev: torch.device, *,
                 channels_last: bool | None = None, compile: str = "off", dtype: torch.dtype = torch.float32):
        self.data, self.cfg, self.dev, self.compile, self.dtype = data, cfg, dev, compile, dtype
        self.bf16 = use_bf16(dev, cfg.precision)
        self.autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if self.bf16 \
            else contextlib.nullcontext
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(cfg.seed)
        self.memory_format = torch.channels_last if (channels_last if channels_last is not None
                                                     else use_channels_last(dev, self.bf16)) \
            else torch.contiguous_format
        self.model = FERNet(cfg.width).to(dev, dtype).to(memory_format=self.memory_format)
        # Dynamo caches the compiled graph per process, keyed by module class and shapes, not by
        # this model object: the next trial in the same worker reuses it (tests/test_speed.py).
        self.step_model = self.model if compile == "off" else \
            torch.compile(self.model, mode="reduce-overhead" if compile == "cudagraphs" else None)
        self.optimizer = make_optimizer(cfg, self.model.parameters(), fused=dev.type == "cuda")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.scheduler = make_lr_schedule(cfg, self.optimizer)
        self.n = len(data.x_train)
        # Drop the ragged last batch: a batch of one breaks BatchNorm, and a fresh permutation
        # each epoch means every image is still seen.
        self.n_steps = max(1, self.n // cfg.batch_size)
        self.history: list[dict] = []
        self.train_s = 0.0  # seconds in training steps, evaluation excluded
        self.images_seen = 0
        self.confusion = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)

    def begin_epoch(self) -> None:
        self.t0 = time.perf_counter()
        self.model.train()
        self.perm = torch.randperm(self.n, generator=self.gen, device=self.gen.device).to(self.dev)
        self.loss_sum = torch.zeros((), dtype=torch.float64 if self.dtype == torch.float64 else torch.float32, device=self.dev)
        self.correct = torch.zeros((), dtype=torch.long, device=self.dev)

    def step(self, step: int) -> None:
        """Batch `step` of the epoch: forward, backward, update."""
        b = self.cfg.batch_size
        idx = self.perm[step * b:(step + 1) * b]
        x = to_float(self.data.x_train[idx]).to(self.dtype)
        if self.cfg.augment:
            x = augment(x, self.gen)
        x = x.contiguous(memory_format=self.memory_format)
        y = self.data.y_train[idx]
        if self.compile == "cudagraphs":  # a new step: the graph may overwrite the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            logits = self.step_model(x)
            loss = self.loss_fn(logits.to(torch.float64 if self.dtype == torch.float64 else torch.float32), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(idx)
        self.correct += (logits.detach().argmax(1) == y).sum()

    def end_epoch(self, share: float = 1.0) -> dict:
        """The epoch's record (waits for the device), after evaluating on val and stepping the lr
        schedule. `share`: this trial's share of the device over the epoch, where it trained
        beside others (1 / the mean number of trials at once); its training seconds are that
        share of the wall time since `begin_epoch`, measured once the device is done."""
        if self.dev.type == "cuda":
            torch.cuda.current_stream(self.dev).synchronize()
        step_s = (time.perf_counter() - self.t0) * share
        seen = self.n_steps * min(self.cfg.batch_size, self.n)
        self.train_s += step_s
        self.images_seen += seen
        train_loss = float(self.loss_sum) / seen
        val_acc, self.confusion = evaluate(self.model, self.data.x_val, self.data.y_val, self.autocast)
        record = {
            "epoch": len(self.history) + 1,
            "train_loss": train_loss,
            "train_acc": float(self.correct) / seen,
            "val_acc": val_acc,
            "epoch_s": time.perf_counter() - self.t0,
            "images_per_s": seen / step_s if step_s > 0 else 0.0,
        }
        self.history.append(record)
        if self.scheduler is not None:  # per epoch; plateau watches val accuracy, the selection split
            self.scheduler.step(val_acc) if self.cfg.lr_schedule == "plateau" else self.scheduler.step()
        return record
