"""Start-up time of commands that train nothing, against `optuna --version` in the same run.

    python -m benchmarks.startup [--repeats 7] [--json]

Each command runs as a fresh process, the three in turn, `repeats` times; each figure is the
median wall time. `sweep studies` and `optuna studies` read a small study made for it first.
Goal: within 1.2x of `optuna --version`, i.e. no torch import where nothing trains; a command that
opens a storage also pays for Optuna's storage layer, which `optuna studies` shows.
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
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(_timed(cmd, d))
    base = statistics.median(times["optuna --version"])
    out = {"repeats": args.repeats, "python": sys.version.split()[0], "cores": os.cpu_count(),
           "median_s": {k: statistics.median(v) for k, v in times.items()},
           "ratio": {k: statistics.median(v) / base for k, v in times.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'command':<20} {'median s':>9} {'vs optuna --version':>20}")
        for k in commands:
            print(f"{k:<20} {out['median_s'][k]:9.3f} {out['ratio'][k]:19.2f}x")
    return out


if __name__ == "__main__":
    main()
