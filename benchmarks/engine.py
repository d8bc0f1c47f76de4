"""Which engine options pay on this machine: bf16 autocast, channels_last and torch.compile, at two widths.

    python -m benchmarks.engine [--device cuda]

Training images/s of `train()` at batch 128 for each option set, on synthetic FER-shaped images.
Each run trains two epochs of the same steps and the second is the figure, so one-off costs
(compilation, a GPU's library start-up) stay out of it; a compiled case gets one untimed run
first, as the first trial in a sweep worker pays it. Cases alternate; median of 2 repeats.
On a GPU the `cudagraphs` case is added.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from data import equalize, make_synthetic
from model import resolve_device, train
from sweep.bench import bench_dataset

# (precision, channels_last, compile)
CASES = [("bf16", False, "off"), ("bf16", True, "off"), ("fp32", False, "off"), ("fp32", True, "off"),
         ("bf16", False, "on")]
GPU_CASES = [("bf16", True, "on"), ("bf16", True, "cudagraphs")]


def label(case) -> str:
    precision, cl, compile = case
    return precision + (" + channels_last" if cl else "") + ("" if compile == "off" else f" + compile {compile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    cases = CASES + (GPU_CASES if dev.type == "cuda" else [])
    print(f"device: {dev}")
    print("| network | " + " | ".join(label(c) for c in cases) + " |")
    print("|---|" + "---|" * len(cases))
    widths = ((1.0, 10), (0.125, 60)) if dev.type == "cpu" else ((1.0, 100), (0.125, 100))
    for width, steps in widths:
        src = make_synthetic(steps * 128, 0)
        ds = bench_dataset(equalize(src.images), src.labels.astype(np.int64), "synthetic")

        def run(case):
            precision, cl, compile = case
            return train(ds, epochs=2, batch_size=128, width=width, precision=precision, channels_last=cl,
                         compile=compile, lr=0.01, device=str(dev))

        for case in cases:
            if case[2] != "off":
                run(case)  # compilation, once per process
        speeds: dict = {}
        for _ in range(args.repeats):
            for case in cases:
                speeds.setdefault(case, []).append(run(case).history[-1]["images_per_s"])
        print(f"| width {width} | " + " | ".join(f"{statistics.median(speeds[c]):,.0f}" for c in cases) + " |",
              flush=True)


if __name__ == "__main__":
    main()
