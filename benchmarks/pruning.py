"""Does pruning pay? The same study with median, hyperband and no pruning, over several seeds.

For each seed, the no-pruning study's best value sets the bar; the figure of merit is the total
number of epochs trained before a study's best-so-far came within 1 point of that bar (fewer is
better), next to each study's total epochs and final best.

    python -m benchmarks.pruning [--trials 24] [--seeds 3] [--n-images 1500]

Synthetic data, the quick study's search space, CPU. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib

import optuna
from optuna.trial import TrialState

from data import load_dataset
from sweep.runner import run_sweep
from sweep.study_file import find_study_file, parse_study

PRUNERS = ("none", "median", "hyperband")


def run(trials: int, seeds: int, n_images: int) -> list[dict]:
    path = find_study_file("quick")
    raw = tomllib.loads(path.read_text())
    raw["data"]["n_images"] = n_images
    data = load_dataset("synthetic", "official", n_images=n_images, seed=0)
    rows = []
    for seed in range(seeds):
        bar = None
        for pruner in PRUNERS:
            spec = parse_study({**raw, "pruner": {"name": pruner}}, path)
            storage = optuna.storages.InMemoryStorage()
            t0 = time.perf_counter()
            run_sweep(spec, data, storage, trials=trials, name=f"{pruner}-{seed}", seed=seed, progress=False)
            wall_s = time.perf_counter() - t0
            study = optuna.load_study(study_name=f"{pruner}-{seed}", storage=storage)
            ts = sorted(study.trials, key=lambda t: t.number)
            epochs, best, curve = 0, None, []
            for t in ts:
                epochs += int(t.user_attrs.get("epochs_run", 0))
                if t.state == TrialState.COMPLETE:
                    best = t.value if best is None else max(best, t.value)
                curve.append((epochs, best))
            if pruner == "none":
                bar = best
            reached = next((e for e, b in curve if b is not None and b >= bar - 0.01), None)
            rows.append({"seed": seed, "pruner": pruner, "best": best, "total_epochs": epochs,
                         "epochs_to_within_1pt": reached, "wall_s": wall_s,
                         "pruned": sum(t.state == TrialState.PRUNED for t in ts)})
            print(f"seed {seed} {pruner:>9}: best {best:.4f}, {epochs} epochs, within 1 pt after {reached}, "
                  f"{wall_s:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| pruner | mean best val | mean total epochs | mean epochs to within 1 pt of no-pruning best | reached (seeds) | pruned trials (mean) |",
             "|---|---|---|---|---|---|"]
    for pruner in PRUNERS:
        rs = [r for r in rows if r["pruner"] == pruner]
        reached = [r["epochs_to_within_1pt"] for r in rs if r["epochs_to_within_1pt"] is not None]
        lines.append(f"| {pruner} | {100 * statistics.mean(r['best'] for r in rs):.2f}% | "
                     f"{statistics.mean(r['total_epochs'] for r in rs):.0f} | "
                     f"{statistics.mean(reached) if reached else float('nan'):.0f} | {len(reached)}/{len(rs)} | "
                     f"{statistics.mean(r['pruned'] for r in rs):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-images", type=int, default=1500)
    a = ap.parse_args()
    print(table(run(a.trials, a.seeds, a.n_images)))


if __name__ == "__main__":
    main()
