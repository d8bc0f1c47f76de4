"""Several trials of any hyperparameters training at once on one device, a step each in turn.

Fusion (model/fused_train.py) needs its members to share batch size, width, optimizer and
precision; a study that searches those rarely fills a fused group. `MultiTrainer` has no such
key: each member is a whole `TrialRun`, the very engine `train` drives alone, and the trainer
steps the members round-robin, one batch each per round. Members join whenever they arrive and
leave at their own epoch boundaries; nobody waits for anyone's epoch to end.

A member's trajectory is its trial's alone, bit for bit: its random streams (initial weights,
dropout masks, RReLU slopes on the global stream; data order and augmentation on its own
generator) are its own, so interleaving changes nothing but timing.

Two engines: `multi` steps each member eagerly; `graph` captures each member's step once as a
CUDA graph (after a few eager steps) and replays it, so the host issues one launch per step
instead of a few hundred kernels (model/graphed.py). On CUDA each member works on a slot of its
own (a stream and a graph memory pool, handed on to the next member when it leaves), so the
kernels of different trials can overlap. On a CPU both run every step eagerly: the same code,
all of it but the capture.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Hashable

import torch

from data import Dataset

from . import graphed
from .config import TrainConfig
from .device import resolve_device
from .training import TrainResult, check_compile
from .trial_run import DeviceData, TrialRun


@dataclass
class _Member:
    key: Hashable
    run: TrialRun
    rng: graphed.Rng
    slot: graphed.Slot
    graph: graphed.Graph = field(default_factory=graphed.Graph)
    step: int = 0  # the next batch of its current epoch; 0 before the epoch began
    company: int = 0  # this epoch's rounds, each counted as the number of trials stepped in it


class MultiTrainer:
    """Members of any TrainConfig; `add` takes effect at once, `finish` ends a member.
    `graphs`: capture each member's step as a CUDA graph (on CUDA; eager elsewhere)."""

    def __init__(self, data: Dataset, *, device: str = "auto", channels_last: bool | None = None,
                 compile: str = "off", graphs: bool = False, say=None):
        if compile == "cudagraphs":
            # torch.compile's graphs replay on the stream they were recorded on; each member has its own
            raise ValueError("compile 'cudagraphs' cannot train trials side by side: each trial steps on a "
                             "stream of its own")
        self.dev = resolve_device(device)
        check_compile(compile, self.dev)
        if graphs and compile != "off":
            raise ValueError("the graph engine captures the plain step; it does not go with compile "
                             f"'{compile}'")
        self.channels_last, self.compile, self.graphs = channels_last, compile, graphs
        self.capture = graphs and self.dev.type == "cuda"
        self.say = say or (lambda line: print(f"sweep: {line}", file=sys.stderr))
        self.data = DeviceData.of(data, self.dev)
        self.members: list[_Member] = []
        self.slots: list[graphed.Slot] = []  # kept when members leave: the next member reuses one

    def __len__(self) -> int:
        return len(self.members)

    def config(self, key: Hashable) -> TrainConfig:
        return self._member(key).run.cfg

    def _member(self, key: Hashable) -> _Member:
        return next(m for m in self.members if m.key == key)

    def _free_slot(self) -> graphed.Slot:
        slot = next((s for s in self.slots if not s.busy), None)
        if slot is None:
            slot = graphed.new_slot(self.dev)
            self.slots.append(slot)
        slot.busy = True
        return slot

    def add(self, key: Hashable, cfg: TrainConfig) -> None:
        cuda = self.dev.type == "cuda"
        slot = self._free_slot()
        try:
            with torch.random.fork_rng(devices=[self.dev] if cuda else []):  # the trial's streams, not ours
                with graphed.on(slot):
                    run = TrialRun(self.data, cfg, self.dev, channels_last=self.channels_last, compile=self.compile)
                rng = graphed.trial_rng(self.dev)
        except BaseException:
            slot.busy = False
            raise
        if slot.stream is not None:  # the data were copied to the device on the default stream
            slot.stream.wait_stream(torch.cuda.default_stream(self.dev))
        self.members.append(_Member(key, run, rng, slot))

    def _step(self, m: _Member) -> None:
        """Member m's next step: a replay of its graph, or an eager step (capturing after the
        warm-up where graphs are on)."""
        g = m.graph
        if g.graph is not None:
            with graphed.on(m.slot):
                g.graph.replay()
            return
        with graphed.installed(m.rng, self.dev), graphed.on(m.slot):
            m.run.step()
            g.eager_steps += 1
            if self.capture and g.failed is None and g.eager_steps >= graphed.WARMUP_STEPS:
                try:
                    g.graph = graphed.capture(m.run, m.slot)
                except Exception as e:  # noqa: BLE001 - out of memory goes up (the group shrinks); anything else: eager
                    if graphed.out_of_memory(e) or graphed.poisoned(e):
                        raise
                    g.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                    self.say(f"trial {m.key}: its step could not be captured as a CUDA graph ({g.failed}); "
                             "it trains eagerly")

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
                if m.step == 0:
                    with graphed.installed(m.rng, self.dev), graphed.on(m.slot):
                        m.run.begin_epoch()
                    m.company = 0
                self._step(m)
                m.step += 1
                m.company += len(live)
            for m in live:
                if m.step == m.run.n_steps:
                    # Its seconds: the epoch's wall time (the device done with it) over the mean
                    # number of trials it shared the device with.
                    with graphed.installed(m.rng, self.dev), graphed.on(m.slot):
                        record = m.run.end_epoch(share=m.step / m.company)
                    # the mean number of trials at once over the epoch; in its history too (the same record)
                    record["concurrent"] = round(m.company / m.step, 2)
                    records[m.key] = record
                    m.step = 0
        return records

    def finish(self, key: Hashable, stop_reason: str, keep_model: bool = False) -> TrainResult:
        """Member `key` leaves now; its result, test accuracy included. Its slot (stream and
        graph pool) goes to the next member that joins."""
        m = self._member(key)
        self.members.remove(m)
        with graphed.installed(m.rng, self.dev), graphed.on(m.slot):
            result = m.run.result(stop_reason, keep_model)
        result.cuda_graph = m.graph.graph is not None
        result.graph_fallback = m.graph.failed
        if m.graph.graph is not None:
            m.run.optimizer.zero_grad()  # the gradients live in the graph's pool: let them go with it
            m.graph.graph.reset()
            m.graph.graph = None
        m.slot.busy = False
        return result

    def close(self) -> None:
        """Every member's graph and slot let go (a trainer dropped after an error)."""
        for m in self.members:
            if m.graph.graph is not None:
                m.run.optimizer.zero_grad()
                m.graph.graph.reset()
        self.members, self.slots = [], []


def train_multi(data: Dataset, configs: list[TrainConfig], *, device: str = "auto", on_epoch=None,
                keep_model: bool = False, channels_last: bool | None = None, compile: str = "off",
                graphs: bool = False) -> list[TrainResult]:
    """Train `configs` (any hyperparameters) side by side; one TrainResult each, in order, each
    equal to its trial trained alone. `on_epoch(index, record) -> True` stops that trial."""
    from .fused_train import outcome

    trainer = MultiTrainer(data, device=device, channels_last=channels_last, compile=compile, graphs=graphs)
    for i, cfg in enumerate(configs):
        trainer.add(i, cfg)
    results: dict[int, TrainResult] = {}
    while len(trainer):
        for key, record in trainer.advance().items():
            end = outcome(record, trainer.config(key), on_epoch is not None and on_epoch(key, record))
            if end is not None:
                results[key] = trainer.finish(key, end, keep_model)
    return [results[i] for i in range(len(configs))]
