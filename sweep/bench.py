"""`sweep bench`: the project's trainer against the paper-style pipeline, in one run (many trials
on one device: sweep/bench_many.py).

Both train the same network for the same number of steps at the same batch size on the same
FER2013-shaped images; the two alternate, several repeats, and each figure is the median
images/s of its repeats. The ratio, not either absolute figure, is the result: these machines are
shared and noisy.
"""

from __future__ import annotations

import platform
import statistics
from dataclasses import asdict, dataclass

import numpy as np

from data import Dataset, make_synthetic
from data.classes import USAGE_CODES
from model import check_compile, forward_flops, resolve_device, train
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
