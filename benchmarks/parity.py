"""Accuracy is not traded for speed: the fast path against a plain fp32 run, same seeds.

    python -m benchmarks.parity [--device cuda] [--width 1.0] [--seeds 3]

Trains the same short runs (synthetic FER-shaped faces, Adam, 5 epochs) as plain fp32 without
channels_last or compilation, and as each fast engine setting the device offers (bf16 autocast,
channels_last on CUDA, torch.compile, CUDA graphs). Prints each setting's mean and std of the
last two epochs' val accuracy over the seeds and whether its mean is within 2.5 standard errors
of the plain one. tests/test_speed.py runs the CPU case of the same comparison in CI.
"""

from __future__ import annotations

import argparse
import math
import statistics

from data import load_dataset
from model import resolve_device, train


def late_acc(result) -> float:  # less jumpy than the last epoch alone
    return statistics.mean(h["val_acc"] for h in result.history[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=float, default=None, help="default: 1.0 on a GPU, 0.125 on a CPU")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    width = args.width or (1.0 if dev.type == "cuda" else 0.125)
    data = load_dataset("synthetic", n_images=args.images, seed=2)
    kw = dict(epochs=5, batch_size=32, lr=1e-3, optimizer="adam", width=width, device=str(dev))
    settings = {"plain fp32": dict(precision="fp32", channels_last=False),
                "bf16": dict(precision="bf16", channels_last=False)}
    if dev.type == "cuda":
        settings["bf16 + channels_last"] = dict(precision="bf16", channels_last=True)
    settings["bf16 + compile on"] = dict(precision="bf16", compile="on")
    if dev.type == "cuda":
        settings["bf16 + channels_last + cudagraphs"] = dict(precision="bf16", channels_last=True,
                                                             compile="cudagraphs")
    accs = {name: [late_acc(train(data, seed=s, **kw, **opts)) for s in range(args.seeds)]
            for name, opts in settings.items()}
    plain = accs["plain fp32"]
    print(f"device {dev}, width {width}, {args.images} synthetic images, seeds 0-{args.seeds - 1}")
    print("| setting | mean val acc | std | difference to plain | within 2.5 standard errors |")
    print("|---|---|---|---|---|")
    for name, a in accs.items():
        se = math.sqrt((statistics.variance(a) + statistics.variance(plain)) / len(a)) if len(a) > 1 else float("nan")
        diff = statistics.mean(a) - statistics.mean(plain)
        ok = "-" if name == "plain fp32" else ("yes" if abs(diff) <= 2.5 * se else "NO")
        print(f"| {name} | {statistics.mean(a):.2%} | {statistics.stdev(a) if len(a) > 1 else 0:.2%} | "
              f"{diff:+.2%} | {ok} |", flush=True)


if __name__ == "__main__":
    main()
