"""One trial's training, a batch at a time: the engine that `train` drives alone and
`MultiTrainer` drives for several trials at once, so both run the same code.

`TrialRun` holds everything a trial owns: its network, optimizer, lr schedule, loss, data order
and augmentation generator, and the epoch's running loss and accuracy (on the device, so the host
never waits inside an epoch). The data set lives on the device once (`DeviceData`), shared by
every trial of a process.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from data import Dataset, N_CLASSES, augment, to_float

from .config import TrainConfig
from .device import autotune, device_name, use_bf16
from .net import FERNet, count_params
from .step_optim import StepOptimizer

EVAL_BATCH = 512  # images per evaluation step: large for speed, small enough for CPU memory


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
    cuda_graph: bool = False  # its steps replayed a captured CUDA graph (engine graph on CUDA)
    graph_fallback: str | None = None  # why its step could not be captured (it trained eagerly)


@dataclass
class DeviceData:
    """A data set's splits as uint8 images and int64 labels on one device."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def of(cls, data: Dataset, dev: torch.device) -> "DeviceData":
        return cls(*(torch.from_numpy(a).to(dev) for a in (data.x_train, data.y_train, data.x_val, data.y_val,
                                                            data.x_test, data.y_test)))


class LrSchedule:
    """`cfg.lr_schedule`'s lr, epoch by epoch, as PyTorch's schedulers compute it (on a stand-in
    optimizer of one unused parameter), handed to the trial's optimizer between epochs."""

    def __init__(self, cfg: TrainConfig, optimizer: StepOptimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        self.scheduler = make_lr_schedule(cfg, self.holder)

    def step(self, val_acc: float) -> None:
        if self.scheduler is None:
            return
        self.holder.step()  # a no-op (no gradient) that schedulers expect before their step
        self.scheduler.step(val_acc) if self.cfg.lr_schedule == "plateau" else self.scheduler.step()
        self.optimizer.set_lr(self.holder.param_groups[0]["lr"])


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
    dtype = next(model.parameters()).dtype
    confusion = torch.zeros(N_CLASSES * N_CLASSES, dtype=torch.long, device=x.device)
    for i in range(0, len(x), EVAL_BATCH):
        with autocast():
            logits = model(to_float(x[i:i + EVAL_BATCH]).to(dtype))
        cell = y[i:i + EVAL_BATCH] * N_CLASSES + logits.float().argmax(1)
        # scatter_add_, not bincount: bincount sizes its output from the data, a wait for the GPU
        confusion.scatter_add_(0, cell, torch.ones_like(cell))
    confusion = confusion.view(N_CLASSES, N_CLASSES).cpu()
    return float(confusion.trace()) / max(1, len(x)), confusion


def use_channels_last(dev: torch.device, bf16: bool) -> bool:
    """channels_last pays with bf16 on CUDA; on CPU it measured slower for the paper's network
    (docs/benchmarks.md), so it stays off there."""
    return dev.type == "cuda" and bf16


class TrialRun:
    """A trial from its initial weights on: `begin_epoch`, `step` x `n_steps`, `end_epoch`, and
    so on; `result` when it ends. Seeds the global random stream with the trial's seed (initial
    weights, dropout, RReLU), as the trial alone does.

    `step` is graph-safe: it reads and writes only tensors made once here (the data, the epoch's
    permutation, a device-side step counter, parameters, optimizer state, the epoch's sums), draws
    only from the trial's generator and the global one, and never waits for the device. One CUDA
    graph of it replays every step of every epoch (model/graphed.py); model/capture_check.py checks
    all of that on a CPU. `dtype` float64 is for checking the algebra (tests)."""

    def __init__(self, data: DeviceData, cfg: TrainConfig, dev: torch.device, *,
                 channels_last: bool | None = None, compile: str = "off", dtype: torch.dtype = torch.float32):
        self.data, self.cfg, self.dev, self.compile, self.dtype = data, cfg, dev, compile, dtype
        autotune(dev)
        self.bf16 = use_bf16(dev, cfg.precision) and dtype == torch.float32
        # No cast cache: a CUDA graph must not keep casts made while it was captured (and here each
        # weight is cast once per step anyway, so the cache saves nothing).
        self.autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False)) if self.bf16 \
            else contextlib.nullcontext
        self.loss_dtype = torch.float64 if dtype == torch.float64 else torch.float32
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
        self.optimizer = StepOptimizer(cfg, self.model.parameters())
        self.lr_schedule = LrSchedule(cfg, self.optimizer)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.n = len(data.x_train)
        # Drop the ragged last batch: a batch of one breaks BatchNorm, and a fresh permutation
        # each epoch means every image is still seen. Every step has the same shapes.
        self.n_steps = max(1, self.n // cfg.batch_size)
        self.rows = min(cfg.batch_size, self.n)  # images per step
        self.perm = torch.zeros(self.n, dtype=torch.long, device=dev)  # this epoch's data order
        self.step_index = torch.zeros((), dtype=torch.long, device=dev)  # the next step of the epoch
        self.offsets = torch.arange(self.rows, device=dev)
        self.loss_sum = torch.zeros((), dtype=self.loss_dtype, device=dev)
        self.correct = torch.zeros((), dtype=torch.long, device=dev)
        self.history: list[dict] = []
        self.train_s = 0.0  # seconds in training steps, evaluation excluded
        self.images_seen = 0
        self.confusion = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)

    def begin_epoch(self) -> None:
        self.t0 = time.perf_counter()
        self.model.train()
        self.perm.copy_(torch.randperm(self.n, generator=self.gen, device=self.gen.device))
        self.step_index.zero_()
        self.loss_sum.zero_()
        self.correct.zero_()

    def step(self) -> None:
        """The epoch's next batch: forward, backward, update."""
        idx = self.perm[self.step_index * self.rows + self.offsets]
        x = to_float(self.data.x_train[idx]).to(self.dtype)
        if self.cfg.augment:
            x = augment(x, self.gen)
        x = x.contiguous(memory_format=self.memory_format)
        y = self.data.y_train[idx]
        if self.compile == "cudagraphs":  # a new step: the graph may overwrite the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            logits = self.step_model(x)
            loss = self.loss_fn(logits.to(self.loss_dtype), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * self.rows
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.step_index += 1

    def end_epoch(self, share: float = 1.0) -> dict:
        """The epoch's record (waits for the device), after evaluating on val and stepping the lr
        schedule. `share`: this trial's share of the device over the epoch, where it trained
        beside others (1 / the mean number of trials at once); its training seconds are that
        share of the wall time since `begin_epoch`, measured once the device is done."""
        if self.dev.type == "cuda":
            torch.cuda.current_stream(self.dev).synchronize()
        step_s = (time.perf_counter() - self.t0) * share
        seen = self.n_steps * self.rows
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
        self.lr_schedule.step(val_acc)  # per epoch; plateau watches val accuracy, the selection split
        return record

    def result(self, stop_reason: str, keep_model: bool = False) -> TrainResult:
        """The trial's TrainResult, test accuracy of the final model included."""
        d, history = self.data, self.history
        test_acc, test_confusion = evaluate(self.model, d.x_test, d.y_test, self.autocast) if len(d.y_test) \
            else (None, None)
        return TrainResult(
            history=history,
            val_acc=history[-1]["val_acc"],
            best_val_acc=max(r["val_acc"] for r in history),
            test_acc=test_acc,
            epochs_run=len(history),
            stop_reason=stop_reason,
            train_s=self.train_s,
            images_per_s=self.images_seen / self.train_s if self.train_s > 0 else 0.0,
            n_params=count_params(self.model),
            device=self.dev.type,
            device_name=device_name(self.dev),
            precision="bf16" if self.bf16 else ("fp64" if self.dtype == torch.float64 else "fp32"),
            val_confusion=self.confusion.tolist(),
            test_confusion=test_confusion.tolist() if test_confusion is not None else None,
            model=self.model if keep_model else None,
        )
