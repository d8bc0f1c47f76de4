"""Fused training: several trials of one network shape train as one network on one device.

A GPU trains one trial of the paper's network far below its peak: each step is a few hundred small
kernel launches. Fused, k trials cost about the same launches as one, each launch k times the
work. `FusedTrainer` holds the group and trains it an epoch at a time; trials join and leave at
epoch boundaries (continuous batching), so nobody waits for the slowest. `train_fused(data,
configs)` is the plain-function face: a fixed group, trained to the end.

What must match to share a group (`FUSE_KEYS`): batch size (the members step in lockstep),
width (one fused shape), optimizer (one update rule) and precision. Everything else is per
member and behaves exactly as alone: seed (initial weights, data order, augmentation draws), lr,
momentum, Nesterov, weight decay, label smoothing, augmentation, lr schedule, epochs, BatchNorm
statistics. Only the random layers' draws (dropout masks, RReLU slopes) come from the group's one
stream. A member's trajectory never depends on who else is in its group beyond those draws.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch
from torch.nn import functional as F

from data import Dataset, N_CLASSES, apply_augment, augment_draws, to_float

from .config import FUSE_KEYS, TrainConfig
from .device import autotune, device_name, resolve_device, use_bf16
from .fused_net import FusedFERNet, plain_shapes
from .fused_optim import FusedOptimizer
from .net import FERNet, count_params
from .training import TrainResult, check_compile, evaluate, make_lr_schedule, use_channels_last

CROP_PAD = 4  # augmentation's crop padding (pixels), as `data.augment` uses it
EVAL_IMAGES = 2048  # member-images per evaluation step: the plain trainer's 512 at k = 4


def fuse_key(cfg: TrainConfig) -> tuple:
    """Trials with equal keys can train in one group."""
    return tuple(getattr(cfg, k) for k in FUSE_KEYS)


@dataclass
class _Member:
    key: Hashable
    cfg: TrainConfig
    gen: torch.Generator  # data order and augmentation draws, seeded as the trial alone seeds its own
    lr_holder: torch.optim.Optimizer  # a stand-in optimizer that the member's lr scheduler steps
    scheduler: object | None
    init: dict[str, torch.Tensor] | None  # its initial weights, on the device, until its first epoch
    history: list[dict] = field(default_factory=list)
    train_s: float = 0.0  # the member's share of the group's training seconds
    images_seen: int = 0
    steps: int = 0
    confusion: torch.Tensor | None = None

    @property
    def lr(self) -> float:
        return self.lr_holder.param_groups[0]["lr"]


class FusedTrainer:
    """A group of trials sharing `FUSE_KEYS`; `add` and `finish` take effect at the next epoch."""

    def __init__(self, data: Dataset, *, batch_size: int, width: float, optimizer: str, precision: str = "auto",
                 device: str = "auto", channels_last: bool | None = None, compile: str = "off", seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        """`dtype` float64 is for checking the algebra (tests), as `train` takes it."""
        self.key = (batch_size, width, optimizer, precision)
        self.dtype = dtype
        self.loss_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.dev = dev = resolve_device(device)
        check_compile(compile, dev)
        autotune(dev)
        self.compile = compile
        self.bf16 = use_bf16(dev, precision) and dtype == torch.float32
        self.autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if self.bf16 \
            else contextlib.nullcontext
        self.memory_format = torch.channels_last if (channels_last if channels_last is not None
                                                     else use_channels_last(dev, self.bf16)) \
            else torch.contiguous_format
        self.x_train, self.y_train = torch.from_numpy(data.x_train).to(dev), torch.from_numpy(data.y_train).to(dev)
        self.x_val, self.y_val = torch.from_numpy(data.x_val).to(dev), torch.from_numpy(data.y_val).to(dev)
        self.x_test, self.y_test = torch.from_numpy(data.x_test).to(dev), torch.from_numpy(data.y_test).to(dev)
        self.batch_size, self.width, self.optimizer = batch_size, width, optimizer
        self.members: list[_Member] = []  # in the order of the fused network's slots
        self._joining: list[_Member] = []
        self._leaving: set[Hashable] = set()
        self.net: FusedFERNet | None = None
        self.opt: FusedOptimizer | None = None
        torch.manual_seed(seed)  # the group's random layers: dropout masks and RReLU slopes

    # ---- membership

    def __len__(self) -> int:
        """Members training from the next epoch on."""
        return len(self.members) - len(self._leaving) + len(self._joining)

    def config(self, key: Hashable) -> TrainConfig:
        return next(m.cfg for m in (*self.members, *self._joining) if m.key == key)

    def add(self, key: Hashable, cfg: TrainConfig) -> None:
        if fuse_key(cfg) != self.key:
            raise ValueError(f"trial {key} cannot join this group: its {', '.join(FUSE_KEYS)} are "
                             f"{fuse_key(cfg)}, the group's {self.key}")
        with torch.random.fork_rng(devices=[]):  # the member's initial weights, exactly as alone,
            torch.manual_seed(cfg.seed)          # without touching the group's random stream
            init = FERNet(cfg.width)  # drawn on the host, as alone; on the device at once, one member at a time
        shapes = plain_shapes(cfg.width)
        init = {n: t.to(self.dev) for n, t in init.state_dict().items() if n in shapes}
        gen = torch.Generator(device=self.dev if self.dev.type == "cuda" else "cpu").manual_seed(cfg.seed)
        holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        self._joining.append(_Member(key, cfg, gen, holder, make_lr_schedule(cfg, holder), init))

    def _regroup(self) -> None:
        """Members leave and join between epochs. A joiner takes a leaver's slot in place where the
        group keeps its size (weights written into the slot, its optimizer state zeroed); a group
        that grows or shrinks is rebuilt on the device. Nothing is built on the host."""
        if not self._joining and not self._leaving:
            return
        keep = [i for i, m in enumerate(self.members) if m.key not in self._leaving]
        free = [i for i, m in enumerate(self.members) if m.key in self._leaving]
        joining, self._joining, self._leaving = self._joining, [], set()
        k = len(keep) + len(joining)
        if k == 0:
            self.members, self.net, self.opt = [], None, None
            return
        if self.net is not None and k == self.net.k:  # fixed slots: leavers' slots to joiners
            members = list(self.members)
            slots = self.net.stacked_state()
            for i, m in zip(free, joining):
                with torch.no_grad():
                    for n, t in slots.items():
                        t[i].copy_(m.init[n])
                self.opt.reset_member(i)
                members[i] = m
        else:
            members = [self.members[i] for i in keep] + joining
            net = FusedFERNet.on_device(k, self.width, self.dev, self.dtype)
            old = {}
            if self.net is not None and keep:
                idx = torch.tensor(keep, device=self.dev)
                old = {n: t.index_select(0, idx) for n, t in self.net.stacked_state().items()}
            net.load_stacked({n: torch.cat([*([old[n]] if n in old else []), *(m.init[n][None] for m in joining)])
                              for n in net.stacked_state()})
            self.net = net.to(memory_format=self.memory_format)
            params = dict(self.net.named_parameters())
            self.opt = self.opt.regroup(keep, len(joining), params) if self.opt is not None and keep else \
                FusedOptimizer(self.optimizer, params, k, {})
            self.step_model = self.net if self.compile == "off" else \
                torch.compile(self.net, mode="reduce-overhead" if self.compile == "cudagraphs" else None)
        for m in joining:
            m.init = None
        self.members = members
        col = lambda values: torch.tensor(values, dtype=self.dtype, device=self.dev)  # noqa: E731
        self.opt.hyper = {"lr": col([m.lr for m in members]),
                          "momentum": col([m.cfg.momentum for m in members]),
                          "nesterov": col([float(m.cfg.nesterov) for m in members]),
                          "weight_decay": col([m.cfg.weight_decay for m in members])}
        self.smoothing = col([m.cfg.label_smoothing for m in members])[:, None]
        self.augmenting = [m.cfg.augment for m in members]

    # ---- one epoch for the whole group

    def run_epoch(self) -> dict[Hashable, dict]:
        """Train every member one epoch and evaluate it on val: {key: the epoch's record}, the
        plain trainer's record plus `concurrent`, the group's size. Each member's lr schedule
        steps here, as alone."""
        self._regroup()
        k = len(self.members)
        if k == 0:
            return {}
        t0 = time.perf_counter()
        self.net.train()
        n, b = len(self.x_train), self.batch_size
        n_steps = max(1, n // b)  # the ragged last batch is dropped, as the plain trainer does
        perm = torch.stack([torch.randperm(n, generator=m.gen, device=m.gen.device).to(self.dev)
                            for m in self.members])
        loss_sum = torch.zeros(k, dtype=self.loss_dtype, device=self.dev)
        correct = torch.zeros(k, dtype=torch.long, device=self.dev)
        still = torch.full((b,), CROP_PAD, dtype=torch.long, device=self.dev)  # an augmentation that changes nothing
        no_flip = torch.zeros(b, dtype=torch.bool, device=self.dev)
        for step in range(n_steps):
            idx = perm[:, step * b:(step + 1) * b]  # (k, b): each member's own batch
            y = self.y_train[idx]
            x = self.x_train[idx].float().div_(255.0).to(self.dtype)  # (k, b, 48, 48) in [0, 1]
            if any(self.augmenting):
                rows = idx.shape[1]
                draws = [augment_draws(rows, m.gen, CROP_PAD, device=self.dev) if aug
                         else (still[:rows], still[:rows], no_flip[:rows])
                         for m, aug in zip(self.members, self.augmenting)]
                oy, ox, flip = (torch.cat(d) for d in zip(*draws))
                x = apply_augment(x.reshape(-1, 1, *x.shape[2:]), oy, ox, flip, CROP_PAD).view_as(x)
            x = x.transpose(0, 1).contiguous(memory_format=self.memory_format)  # member i -> channel i
            if self.compile == "cudagraphs":
                torch.compiler.cudagraph_mark_step_begin()
            with self.autocast():
                logits = self.step_model(x)  # (k, b, 7)
            logp = F.log_softmax(logits.to(self.loss_dtype), -1)
            nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            # cross-entropy with each member's label smoothing, as nn.CrossEntropyLoss computes it
            losses = ((1 - self.smoothing) * nll + self.smoothing * -logp.mean(-1)).mean(1)
            self.opt.zero_grad()
            losses.sum().backward()  # members share no parameter: each gets its own loss's gradient
            self.opt.step()
            loss_sum += losses.detach() * y.shape[1]
            correct += (logits.detach().argmax(-1) == y).sum(1)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        step_s = time.perf_counter() - t0
        seen = n_steps * min(b, n)
        accs, confusion = self._evaluate(self.x_val, self.y_val)
        epoch_s = time.perf_counter() - t0
        losses, corrects = (loss_sum / seen).tolist(), correct.tolist()
        records = {}
        for i, m in enumerate(self.members):
            m.train_s += step_s / k
            m.images_seen += seen
            m.steps += n_steps
            m.confusion = confusion[i]
            record = {"epoch": len(m.history) + 1, "train_loss": losses[i], "train_acc": corrects[i] / seen,
                      "val_acc": accs[i], "epoch_s": epoch_s, "images_per_s": seen * k / step_s if step_s > 0 else 0.0,
                      "concurrent": k}
            m.history.append(record)
            if m.scheduler is not None:  # per epoch; plateau watches val accuracy, as alone
                m.lr_holder.step()  # a no-op (its one parameter has no gradient) that schedulers expect first
                m.scheduler.step(accs[i]) if m.cfg.lr_schedule == "plateau" else m.scheduler.step()
            records[m.key] = record
        self.opt.hyper["lr"] = torch.tensor([m.lr for m in self.members], dtype=self.dtype, device=self.dev)
        return records

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], torch.Tensor]:
        """Every member's accuracy and (true, predicted) counts on the same images, in one pass."""
        k = self.net.k
        self.net.eval()
        confusion = torch.zeros(k * N_CLASSES * N_CLASSES, dtype=torch.long, device=self.dev)
        offsets = torch.arange(k, device=self.dev)[:, None] * N_CLASSES * N_CLASSES
        step = max(64, EVAL_IMAGES // k)
        for i in range(0, len(x), step):
            xb = to_float(x[i:i + step]).to(self.dtype).expand(-1, k, -1, -1).contiguous(memory_format=self.memory_format)
            with self.autocast():
                pred = self.net(xb).float().argmax(-1)  # (k, images)
            confusion += torch.bincount((offsets + y[i:i + step] * N_CLASSES + pred).ravel(),
                                        minlength=k * N_CLASSES * N_CLASSES)
        confusion = confusion.view(k, N_CLASSES, N_CLASSES).cpu()
        total = max(1, len(x))
        return [float(c.trace()) / total for c in confusion], confusion

    # ---- leaving

    def finish(self, key: Hashable, stop_reason: str, keep_model: bool = False) -> TrainResult:
        """Member `key` leaves at this epoch boundary; its result, test accuracy included."""
        i = next(i for i, m in enumerate(self.members) if m.key == key)
        m = self.members[i]
        self._leaving.add(key)
        model = self.net.member(i, batches_tracked=m.steps)
        has_test = len(self.y_test) > 0
        test_acc, test_confusion = evaluate(model, self.x_test, self.y_test, self.autocast) if has_test \
            else (None, None)
        history = m.history
        return TrainResult(
            history=history, val_acc=history[-1]["val_acc"], best_val_acc=max(r["val_acc"] for r in history),
            test_acc=test_acc, epochs_run=len(history), stop_reason=stop_reason, train_s=m.train_s,
            images_per_s=m.images_seen / m.train_s if m.train_s > 0 else 0.0, n_params=count_params(model),
            device=self.dev.type, device_name=device_name(self.dev),
            precision="bf16" if self.bf16 else ("fp64" if self.dtype == torch.float64 else "fp32"),
            val_confusion=m.confusion.tolist(),
            test_confusion=test_confusion.tolist() if test_confusion is not None else None,
            model=model if keep_model else None,
        )


OnMemberEpoch = Callable[[Hashable, dict], bool]  # (member key, record) -> True to stop that member


def outcome(record: dict, cfg: TrainConfig, stop: bool) -> str | None:
    """How a member's epoch ends it, as the plain trainer decides: diverged (non-finite loss),
    stopped (asked to, before its last epoch), completed, or None to go on."""
    if not math.isfinite(record["train_loss"]):
        return "diverged"
    if stop:
        return "stopped" if record["epoch"] < cfg.epochs else "completed"
    return "completed" if record["epoch"] >= cfg.epochs else None


def train_fused(data: Dataset, configs: list[TrainConfig], *, device: str = "auto",
                on_epoch: OnMemberEpoch | None = None, keep_model: bool = False, channels_last: bool | None = None,
                compile: str = "off", seed: int | None = None, dtype: torch.dtype = torch.float32) -> list[TrainResult]:
    """Train `configs` (equal in FUSE_KEYS) as one fused group; one TrainResult each, in order.
    `seed` seeds the group's random layers (default: the first config's seed)."""
    if not configs:
        return []
    c = configs[0]
    trainer = FusedTrainer(data, batch_size=c.batch_size, width=c.width, optimizer=c.optimizer,
                           precision=c.precision, device=device, channels_last=channels_last, compile=compile,
                           seed=c.seed if seed is None else seed, dtype=dtype)
    for i, cfg in enumerate(configs):
        trainer.add(i, cfg)
    results: dict[int, TrainResult] = {}
    while len(trainer):
        for key, record in trainer.run_epoch().items():
            cfg = trainer.config(key)
            end = outcome(record, cfg, on_epoch is not None and on_epoch(key, record))
            if end is not None:
                results[key] = trainer.finish(key, end, keep_model)
    return [results[i] for i in range(len(configs))]
