"""Several trials of any hyperparameters training at once on one device, a step each in turn.

Fusion (model/fused_train.py) needs its members to share batch size, width, optimizer and
precision; a study that searches those rarely fills a fused group. `MultiTrainer` has no such
key: each member is a whole `TrialRun`, the very engine `train` drives alone, and the trainer
steps the members round-robin, one batch each per round. Members join whenever they arrive and
leave at their own epoch boundaries; nobody waits for anyone's epoch to end.

A member's trajectory is its trial's alone, bit for bit: its random streams (initial weights,
dropout masks, RReLU slopes on the global stream; data order and augmentation on its own
generator) are swapped in around each of its steps, so interleaving changes nothing but timing.

On CUDA each member issues its steps on a CUDA stream of its own, so the kernels of different
trials can run side by side where one trial's kernels leave the GPU idle. That is the only
CUDA-only part: on a CPU the same code runs on the one implicit stream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Hashable

import torch

from data import Dataset

from .config import TrainConfig
from .device import resolve_device
from .training import TrainResult, check_compile
from .trial_run import DeviceData, TrialRun


@dataclass
class _Member:
    key: Hashable
    run: TrialRun
    rng: tuple[torch.Tensor, torch.Tensor | None]  # its global random state (CPU, CUDA) between its steps
    stream: object | None  # its CUDA stream; None on a CPU
    step: int = 0  # the next batch of its current epoch; 0 before the epoch began
    company: int = 0  # this epoch's rounds, each counted as the number of trials stepped in it


class MultiTrainer:
    """Members of any TrainConfig; `add` takes effect at once, `finish` ends a member."""

    def __init__(self, data: Dataset, *, device: str = "auto", channels_last: bool | None = None,
                 compile: str = "off"):
        self.dev = resolve_device(device)
        check_compile(compile, self.dev)
        self.channels_last, self.compile = channels_last, compile
        self.data = DeviceData.of(data, self.dev)
        self.members: list[_Member] = []

    def __len__(self) -> int:
        return len(self.members)

    def config(self, key: Hashable) -> TrainConfig:
        return self._member(key).run.cfg

    def _member(self, key: Hashable) -> _Member:
        return next(m for m in self.members if m.key == key)

    def add(self, key: Hashable, cfg: TrainConfig) -> None:
        cuda = self.dev.type == "cuda"
        stream = torch.cuda.Stream(self.dev) if cuda else None
        with torch.random.fork_rng(devices=[self.dev] if cuda else []):  # the trial's streams, not ours
            with self._on(stream):
                run = TrialRun(self.data, cfg, self.dev, channels_last=self.channels_last, compile=self.compile)
            rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self.dev) if cuda else None)
        if stream is not None:  # the data were copied to the device on the default stream
            stream.wait_stream(torch.cuda.default_stream(self.dev))
        self.members.append(_Member(key, run, rng, stream))

    @contextlib.contextmanager
    def _on(self, stream):
        if stream is None:
            yield
        else:
            with torch.cuda.stream(stream):
                yield

    @contextlib.contextmanager
    def _as(self, m: _Member):
        """Member m's random state and CUDA stream for the duration; its state saved after."""
        cuda = m.stream is not None
        outer = (torch.get_rng_state(), torch.cuda.get_rng_state(self.dev) if cuda else None)
        torch.set_rng_state(m.rng[0])
        if cuda:
            torch.cuda.set_rng_state(m.rng[1], self.dev)
        try:
            with self._on(m.stream):
                yield
        finally:
            m.rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self.dev) if cuda else None)
            torch.set_rng_state(outer[0])
            if cuda:
                torch.cuda.set_rng_state(outer[1], self.dev)

    def advance(self) -> dict[Hashable, dict]:
        """Step every member in turn until at least one ends an epoch; {key: that epoch's
        record} for each that did (evaluated on val, lr schedule stepped). A member whose record
        ends it (see `outcome`) must be `finish`ed before the next call; the others go on."""
        if not self.members:
            return {}
        records: dict[Hashable, dict] = {}
        while not records:
            live = list(self.members)
            for m in live:
                with self._as(m):
                    if m.step == 0:
                        m.run.begin_epoch()
                        m.company = 0
                    m.run.step()
                    m.step += 1
                m.company += len(live)
            for m in live:
                if m.step == m.run.n_steps:
                    # Its seconds: the epoch's wall time (the device done with it) over the mean
                    # number of trials it shared the device with.
                    with self._as(m):
                        record = m.run.end_epoch(share=m.step / m.company)
                    # the mean number of trials at once over the epoch; in its history too (the same record)
                    record["concurrent"] = round(m.company / m.step, 2)
                    records[m.key] = record
                    m.step = 0
        return records

    def finish(self, key: Hashable, stop_reason: str, keep_model: bool = False) -> TrainResult:
        """Member `key` leaves now; its result, test accuracy included."""
        m = self._member(key)
        self.members.remove(m)
        with self._as(m):
            return m.run.result(stop_reason, keep_model)


def train_multi(data: Dataset, configs: list[TrainConfig], *, device: str = "auto", on_epoch=None,
                keep_model: bool = False, channels_last: bool | None = None, compile: str = "off") -> list[TrainResult]:
    """Train `configs` (any hyperparameters) side by side; one TrainResult each, in order, each
    equal to its trial trained alone. `on_epoch(index, record) -> True` stops that trial."""
    from .fused_train import outcome

    trainer = MultiTrainer(data, device=device, channels_last=channels_last, compile=compile)
    for i, cfg in enumerate(configs):
        trainer.add(i, cfg)
    results: dict[int, TrainResult] = {}
    while len(trainer):
        for key, record in trainer.advance().items():
            end = outcome(record, trainer.config(key), on_epoch is not None and on_epoch(key, record))
            if end is not None:
                results[key] = trainer.finish(key, end, keep_model)
    return [results[i] for i in range(len(configs))]

