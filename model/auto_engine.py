"""`--engine auto`: which engine trains a study's trials fastest on this GPU, measured.

At a GPU worker's start `choose_engine` measures each candidate on the worker's own data at the
study's shape (width, batch size, optimizer, precision; model.engine_speed): one plain trial,
graph at K = 1, 2, 4, 8, multi at K = 2, 4 and, where the study's trials can share a group, fused
at K = 4, 16. Each figure is aggregate training images/s over windows of at least a second, the
median of rounds that alternate the candidates (a busy moment hurts every candidate alike, and no
lucky round wins), with what each trial's joining costs the engine charged at the study's trial
length. It keeps the fastest only where it beats plain by AUTO_MARGIN.

One worker per GPU measures, under a lock; the others wait and read its choice from the cache,
which is keyed by the GPU, torch, this code's version, the host CPU and the shape. A cache entry
that is not a choice this worker can train with is ignored, measured again and replaced.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

from data import Dataset
from data.sources import cache_dir

from .config import TrainConfig

GRAPH_KS = (1, 2, 4, 8)  # trials side by side, each step a CUDA graph replay
MULTI_KS = (2, 4)  # trials side by side, eager: each holds a whole network and optimizer state
FUSED_KS = (4, 16)  # trials fused, where the study's trials can share a group
AUTO_STEPS = 16  # steps per measured epoch
AUTO_WINDOW_S = 1.0  # timed seconds per candidate and round, at least
AUTO_ROUNDS = 3  # rounds over every candidate, alternating; each candidate's median counts
AUTO_MARGIN = 1.1  # a candidate must beat plain by 10% to be chosen over it
CACHE_FILE = "engines.json"
MAX_K = 256  # trials one worker trains at once, at most (sweep's --engine ceiling)


def candidates(fusable: bool) -> list[tuple[str, int]]:
    return [("plain", 1), *(("graph", k) for k in GRAPH_KS), *(("multi", k) for k in MULTI_KS),
            *(("fused", k) for k in FUSED_KS if fusable)]


@functools.cache
def code_version() -> str:
    """This package's engine code, by content: a changed engine measures again."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@functools.cache
def host_cpu() -> str:
    """The host's CPU model: it issues the kernels, so it sets the pace of launch-bound steps."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(device_name: str, torch_version: str, probe: TrainConfig, fusable: bool) -> str:
    return (f"{device_name} | torch {torch_version} | code {code_version()} | {host_cpu()} | "
            f"width {probe.width:g} | batch {probe.batch_size} | {probe.optimizer} | {probe.precision} | "
            f"epochs {probe.epochs} | fusable {fusable}")


def usable(entry, fusable: bool) -> bool:
    """Whether a cached choice names an engine this worker can train with. The cache is a hint
    that anyone can edit or damage: an unknown engine, a K below 1 or of another type, or fused
    where the study's trials cannot fuse is ignored, measured again and replaced."""
    if not isinstance(entry, dict):
        return False
    engine, k = entry.get("engine"), entry.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        return False
    return (engine == "plain" and k == 1) or engine in ("graph", "multi") or (engine == "fused" and fusable)


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


@contextlib.contextmanager
def _gpu_lock(device_id: str):
    """One measurement per GPU at a time: other workers on it wait, then read the cache."""
    try:
        import fcntl
    except ImportError:  # not POSIX: each worker measures for itself
        yield
        return
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(device_id.encode()).hexdigest()[:16]
    with open(folder / f"engines.{name}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _measure(engine: str, k: int, data: Dataset, probe: TrainConfig, device: str):
    from .engine_speed import measure

    return measure(engine, k, data, probe, device, window_s=AUTO_WINDOW_S)


def choose_engine(data: Dataset, probe: TrainConfig, device: str, *, fusable: bool, steps: int = AUTO_STEPS,
                  use_cache: bool = True) -> dict:
    """{"engine", "k", "figures": {candidate: images/s a sweep sees}, "cached": bool}."""
    import torch

    from .device import device_name, resolve_device
    from .engine_speed import effective, subset

    dev = resolve_device(device)
    key = cache_key(device_name(dev), torch.__version__, probe, fusable)
    path = cache_dir() / CACHE_FILE
    gpu = f"{device_name(dev)} {dev}"
    if dev.type == "cuda":
        with contextlib.suppress(Exception):
            gpu = str(torch.cuda.get_device_properties(dev).uuid)
    with _gpu_lock(gpu) if use_cache else contextlib.nullcontext():
        if use_cache:
            cached = _read_cache(path).get(key)
            if usable(cached, fusable):
                return {**cached, "cached": True}
        sample = subset(data, steps * probe.batch_size)
        trial_images = probe.epochs * len(data.x_train)  # what each trial trains in the study
        t0 = time.perf_counter()
        rounds: dict[str, list[float]] = {}
        for _ in range(AUTO_ROUNDS):  # alternating: a busy moment of the device hurts every candidate alike
            for e, k in candidates(fusable):
                name = f"{e}:{k}" if e != "plain" else e
                rounds.setdefault(name, []).append(effective(_measure(e, k, sample, probe, str(dev)), k, trial_images))
        figures = {c: statistics.median(v) for c, v in rounds.items()}
        plain = figures["plain"]
        best = max(figures, key=figures.get)
        if figures[best] < AUTO_MARGIN * plain:
            best = "plain"
        engine, _, k = best.partition(":")
        choice = {"engine": engine, "k": int(k or 1), "figures": {c: round(v, 1) for c, v in figures.items()},
                  "measured_s": round(time.perf_counter() - t0, 1), "key": key}
        if use_cache:
            try:
                cache = _read_cache(path)  # what other workers wrote meanwhile stays
                cache[key] = choice
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{CACHE_FILE}.{os.getpid()}")
                tmp.write_text(json.dumps(cache, indent=1))
                os.replace(tmp, path)  # whole or not at all
            except OSError:
                pass  # an unwritable cache costs the next worker a measurement, nothing more
    return {**choice, "cached": False}
