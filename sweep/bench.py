"""`sweep bench`: the project's trainer against the paper-style pipeline, in one run.

Both train the same network for the same number of steps at the same batch size on the same
FER2013-shaped images; the two alternate, several repeats, and each figure is the median
images/s of its repeats. The ratio, not either absolute figure, is the result: these machines are
shared and noisy.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from data import Dataset, make_synthetic
from data.classes import USAGE_CODES
from model import TrainConfig, check_compile, forward_flops, resolve_device, train, train_fused
from model.device import device_name, use_bf16
from model.reference import reference_train_speed, to_pixel_strings

FER2013_TRAIN_IMAGES = 28_709
# Dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets; CPUs are left unknown.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


@dataclass
class BenchResult:
    device: str
    device_name: str
    width: float
    batch_size: int
    steps: int
    repeats: int
    data: str
    trainer_precision: str
    compile: str  # the trainer's engine option: off | on | cudagraphs
    warmup_steps: int  # untimed steps before each measurement (start-up, compilation)
    trainer_images_per_s: list[float]
    reference_images_per_s: list[float]
    trainer_median: float
    reference_median: float
    ratio: float
    trainer_epoch_s: float  # one FER2013 training epoch (28,709 images) at the trainer's median
    reference_epoch_s: float
    trainer_tflops: float  # achieved: 3 x forward FLOPs (forward + backward) per image
    peak_tflops: float | None
    versions: str
    cudagraph_skips: int = 0  # steps where torch.compile fell back from CUDA graphs (it says why in its log)

    def to_dict(self) -> dict:
        return asdict(self)


def _peak(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def bench_data(source: str | None, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """`n` equalised-or-raw images and labels: raw images feed the reference (it equalises them
    itself), and the trainer gets them equalised, as `load_dataset` would."""
    if source is None or source == "synthetic":
        src = make_synthetic(max(n, 50), seed=seed)
        return src.images[:n], src.labels[:n].astype(np.int64), "synthetic"
    from data import read_source

    src = read_source(source)
    rows = np.flatnonzero(src.usage == USAGE_CODES["Training"])
    if len(rows) < n:
        rows = np.arange(len(src.labels))
    rows = rows[:n]
    return src.images[rows], src.labels[rows].astype(np.int64), src.path


def bench_dataset(images: np.ndarray, labels: np.ndarray, data_name: str) -> Dataset:
    """Equalised images to train on for speed, with a token validation split and no test."""
    tiny = slice(0, 8)  # validation is not what is measured: keep it negligible
    return Dataset("bench", data_name, "bench", "", "bench", images, labels, images[tiny], labels[tiny],
                   images[:0], labels[:0])


def needs_warmup(dev, compile: str) -> bool:
    """A GPU's first steps pay for library start-up and a compiled model for its compilation: on
    those, one untimed epoch of the same length comes first. The CPU needs none."""
    return dev.type == "cuda" or compile != "off"


def run_bench(*, steps: int = 20, batch_size: int = 128, width: float = 1.0, repeats: int = 3,
              device: str = "auto", data: str | None = None, precision: str = "auto", compile: str = "off",
              progress=None) -> BenchResult:
    from data import equalize

    from .provenance import versions_line

    dev = resolve_device(device)
    check_compile(compile, dev)
    warmup = steps if needs_warmup(dev, compile) else 0
    n = steps * batch_size
    raw, labels, data_name = bench_data(data, n + warmup * batch_size)
    ds = bench_dataset(equalize(raw[:n]), labels[:n], data_name)
    pixels = to_pixel_strings(raw)
    ours, ref = [], []
    precision_used = "bf16" if use_bf16(dev, precision) else "fp32"
    skips_before = _cudagraph_skips()
    for r in range(repeats):
        # The trainer's warm-up is a first epoch of the same steps; its last epoch is the figure.
        result = train(ds, epochs=2 if warmup else 1, batch_size=batch_size, lr=0.01, optimizer="sgd", width=width,
                       seed=r, device=str(dev), precision=precision, compile=compile)
        ours.append(result.history[-1]["images_per_s"])
        if progress:
            progress(f"repeat {r + 1}/{repeats}: trainer {ours[-1]:.1f} images/s")
        ref.append(reference_train_speed(pixels, labels, steps=steps, batch_size=batch_size, width=width,
                                         seed=r, device=str(dev), warmup_steps=warmup))
        if progress:
            progress(f"repeat {r + 1}/{repeats}: reference {ref[-1]:.1f} images/s")
    t, b = statistics.median(ours), statistics.median(ref)
    name = device_name(dev)
    return BenchResult(
        device=dev.type, device_name=name if dev.type != "cpu" else f"{name}, {platform.processor() or ''}".rstrip(", "),
        width=width, batch_size=batch_size, steps=steps, repeats=repeats, data=data_name,
        trainer_precision=precision_used, compile=compile, warmup_steps=warmup,
        trainer_images_per_s=ours, reference_images_per_s=ref,
        trainer_median=t, reference_median=b, ratio=t / b,
        trainer_epoch_s=FER2013_TRAIN_IMAGES / t, reference_epoch_s=FER2013_TRAIN_IMAGES / b,
        trainer_tflops=t * 3 * forward_flops(width) / 1e12, peak_tflops=_peak(name),
        versions=versions_line(), cudagraph_skips=_cudagraph_skips() - skips_before,
    )


def _cudagraph_skips() -> int:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["inductor"].get("cudagraph_skips", 0))


# ---------------------------------------------------------------- packing K trials on one device


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


# ---------------------------------------------------------------- K trials fused into one network


@dataclass
class FuseRow:
    k: int  # trials fused into one network (k = 0: one plain, eager trial, the baseline)
    aggregate_images_per_s: float  # training images of all k trials per second (median of repeats)
    repeats: list[float]
    speedup: float  # against the plain trial, measured in the same run
    trial_epoch_s: float  # a FER2013 epoch's cost per trial: 28,709 images at its share of the group


@dataclass
class FuseResult:
    device: str
    device_name: str
    width: float
    batch_size: int
    steps: int
    compile: str
    precision: str
    rows: list[FuseRow] = field(default_factory=list)
    versions: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def run_fuse(ks: list[int], *, steps: int = 20, batch_size: int = 128, width: float = 1.0, repeats: int = 3,
             device: str = "auto", compile: str = "off", progress=None) -> FuseResult:
    """Aggregate training images/s of k trials fused into one network, for each k in `ks`,
    against one plain trial (`train`) in the same run; the members differ in lr and seed, as a
    sweep's do. Each figure is the last of two epochs of `steps` steps (the first warms up),
    median over `repeats` rounds that take every k in turn."""
    from data import equalize

    from .provenance import versions_line

    dev = resolve_device(device)
    check_compile(compile, dev)
    raw, labels, data_name = bench_data(None, steps * batch_size)
    ds = bench_dataset(equalize(raw), labels, data_name)
    precision_used = "bf16" if use_bf16(dev, "auto") else "fp32"
    base = dict(epochs=2, batch_size=batch_size, optimizer="sgd", momentum=0.9, width=width)
    figures: dict[int, list[float]] = {k: [] for k in [0, *ks]}
    for r in range(repeats):
        for k in figures:
            if k == 0:
                result = train(ds, TrainConfig(lr=0.01, seed=r, **base), device=str(dev), compile=compile)
                figures[k].append(result.history[-1]["images_per_s"])
            else:
                configs = [TrainConfig(lr=0.01 * 0.8 ** i, seed=r * 1000 + i, **base) for i in range(k)]
                results = train_fused(ds, configs, device=str(dev), compile=compile)
                figures[k].append(results[0].history[-1]["images_per_s"])  # the group's, all members together
            if progress:
                progress(f"round {r + 1}/{repeats}: {'plain' if k == 0 else f'fused k={k}'} "
                         f"{figures[k][-1]:.1f} images/s")
    out = FuseResult(device=dev.type, device_name=device_name(dev), width=width, batch_size=batch_size, steps=steps,
                     compile=compile, precision=precision_used, versions=versions_line())
    plain = statistics.median(figures[0])
    for k, values in figures.items():
        agg = statistics.median(values)
        out.rows.append(FuseRow(k=k, aggregate_images_per_s=agg, repeats=values, speedup=agg / plain,
                                trial_epoch_s=FER2013_TRAIN_IMAGES / agg))
    return out


def format_fuse(r: FuseResult) -> str:
    lines = [f"device      {r.device_name}",
             f"workload    width {r.width} network, batch {r.batch_size}, {r.steps} steps per epoch, "
             f"{r.precision}, compile {r.compile}; median of {len(r.rows[0].repeats)} rounds",
             "trials            aggregate images/s  vs one plain trial  s per FER2013 epoch per trial"]
    for row in r.rows:
        label = "1 plain" if row.k == 0 else f"{row.k} fused"
        lines.append(f"{label:<16} {row.aggregate_images_per_s:19.1f}  {row.speedup:17.2f}x  {row.trial_epoch_s:29.2f}")
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


def format_bench(r: BenchResult) -> str:
    peak = f" ({100 * r.trainer_tflops / r.peak_tflops:.1f}% of {r.peak_tflops:.0f} peak)" if r.peak_tflops else \
        " (peak unknown for this device)"
    return "\n".join([
        f"device      {r.device_name}",
        f"workload    width {r.width} network, batch {r.batch_size}, {r.steps} steps x {r.repeats} repeats, data {r.data}",
        f"trainer     {r.trainer_median:10.1f} images/s  ({r.trainer_precision}, compile {r.compile}"
        + (f", {r.warmup_steps} warm-up steps" if r.warmup_steps else "")
        + (f", CUDA graphs skipped {r.cudagraph_skips} times" if r.cudagraph_skips else "") + "; repeats: "
        + ", ".join(f"{x:.1f}" for x in r.trainer_images_per_s) + ")",
        f"reference   {r.reference_median:10.1f} images/s  (paper-style Dataset + DataLoader, fp32; repeats: "
        + ", ".join(f"{x:.1f}" for x in r.reference_images_per_s) + ")",
        f"ratio       {r.ratio:10.2f}x",
        f"epoch       {r.trainer_epoch_s:10.1f} s per FER2013 epoch (reference {r.reference_epoch_s:.1f} s)",
        f"achieved    {r.trainer_tflops:10.3f} TFLOP/s{peak}",
    ])
