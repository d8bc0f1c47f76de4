"""How fast an engine trains K trials here, measured the same way for every engine.

`measure(engine, k, data, probe, device)` builds the engine with K trials of the probe's shape
(members differ in lr and seed, as a sweep's do) and trains one untimed epoch (set-up, cuDNN's
autotuning, graph capture). Then it times whole epochs of every member, each between two
device-wide syncs, until at least `window_s` seconds are timed: no member's queued work is left
out of the figure (timing one member's epoch, as its own record does, would leave out the work
of the members that end theirs later in the same round).

It also times what a trial joining costs (`join_s`): an epoch in which one member is replaced by
a fresh trial, less a steady epoch. That is construction for every engine, plus warm-up and
capture for graph and a regroup for fused, and a sweep pays it once per trial: `effective` is
the images per second a sweep sees when each of the K slots trains trials of `trial_images`
images, each paying its join.

Engines: `plain` (one trial; `compile` as `train` takes it), `multi`, `graph` (K side by side)
and `fused` (K as one network).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

from data import Dataset

from .config import TrainConfig

EVAL_IMAGES = 8  # validation is not what is measured: a token split


@dataclass
class Speed:
    images_per_s: float  # aggregate training images/s of the K trials, steady (0: out of memory)
    join_s: float  # seconds a trial joining costs the engine beyond its training steps
    epochs_timed: int


def subset(data: Dataset, n: int) -> Dataset:
    """The first n training images (repeated where there are fewer), with a token val split."""
    idx = np.arange(n) % max(1, len(data.x_train))
    tiny = slice(0, EVAL_IMAGES)
    return Dataset(data.name, data.source, data.format, data.content_hash, "probe", data.x_train[idx],
                   data.y_train[idx], data.x_val[tiny], data.y_val[tiny], data.x_test[:0], data.y_test[:0])


def effective(speed: Speed, k: int, trial_images: float) -> float:
    """Images/s over a sweep where each of the K slots trains trials of `trial_images` images."""
    if speed.images_per_s <= 0:
        return 0.0
    per_slot_s = trial_images / (speed.images_per_s / k) + speed.join_s
    return k * trial_images / per_slot_s


class Engine:
    """K trials of one engine, an epoch at a time, a member replaceable by a fresh trial."""

    def __init__(self, engine: str, k: int, data: Dataset, probe: TrainConfig, device: str, compile: str):
        from .device import resolve_device

        self.engine, self.k, self.data, self.probe, self.device, self.compile = engine, k, data, probe, device, compile
        self.dev = resolve_device(device)
        self.seed = 0
        if engine == "plain":
            from .trial_run import DeviceData

            self.device_data = DeviceData.of(data, self.dev)
            self.runs = [self._plain(self._config())]
        elif engine in ("multi", "graph"):
            from .multi_train import MultiTrainer

            self.trainer = MultiTrainer(data, device=device, compile=compile, graphs=engine == "graph",
                                        say=lambda line: None)
            for _ in range(k):
                self._join()
        else:
            from .fused_train import FusedTrainer

            p = probe
            self.trainer = FusedTrainer(data, batch_size=p.batch_size, width=p.width, optimizer=p.optimizer,
                                        precision=p.precision, device=device, compile=compile)
            for _ in range(k):
                self._join()

    def _config(self) -> TrainConfig:
        self.seed += 1  # members differ in seed and lr, as a sweep's trials do
        return TrainConfig(**{**self.probe.to_dict(), "epochs": 10_000, "seed": self.seed,
                              "lr": self.probe.lr * 0.9 ** (self.seed % 8)})

    def _plain(self, cfg: TrainConfig):
        from .trial_run import TrialRun

        return TrialRun(self.device_data, cfg, self.dev, compile=self.compile)

    def _join(self) -> None:
        self.trainer.add(self.seed + 1, self._config())

    def images_per_epoch(self) -> int:
        per = len(self.data.x_train) // self.probe.batch_size * min(self.probe.batch_size, len(self.data.x_train))
        return per * self.k

    def epoch(self) -> None:
        if self.engine == "plain":
            run = self.runs[0]
            run.begin_epoch()
            for _ in range(run.n_steps):
                run.step()
            run.end_epoch()
        elif self.engine == "fused":
            self.trainer.run_epoch()
        else:
            while len(self.trainer.advance()) < len(self.trainer):  # every member ends its epoch in the same round
                pass

    def replace_one(self) -> None:
        if self.engine == "plain":
            self.runs = [self._plain(self._config())]
            return
        oldest = min(m.key for m in self.trainer.members)
        self.trainer.finish(oldest, "stopped")
        self._join()

    def close(self) -> None:
        if self.engine in ("multi", "graph"):
            self.trainer.close()


def measure(engine: str, k: int, data: Dataset, probe: TrainConfig, device: str, *, window_s: float = 1.0,
            compile: str = "off") -> Speed:
    """`engine` at K trials of the probe's shape on `data` (a few steps' worth: see `subset`)."""
    import torch

    from .device import resolve_device
    from .graphed import out_of_memory

    dev = resolve_device(device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    runner = None
    try:
        runner = Engine(engine, k, data, probe, device, compile)
        runner.epoch()  # untimed: set-up, autotuning, capture
        spent, epochs = 0.0, 0
        while spent < window_s or epochs < 2:
            spent += timed(runner.epoch)
            epochs += 1
        steady_s = spent / epochs
        join_s = max(0.0, timed(lambda: (runner.replace_one(), runner.epoch())) - steady_s)
        return Speed(runner.images_per_epoch() * epochs / spent, join_s, epochs)
    except Exception as e:
        if not out_of_memory(e):
            raise
        return Speed(0.0, 0.0, 0)
    finally:
        if runner is not None:
            runner.close()
        runner = None  # nothing refers to its trials: the collection below frees them
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
