"""`sweep bench --pack/--fuse/--multi/--graph`: many trials on one device, against one plain trial.

Ways to train K trials at once, each measured as aggregate training images/s against one plain,
eager trial in the same run: K processes packed on the device (`run_pack`), K trials fused into
one network (`run_engine("fused", ...)`), K trials side by side in one process, a step each in
turn (`run_engine("multi", ...)`), and the same with each step a CUDA graph replay
(`run_engine("graph", ...)`). The engines are timed by model.engine_speed: whole epochs of every
member between device-wide syncs. The ratio is the result: these machines are shared.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field

from model import TrainConfig, check_compile, resolve_device, train
from model.device import device_name, use_bf16

from .bench import FER2013_TRAIN_IMAGES, bench_data, bench_dataset


# ---------------------------------------------------------------- K processes packed on one device


@dataclass
class PackRow:
    k: int  # trials training at once on the device, one process each
    threads: int  # torch threads per process
    aggregate_images_per_s: float  # all K together: images / (last end - first start)
    per_trial_images_per_s: list[float]  # each process's own figure over the same window
    speedup: float = 0.0  # aggregate against K = 1 (filled in at the end)


@dataclass
class PackResult:
    device: str
    device_name: str
    width: float
    batch_size: int
    steps: int
    epochs: int  # measured epochs of `steps` steps each, after one untimed epoch
    compile: str
    rows: list[PackRow] = field(default_factory=list)
    versions: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _pack_process(conn, barrier, steps: int, batch_size: int, width: float, device: str, compile: str,
                  threads: int, epochs: int, seed: int) -> None:
    import torch

    from data import equalize

    torch.set_num_threads(threads)
    raw, labels, name = bench_data(None, steps * batch_size, seed=seed)
    ds = bench_dataset(equalize(raw), labels, name)
    marks: list[float] = []

    def on_epoch(record: dict) -> bool:
        if record["epoch"] == 1:  # warm-up done: every process starts the measured epochs together
            barrier.wait()
        marks.append(time.monotonic())
        return False

    try:
        train(ds, epochs=1 + epochs, batch_size=batch_size, lr=0.01, optimizer="sgd", width=width, seed=seed,
              device=device, compile=compile, on_epoch=on_epoch)
        conn.send((marks[0], marks[-1], epochs * steps * batch_size))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        barrier.abort()
        conn.send(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def run_pack(ks: list[int], *, steps: int = 20, batch_size: int = 128, width: float = 1.0, device: str = "auto",
             compile: str = "off", epochs: int = 2, progress=None) -> PackResult:
    """Aggregate training images/s of K = each of `ks` trials trained at once on one device, one
    process each (as `sweep run --per-gpu K` packs them): the figure the --per-gpu default is chosen from."""
    import multiprocessing as mp

    from .errors import SweepError
    from .provenance import versions_line

    dev = resolve_device(device)
    check_compile(compile, dev)
    ctx = mp.get_context("spawn")  # a clean CUDA context per process, as the sweep's workers have
    cores = os.cpu_count() or 1
    out = PackResult(device=dev.type, device_name=device_name(dev), width=width, batch_size=batch_size,
                     steps=steps, epochs=epochs, compile=compile, versions=versions_line())
    for k in ks:
        threads = max(1, cores // k)
        barrier = ctx.Barrier(k)
        pipes, procs = [], []
        for i in range(k):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_pack_process, args=(child, barrier, steps, batch_size, width, str(dev),
                                                         compile, threads, epochs, i), daemon=True)
            p.start()
            child.close()
            pipes.append(parent)
            procs.append(p)
        results = []
        for parent, p in zip(pipes, procs):
            while not parent.poll(1) and p.is_alive():
                pass
            if parent.poll():
                results.append(parent.recv())
            else:  # died without a word: release the others from the barrier
                barrier.abort()
                p.join()
                results.append(f"a training process died (exit code {p.exitcode})")
        for p in procs:
            p.join()
        errors = [r for r in results if isinstance(r, str)]
        if errors:
            raise SweepError(f"packing K={k}: {errors[0]}")
        start, end = min(r[0] for r in results), max(r[1] for r in results)
        row = PackRow(k=k, threads=threads, aggregate_images_per_s=sum(r[2] for r in results) / (end - start),
                      per_trial_images_per_s=[r[2] / (r[1] - r[0]) for r in results])
        out.rows.append(row)
        if progress:
            progress(f"K={k}: {row.aggregate_images_per_s:.1f} images/s in all")
    base = out.rows[0].aggregate_images_per_s if out.rows and out.rows[0].k == 1 else None
    for row in out.rows:
        row.speedup = row.aggregate_images_per_s / base if base else 0.0
    return out


# ---------------------------------------------------------------- K trials in one process: fused or side by side


@dataclass
class EngineRow:
    k: int  # trials trained at once (k = 0: one plain, eager trial, the baseline)
    aggregate_images_per_s: float  # training images of all k trials per second (median of repeats)
    repeats: list[float]
    speedup: float  # against the plain trial, measured in the same run
    trial_epoch_s: float  # a FER2013 epoch's cost per trial: 28,709 images at its share of the device
    join_s: float = 0.0  # what a trial joining costs the engine (median): construction, capture, regroup


@dataclass
class EngineResult:
    engine: str  # fused | multi | graph
    device: str
    device_name: str
    width: float
    batch_size: int
    steps: int
    compile: str
    precision: str
    rows: list[EngineRow] = field(default_factory=list)
    versions: str = ""
    window_s: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_engine(engine: str, ks: list[int], *, steps: int = 20, batch_size: int = 128, width: float = 1.0,
               repeats: int = 3, device: str = "auto", compile: str = "off", window_s: float = 1.0,
               progress=None) -> EngineResult:
    """Aggregate training images/s of k trials trained by `engine`, for each k in `ks`, against
    one plain trial in the same run; the members differ in lr and seed, as a sweep's do. Each
    figure times whole epochs of `steps` steps of every member for at least `window_s` seconds
    after an untimed one; the median over `repeats` rounds that take every k in turn."""
    from data import equalize
    from model.engine_speed import measure

    from .provenance import versions_line

    dev = resolve_device(device)
    check_compile(compile, dev)
    raw, labels, data_name = bench_data(None, steps * batch_size)
    ds = bench_dataset(equalize(raw), labels, data_name)
    precision_used = "bf16" if use_bf16(dev, "auto") else "fp32"
    probe = TrainConfig(epochs=2, batch_size=batch_size, optimizer="sgd", momentum=0.9, width=width, lr=0.01)
    speeds: dict[int, list] = {k: [] for k in [0, *ks]}
    for r in range(repeats):
        for k in speeds:
            speed = measure("plain" if k == 0 else engine, max(1, k), ds, probe, str(dev), window_s=window_s,
                            compile=compile)
            speeds[k].append(speed)
            if progress:
                progress(f"round {r + 1}/{repeats}: {'plain' if k == 0 else f'{engine} k={k}'} "
                         f"{speed.images_per_s:.1f} images/s")
    out = EngineResult(engine=engine, device=dev.type, device_name=device_name(dev), width=width,
                       batch_size=batch_size, steps=steps, compile=compile, precision=precision_used,
                       versions=versions_line(), window_s=window_s)
    plain = statistics.median(s.images_per_s for s in speeds[0])
    for k, values in speeds.items():
        agg = statistics.median(s.images_per_s for s in values)
        out.rows.append(EngineRow(k=k, aggregate_images_per_s=agg, repeats=[s.images_per_s for s in values],
                                  speedup=agg / plain if plain > 0 else 0.0,
                                  trial_epoch_s=FER2013_TRAIN_IMAGES / agg if agg > 0 else float("inf"),
                                  join_s=statistics.median(s.join_s for s in values)))
    return out


def format_engine(r: EngineResult) -> str:
    lines = [f"device      {r.device_name}",
             f"workload    width {r.width} network, batch {r.batch_size}, {r.steps} steps per epoch, "
             f"{r.precision}, compile {r.compile}; median of {len(r.rows[0].repeats)} rounds of >= {r.window_s:g} s",
             "trials            aggregate images/s  vs one plain trial  s per FER2013 epoch per trial  join s"]
    for row in r.rows:
        label = "1 plain" if row.k == 0 else f"{row.k} {r.engine}"
        lines.append(f"{label:<16} {row.aggregate_images_per_s:19.1f}  {row.speedup:17.2f}x  "
                     f"{row.trial_epoch_s:29.2f}  {row.join_s:6.2f}")
    return "\n".join(lines)


def format_pack(r: PackResult) -> str:
    lines = [f"device      {r.device_name}",
             f"workload    width {r.width} network, batch {r.batch_size}, {r.epochs} x {r.steps} steps per trial "
             f"after one untimed epoch, compile {r.compile}",
             "K  threads  aggregate images/s  per trial images/s  vs K=1"]
    for row in r.rows:
        per = statistics.mean(row.per_trial_images_per_s)
        vs = f"{row.speedup:.2f}x" if row.speedup else "-"
        lines.append(f"{row.k:<2} {row.threads:>7}  {row.aggregate_images_per_s:18.1f}  {per:18.1f}  {vs:>6}")
    return "\n".join(lines)


