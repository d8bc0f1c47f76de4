"""Orchestration overhead: wall time per trial not spent inside train(), with 1 and 2 workers.

Tiny trials (1 epoch of a 1/16-width network on 240 synthetic images) make the orchestration
visible: ask, storage writes, per-epoch report and prune round trip, tell, worker dispatch.

    python -m benchmarks.orchestration [--trials 20]

overhead per trial = (workers x wall time after the first trial started - sum of train() seconds) / trials
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from data import load_dataset
from sweep.runner import run_sweep
from sweep.storage import open_storage
from sweep.study_file import parse_study

STUDY = {
    "data": {"source": "synthetic", "n_images": 240},
    "fixed": {"width": 0.0625, "epochs": 1, "batch_size": 64},
    "search": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "optimizer": {"choices": ["sgd", "adam"]}},
    "pruner": {"name": "none"},
}


def measure(workers: int, trials: int) -> dict:
    spec = parse_study(STUDY, Path("orchestration.toml"))
    data = load_dataset("synthetic", n_images=240)
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/o.db"
        storage = open_storage(url, create=True)
        t0 = time.time()
        run_sweep(spec, data, storage, trials=trials, name="o", workers=workers, progress=False)
        t_end = time.time()
        study = optuna.load_study(study_name="o", storage=storage)
        first = min(t.datetime_start.timestamp() for t in study.trials)
        inside = sum(t.user_attrs["call_s"] for t in study.trials)
        run_s = t_end - first
        return {"workers": workers, "trials": trials, "startup_s": first - t0, "run_s": run_s,
                "overhead_per_trial_s": (workers * run_s - inside) / trials,
                "train_per_trial_s": inside / trials, "trials_per_hour": trials / (t_end - t0) * 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    rows = [measure(w, a.trials) for w in (1, 2)]
    print("| workers | trials | start-up s | train() s per trial | overhead s per trial | trials/hour (incl. start-up) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['trials']} | {r['startup_s']:.1f} | {r['train_per_trial_s']:.2f} | "
              f"{r['overhead_per_trial_s']:.3f} | {r['trials_per_hour']:.0f} |")


if __name__ == "__main__":
    main()
