"""Where a training step's time goes: torch.profiler over plain, fused and side-by-side steps.

    python -m benchmarks.profile [--device auto] [--width 1.0] [--steps 20] [--json FILE]

For each case (a plain trial at batch 32 and 128, one and four graphed trials, 16 trials fused,
4 trials side by side) it trains one untimed epoch of `--steps` steps, then one timed epoch (no
profiler: the figure), then one profiled epoch, and prints:

- images/s of the timed epoch, against the plain batch-128 trial measured in the same run;
- device busy: the kernels' summed time (in the profiled epoch) over the timed epoch's wall time, counting the device's
  own events only (a CPU operator carries its kernels' time too: summing both counted every
  kernel twice). Far below 1, the device waits for the host to launch work (launch-bound: CUDA
  graphs and fewer, larger kernels pay); near 1, the kernels themselves are the cost (faster
  kernels, layouts and precisions pay). Kernels of different streams that overlap can sum past 1;
- the top operators by device time (CUDA) or by CPU time (a CPU run, where host and device are one).

On CUDA it also times the plain batch-128 trial with cuDNN's autotuner (`cudnn.benchmark`) on,
against off, in the same run. On a CPU with a tiny width it runs in seconds: the suite runs it so.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from data import equalize
from model import TrainConfig, resolve_device
from model.engine_speed import Engine
from sweep.bench import bench_data, bench_dataset

# (engine, batch size, trials at once)
CASES = [("plain", 32, 1), ("plain", 128, 1), ("graph", 128, 1), ("graph", 128, 4), ("fused", 128, 16),
         ("multi", 128, 4)]
TOP = 12  # operators listed per case


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_events(events) -> list:
    """The device's own events (kernels, memory copies): a CPU operator's `self_device_time_total`
    is its kernels' time, which the kernels' own events carry again."""
    from torch.autograd import DeviceType

    return [e for e in events if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU]


def _device_us(e) -> float:
    return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))


def device_busy_s(events) -> float:
    """Seconds of device work in a profile: its device events' own time, each counted once."""
    return sum(_device_us(e) for e in device_events(events)) / 1e6


def profile_case(engine: str, batch: int, k: int, dev: torch.device, steps: int, width: float) -> dict:
    raw, labels, name = bench_data(None, steps * batch)
    ds = bench_dataset(equalize(raw), labels, name)
    runner = Engine(engine, k, ds, TrainConfig(batch_size=batch, lr=0.01, optimizer="sgd", momentum=0.9, width=width),
                    str(dev), "off")
    epoch, images = runner.epoch, runner.images_per_epoch()
    epoch()  # warm-up: library start-up, allocator, autotuning, graph capture
    _sync(dev)
    t0 = time.perf_counter()
    epoch()
    _sync(dev)
    wall_s = time.perf_counter() - t0
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        epoch()
        _sync(dev)
    runner.close()
    events = prof.key_averages()
    on_device = dev.type == "cuda"
    if on_device:
        events, cost = device_events(events), _device_us
    else:
        cost = lambda e: float(e.self_cpu_time_total)  # noqa: E731 - host and device are one
    total_us = sum(cost(e) for e in events)
    top = sorted(events, key=cost, reverse=True)[:TOP]
    return {
        "case": f"{engine} x{k}, batch {batch}" if k > 1 else f"plain, batch {batch}",
        "engine": engine, "batch_size": batch, "k": k, "steps": steps,
        "images_per_s": images / wall_s,
        "step_ms": 1000 * wall_s / steps,
        "device_busy": device_busy_s(events) / wall_s if on_device else None,
        "top": [{"op": e.key, "ms": cost(e) / 1000, "share": cost(e) / total_us if total_us else 0.0,
                 "calls": e.count} for e in top],
    }


def cudnn_autotune(dev: torch.device, steps: int, width: float) -> dict | None:
    """images/s of the plain batch-128 trial with cudnn.benchmark off and on, in one run."""
    if dev.type != "cuda":
        return None
    from model import device as device_module

    out = {}
    for flag in (False, True, False, True):  # alternated: the second pair checks the first
        device_module.AUTOTUNE = flag  # what the trainers set cudnn.benchmark to
        out.setdefault(flag, []).append(profile_case("plain", 128, 1, dev, steps, width)["images_per_s"])
    device_module.AUTOTUNE = True
    return {"off": max(out[False]), "on": max(out[True]), "ratio": max(out[True]) / max(out[False])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--cases", default=",".join(f"{e}:{b}:{k}" for e, b, k in CASES),
                   help="engine:batch:k,... (default: the four the docs report)")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    cases = [(e, int(b), int(k)) for e, b, k in (c.split(":") for c in args.cases.split(","))]
    results = [profile_case(e, b, k, dev, args.steps, args.width) for e, b, k in cases]
    base = next((r["images_per_s"] for r in results if r["engine"] == "plain" and r["batch_size"] == 128),
                results[0]["images_per_s"])
    from sweep.provenance import git_commit, versions_line

    report = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "width": args.width,
              "versions": versions_line(), "git_commit": git_commit(), "cases": results,
              "cudnn_benchmark": cudnn_autotune(dev, args.steps, args.width)}
    print(f"device {report['device']}, width {args.width}, {args.steps} steps per epoch; {report['versions']}")
    print("| case | images/s | vs plain batch 128 | ms per step | device busy |")
    print("|---|---|---|---|---|")
    for r in results:
        busy = f"{r['device_busy']:.0%}" if r["device_busy"] is not None else "n/a (CPU)"
        print(f"| {r['case']} | {r['images_per_s']:,.0f} | {r['images_per_s'] / base:.2f}x | {r['step_ms']:.2f} | {busy} |")
    for r in results:
        print(f"\n{r['case']}: top operators by {'device' if dev.type == 'cuda' else 'CPU'} time")
        print("| operator | ms | share | calls |")
        print("|---|---|---|---|")
        for t in r["top"]:
            print(f"| `{t['op'][:70]}` | {t['ms']:.2f} | {t['share']:.1%} | {t['calls']} |")
    if report["cudnn_benchmark"]:
        c = report["cudnn_benchmark"]
        print(f"\ncudnn.benchmark, plain batch 128: off {c['off']:,.0f}, on {c['on']:,.0f} images/s ({c['ratio']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
