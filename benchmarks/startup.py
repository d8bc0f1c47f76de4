"""Start-up time of commands that train nothing, against `optuna --version` in the same run.

    python -m benchmarks.startup [--repeats 7] [--json] [--runs]

Each command runs as a fresh process, in turn, `repeats` times; each figure is the median wall
time. `sweep studies` and `optuna studies` read a small study made for it first.
Goal: within 1.2x of `optuna --version`, i.e. no torch import where nothing trains; a command that
opens a storage also pays for Optuna's storage layer, which `optuna studies` shows.

`--runs` adds what a run costs beyond its training, on the CPU: `sweep run` of one trial of one
epoch on 240 synthetic images (0.1 s of training), with one worker and with two (two trials),
against the floor any training process pays here: a Python that imports torch and builds a torch
optimizer (which imports torch's compiler stack).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", action="store_true", help="also time one-trial runs against the torch floor")
    args = ap.parse_args(argv)
    bindir = Path(sys.executable).parent
    sweep, optuna = str(bindir / "sweep"), str(bindir / "optuna")
    if not (shutil.which(sweep) and shutil.which(optuna)):
        raise SystemExit("benchmarks.startup: needs the sweep and optuna commands beside this Python")
    with tempfile.TemporaryDirectory() as d:
        import optuna as _optuna

        _optuna.logging.set_verbosity(_optuna.logging.WARNING)
        study = _optuna.create_study(storage=f"sqlite:///{d}/s.db", study_name="s", direction="maximize")
        for i in range(20):
            study.add_trial(_optuna.trial.create_trial(value=i / 20, params={"lr": 0.01},
                                                       distributions={"lr": _optuna.distributions.FloatDistribution(1e-4, 1)}))
        commands = {
            "optuna --version": [optuna, "--version"],
            "sweep --help": [sweep, "--help"],
            "optuna studies": [optuna, "studies", "--storage", f"sqlite:///{d}/s.db"],
            "sweep studies": [sweep, "studies", "--storage", f"sqlite:///{d}/s.db"],
        }
        if args.runs:
            Path(d, "one.toml").write_text(ONE_EPOCH_STUDY)
            commands["torch + optimizer"] = [sys.executable, "-c", "import torch; torch.optim.SGD([torch.zeros(1)], lr=0.1)"]
            for n in (1, 2):
                commands[f"sweep run, {n} worker{'s' if n > 1 else ''}"] = [
                    sweep, "run", "--study", "one.toml", "--trials", str(n), "--workers", str(n),
                    "--storage", f"sqlite:///{d}/run{n}.db"]
        times: dict[str, list[float]] = {k: [] for k in commands}
        for i in range(args.repeats):
            for name, cmd in commands.items():
                if name.startswith("sweep run"):  # a new storage each time: the run trains every time
                    cmd = cmd[:-1] + [cmd[-1].replace(".db", f"-{i}.db")]
                times[name].append(_timed(cmd, d))
    median = {k: statistics.median(v) for k, v in times.items()}
    floor = median.get("torch + optimizer")
    out = {"repeats": args.repeats, "python": sys.version.split()[0], "cores": os.cpu_count(),
           "median_s": median,
           "ratio": {k: v / (floor if k.startswith("sweep run") or k == "torch + optimizer" else median["optuna --version"])
                     for k, v in median.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'command':<26} {'median s':>9} {'vs optuna --version or the torch floor':>40}")
        for k in commands:
            print(f"{k:<26} {median[k]:9.3f} {out['ratio'][k]:39.2f}x")
    return out


ONE_EPOCH_STUDY = """
description = "start-up benchmark: one epoch of a tiny network on tiny synthetic data"
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
batch_size = 32
optimizer = "sgd"
epochs = 1
[search]
lr = { low = 1e-3, high = 0.1, log = true }
"""


if __name__ == "__main__":
    main()
