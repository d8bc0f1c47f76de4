"""`--engine auto`: which engine trains a study's trials fastest on this device, measured.

At a GPU worker's start `choose_engine` trains a few seconds of each candidate on the worker's own
data, at the study's shape (width, batch size, precision): one plain trial, K trials side by side
(multi) and, where the study's trials can share a group, K trials fused; the figure is aggregate
training images per second, each against the plain trial of the same run. It keeps the fastest,
but only where it beats plain by AUTO_MARGIN: auto is never slower than plain beyond the noise of
one short measurement. The choice is cached per device, torch version and shape, so later workers
and runs start at once.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from data import Dataset
from data.sources import cache_dir

from .config import TrainConfig

MULTI_KS = (2, 4, 8)  # trials side by side tried; each holds a whole network and optimizer state
FUSED_KS = (4, 16)  # trials fused tried, where the study's trials can share a group
AUTO_STEPS = 16  # steps per timed epoch, after one untimed epoch of the same length
AUTO_ROUNDS = 2  # rounds over every candidate, alternating; each candidate's best round counts
AUTO_MARGIN = 1.1  # a candidate must beat plain by 10% to be chosen over it
CACHE_FILE = "engines.json"
MAX_K = 256  # trials one worker trains at once, at most (sweep's --engine ceiling)


def _subset(data: Dataset, n: int) -> Dataset:
    """The first n training images (repeated where there are fewer), with a token val split."""
    idx = np.arange(n) % max(1, len(data.x_train))
    tiny = slice(0, 8)
    return Dataset(data.name, data.source, data.format, data.content_hash, "auto", data.x_train[idx], data.y_train[idx],
                   data.x_val[tiny], data.y_val[tiny], data.x_test[:0], data.y_test[:0])


def cache_key(device_name: str, torch_version: str, probe: TrainConfig, fusable: bool) -> str:
    return (f"{device_name} | torch {torch_version} | width {probe.width:g} | batch {probe.batch_size} | "
            f"{probe.optimizer} | {probe.precision} | fusable {fusable}")


def _measure(engine: str, k: int, data: Dataset, probe: TrainConfig, device: str) -> float:
    """Aggregate training images/s of the timed (second) epoch; 0 where it ran out of memory."""
    import torch

    from .fused_train import train_fused
    from .multi_train import train_multi
    from .training import train

    configs = [TrainConfig(**{**probe.to_dict(), "epochs": 2, "seed": i, "lr": probe.lr * 0.9 ** i})
               for i in range(k)]
    try:
        if engine == "plain":
            return train(data, configs[0], device=device).history[-1]["images_per_s"]
        trainer = train_fused if engine == "fused" else train_multi
        return trainer(data, configs, device=device)[0].history[-1]["images_per_s"]
    except torch.cuda.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return 0.0


def usable(entry, fusable: bool) -> bool:
    """Whether a cached choice names an engine this worker can train with. The cache is a hint
    that anyone can edit or damage: an unknown engine, a K below 1 or of another type, or fused
    where the study's trials cannot fuse is ignored, measured again and replaced."""
    if not isinstance(entry, dict):
        return False
    engine, k = entry.get("engine"), entry.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        return False
    return (engine == "plain" and k == 1) or engine == "multi" or (engine == "fused" and fusable)


def choose_engine(data: Dataset, probe: TrainConfig, device: str, *, fusable: bool, steps: int = AUTO_STEPS,
                  use_cache: bool = True) -> dict:
    """{"engine", "k", "figures": {candidate: images/s}, "cached": bool} for the fastest engine."""
    import torch

    from .device import device_name, resolve_device

    dev = resolve_device(device)
    key = cache_key(device_name(dev), torch.__version__, probe, fusable)
    path = cache_dir() / CACHE_FILE
    cache = {}
    if use_cache:
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache, dict) and usable(cache.get(key), fusable):
            return {**cache[key], "cached": True}
    sample = _subset(data, steps * probe.batch_size)
    candidates = [("plain", 1), *(("multi", k) for k in MULTI_KS), *(("fused", k) for k in FUSED_KS if fusable)]
    t0 = time.perf_counter()
    figures: dict[str, float] = {}
    for _ in range(AUTO_ROUNDS):  # alternating: a busy moment of the device hurts every candidate alike
        for e, k in candidates:
            name = f"{e}:{k}" if e != "plain" else e
            figures[name] = max(figures.get(name, 0.0), _measure(e, k, sample, probe, str(dev)))
    plain = figures["plain"]
    best = max(figures, key=figures.get)
    if figures[best] < AUTO_MARGIN * plain:
        best = "plain"
    engine, _, k = best.partition(":")
    choice = {"engine": engine, "k": int(k or 1), "figures": {c: round(v, 1) for c, v in figures.items()},
              "measured_s": round(time.perf_counter() - t0, 1), "key": key}
    if use_cache:
        try:
            cache = cache if isinstance(cache, dict) else {}
            cache[key] = choice
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{CACHE_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)  # whole or not at all, whatever other workers write meanwhile
        except OSError:
            pass  # an unwritable cache costs the next worker a measurement, nothing more
    return {**choice, "cached": False}
