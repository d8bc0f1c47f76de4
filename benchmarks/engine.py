"""Which engine options pay on this machine: bf16 autocast and channels_last, at two widths.

    python -m benchmarks.engine

Training images/s of `train()` over one epoch at batch 128, for each of bf16 / fp32 with and
without channels_last, alternating, median of 2 repeats, on synthetic FER-shaped images.
"""

from __future__ import annotations

import statistics

import numpy as np

from data import equalize, make_synthetic
from data.splits import Dataset
from model import train

CASES = [("bf16", False), ("bf16", True), ("fp32", False), ("fp32", True)]


def main() -> None:
    print("| network | " + " | ".join(f"{p}{' + channels_last' if cl else ''}" for p, cl in CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    for width, steps in ((1.0, 10), (0.125, 60)):
        src = make_synthetic(steps * 128, 0)
        x, y = equalize(src.images), src.labels.astype(np.int64)
        ds = Dataset("bench", "synthetic", "bench", "", "bench", x, y, x[:8], y[:8], x[:0], y[:0])
        speeds: dict = {}
        for _ in range(2):
            for precision, cl in CASES:
                r = train(ds, epochs=1, batch_size=128, width=width, precision=precision, channels_last=cl, lr=0.01)
                speeds.setdefault((precision, cl), []).append(r.images_per_s)
        print(f"| width {width} | " + " | ".join(f"{statistics.median(speeds[c]):,.0f}" for c in CASES) + " |",
              flush=True)


if __name__ == "__main__":
    main()
