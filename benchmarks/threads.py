"""A CPU worker's threads: torch threads and OpenMP's wait policy, quiet and beside busy processes.

    python -m benchmarks.threads [--repeats 5] [--epochs 2] [--n-images 3000] [--busy N] [--spin N ...]
                                 [--loads quiet,busy] [--sweep TRIALS] [--json] [--verbose]

Each condition trains what a worker of the `quick` study trains (`model.train` on the synthetic
faces, width 0.125, batch 64, SGD) in a fresh process, because OpenMP reads its settings once, when
torch loads it. Conditions: torch threads = usable cores with OpenMP's default wait policy (the
baseline), the same with `OMP_WAIT_POLICY=PASSIVE` (a waiting thread sleeps at once), the same with
a short spin (`GOMP_SPINCOUNT`, libgomp's spin before sleeping; 300,000 by default), and 1 thread.
torch's CPU build loads GNU OpenMP (libgomp; the table says which runtime the children loaded), so
Intel OpenMP's KMP_BLOCKTIME does not apply.

Each condition runs quiet and beside `--busy` busy processes (pure-Python loops, as many as the
cores by default) that the benchmark starts before and kills after. Conditions alternate within a
round, quiet and busy rounds alternate, and each figure is the median of `repeats`: wall seconds
and CPU seconds (the child's own resource usage, all its threads) of the timed training, after an
untimed warm-up on a few images, and each as a ratio against the baseline under the same load.

`--sweep TRIALS` adds the policy as the workers get it: `sweep run --trials TRIALS --study quick`
(one worker, a new storage each time) as shipped, against the same run with libgomp's default
spelled out (`GOMP_SPINCOUNT=300000`, which a user's setting keeps: the workers' waiting before the
policy), under the same loads; wall seconds, and CPU seconds of the run and every process it
started. Equal figures there would mean the policy never reached the workers' OpenMP.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What OpenMP runtimes read at start-up: cleared in every child, so each condition sets only its own.
OPENMP_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "OMP_DISPLAY_ENV")
BASELINE = "default"
DEFAULT_SPINS = [1_000, 10_000]  # GOMP_SPINCOUNT values tried between PASSIVE (0) and libgomp's 300,000
LIBGOMP_DEFAULT_SPIN = "300000"
WORKLOAD = dict(width=0.125, batch_size=64, lr=0.01, optimizer="sgd", seed=0, device="cpu")  # a quick-study trial
WARMUP_IMAGES = 240  # the untimed first training: first-use costs (the optimizer's compiler-stack import)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def conditions(cores: int, spins: list[int]) -> dict[str, tuple[int, dict]]:
    """name -> (torch threads, OpenMP environment)."""
    out = {BASELINE: (cores, {}), "PASSIVE": (cores, {"OMP_WAIT_POLICY": "PASSIVE"})}
    for n in spins:
        out[f"GOMP_SPINCOUNT={n}"] = (cores, {"GOMP_SPINCOUNT": str(n)})
    out["1 thread"] = (1, {})
    return out


def child(spec: dict) -> dict:
    """In the fresh process: the warm-up, then the timed training; wall and CPU seconds of the latter."""
    import resource

    import torch

    from data import load_dataset
    from model import train

    torch.set_num_threads(spec["threads"])
    train(load_dataset("synthetic", n_images=WARMUP_IMAGES), epochs=1, **WORKLOAD)
    data = load_dataset("synthetic", n_images=spec["n_images"])

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
        return r.ru_utime + r.ru_stime

    cpu0, t0 = cpu_s(), time.perf_counter()
    train(data, epochs=spec["epochs"], **WORKLOAD)
    wall_s, used_s = time.perf_counter() - t0, cpu_s() - cpu0
    return {"wall_s": wall_s, "cpu_s": used_s, "threads": torch.get_num_threads(), "openmp": _openmp_runtime()}


def _openmp_runtime() -> str:
    """The OpenMP library this process loaded (libgomp, libiomp5, libomp), from its memory map."""
    try:
        names = {Path(line.split()[-1]).name for line in open("/proc/self/maps") if "omp" in line.split()[-1]}
    except OSError:
        return "unknown"
    return ", ".join(sorted(n for n in names if n.startswith("lib"))) or "none found"


def run_child(threads: int, env: dict, epochs: int, n_images: int) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV}
    spec = json.dumps({"threads": threads, "epochs": epochs, "n_images": n_images})
    code = f"import json; from benchmarks.threads import child; print(json.dumps(child({spec})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_busy(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.3)  # running before the training starts
    return procs


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run_sweep(env: dict, trials: int, folder: str, i: int, study: str = "quick") -> dict:
    """One `sweep run` of the quick study into a new storage: its wall seconds and the CPU seconds of
    it and of every process it started (each is waited for by its parent before the run exits)."""
    import resource

    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "sweep"), "run", "--trials", str(trials), "--study", str(study),
                    "--workers", "1", "--quiet", "--storage", f"sqlite:///{folder}/s{i}.db"],
                   cwd=folder, env={**clean, **env}, check=True, capture_output=True)
    wall_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall_s, "cpu_s": cpu_s}


SWEEP_CONDITIONS = {"sweep run, libgomp's default": {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPIN},
                    "sweep run, as shipped": {}}


def measure(repeats: int, epochs: int, n_images: int, busy: int, spins: list[int], loads=("quiet", "busy"),
            sweep_trials: int = 0, say=None) -> dict:
    import shutil
    import tempfile

    cores = usable_cores()
    conds = conditions(cores, spins)
    names = list(conds) + (list(SWEEP_CONDITIONS) if sweep_trials else [])
    loads = tuple(loads)
    runs = {(load, name): [] for load in loads for name in names}
    openmp, load_avg = set(), [os.getloadavg()[0]]
    folder, storages = tempfile.mkdtemp(prefix="sweep-threads-"), itertools.count()
    try:
        for r in range(repeats):
            for load in (loads if r % 2 == 0 else loads[::-1]):  # quiet and busy rounds alternate
                order = names[r % len(names):] + names[:r % len(names)]  # each condition leads a round in turn
                procs = start_busy(busy) if load == "busy" else []
                try:
                    for name in order:
                        if name in SWEEP_CONDITIONS:
                            out = run_sweep(SWEEP_CONDITIONS[name], sweep_trials, folder, next(storages))
                        else:
                            out = run_child(*conds[name], epochs, n_images)
                            openmp.add(out["openmp"])
                        runs[(load, name)].append(out)
                        if say:
                            say(f"round {r + 1}/{repeats} {load:5} {name:30} {out['wall_s']:7.2f} s wall, "
                                f"{out['cpu_s']:7.2f} s CPU, load average {os.getloadavg()[0]:.2f}")
                finally:
                    stop_busy(procs)
            load_avg.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for name in names:
        sweep = name in SWEEP_CONDITIONS
        threads, env = (cores, SWEEP_CONDITIONS[name]) if sweep else conds[name]
        baseline = next(iter(SWEEP_CONDITIONS)) if sweep else BASELINE
        row = {"condition": name, "threads": threads, "env": env, "baseline": baseline}
        for load in loads:
            for key in ("wall_s", "cpu_s"):
                values = [x[key] for x in runs[(load, name)]]
                row[f"{load}_{key}"] = statistics.median(values)
                row[f"{load}_{key}_ratio"] = row[f"{load}_{key}"] / statistics.median(x[key] for x in runs[(load, baseline)])
                row[f"{load}_{key}_all"] = values
        rows.append(row)
    return {"cores": cores, "cpu": _cpu_name(), "busy": busy, "repeats": repeats, "epochs": epochs,
            "n_images": n_images, "loads": list(loads), "sweep_trials": sweep_trials, "openmp": sorted(openmp),
            "load_avg_1min": [round(a, 2) for a in load_avg], "python": platform.python_version(), "rows": rows}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(result: dict) -> str:
    loads = result["loads"]
    sweep = f"; `sweep run --trials {result['sweep_trials']}` of the quick study" if result["sweep_trials"] else ""
    lines = [
        f"{result['cores']} usable cores ({result['cpu']}); OpenMP: {', '.join(result['openmp'])}; "
        f"{result['epochs']} epochs on {result['n_images']} synthetic images{sweep}; busy = {result['busy']} busy "
        f"processes; median of {result['repeats']}; 1-min load average at the start and after each round: "
        + ", ".join(f"{a:g}" for a in result["load_avg_1min"]),
        "",
        "| condition | torch threads | " + " | ".join(f"{load} {what}" for load in loads for what in ("wall s", "CPU s")) + " |",
        "|---|---|" + "---|" * (2 * len(loads)),
    ]
    for row in result["rows"]:
        cells = [f"{row[f'{load}_{key}']:.2f} ({row[f'{load}_{key}_ratio']:.2f}x)" for load in loads for key in ("wall_s", "cpu_s")]
        lines.append(f"| {row['condition']} | {row['threads']} | " + " | ".join(cells) + " |")
    lines += ["", f"Ratios: against `{BASELINE}` (torch threads = cores, OpenMP's default wait policy) under the same "
              "load" + (f"; the `sweep run` rows against `{next(iter(SWEEP_CONDITIONS))}`." if result["sweep_trials"] else ".")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=3000, help="synthetic images (the quick study's 3,000)")
    ap.add_argument("--busy", type=int, default=None, help="busy processes beside the busy runs (default: the cores)")
    ap.add_argument("--spin", type=int, action="append", default=None,
                    help=f"a GOMP_SPINCOUNT to try (repeatable; default {', '.join(map(str, DEFAULT_SPINS))})")
    ap.add_argument("--loads", default="quiet,busy", help="which loads to run: quiet, busy or both")
    ap.add_argument("--sweep", type=int, default=0, metavar="TRIALS",
                    help="also time `sweep run --trials TRIALS` of the quick study, as shipped and with libgomp's default")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="a line per child as it finishes, on stderr")
    args = ap.parse_args(argv)
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    if not loads or set(loads) - {"quiet", "busy"}:
        ap.error("--loads: quiet, busy or quiet,busy")
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else None
    result = measure(args.repeats, args.epochs, args.n_images, args.busy or usable_cores(),
                     args.spin if args.spin is not None else DEFAULT_SPINS, loads, args.sweep, say)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
