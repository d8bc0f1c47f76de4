"""How the sweep's costs grow with a study: 100, 1,000 and 5,000 trials, on SQLite and PostgreSQL.

    python -m benchmarks.scale [--sizes 100,1000,5000] [--storages sqlite,postgresql] [--cycles 10] [--json]

For each size the study is first grown to that many finished trials (the `quick` study's search
space, each trial with the attributes, per-epoch values and confusion matrices a real trial
stores), quickly, through Optuna's `add_trials`. Then, at that size:

- the coordinator's overhead per trial: `cycles` real coordinator cycles without training (ask
  with the study's TPE sampler under the budget lock, 4 epochs reported with the pruner asked,
  the result recorded and told), the sampler's ask alone reported apart;
- the wall time of `sweep studies`, `sweep best`, `sweep export` and `sweep report` as a user
  runs them (fresh processes), and the report's size;
- optuna-dashboard's API call for the study's trials (`/api/studies/ID`, the one its page polls),
  on the storage as `sweep dashboard` serves it: when a page opens, and a later poll;
- the storage's size.

PostgreSQL: the server at 127.0.0.1:5432 (`--pg-admin URL`); each run makes and drops its own
database. No figure here is asserted by a test; docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

STUDY = "quick"
EPOCHS = 4  # reported per trial, as a short real trial does


def _fake_result(rng: random.Random) -> dict:
    """What a worker sends for a finished trial: a TrainResult as a dict."""
    confusion = [[rng.randint(0, 60) for _ in range(7)] for _ in range(7)]
    val = rng.uniform(0.1, 0.8)
    return {"val_acc": val, "best_val_acc": val, "train_s": rng.uniform(2, 20), "images_per_s": 1800.0,
            "epochs_run": EPOCHS, "stop_reason": "completed", "n_params": 667_000, "device": "cpu",
            "device_name": "cpu (bench)", "precision": "bf16", "val_confusion": confusion, "test_acc": val,
            "test_confusion": confusion, "call_s": 5.0, "engine": "plain", "concurrent": 1}


def _grow(study: optuna.Study, spec, dists: dict, target: int, rng: random.Random) -> None:
    from sweep.records import trial_record

    have = len(study.get_trials(deepcopy=False))
    batch = []
    for number in range(have, target):
        params = {}
        for name, d in dists.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                params[name] = rng.choice(d.choices)
            elif isinstance(d, optuna.distributions.IntDistribution):
                params[name] = rng.randint(d.low, d.high)
            else:
                params[name] = rng.uniform(d.low, d.high)
        result = _fake_result(rng)
        attrs = trial_record(result, study.user_attrs, pruned=False, compile="off", run_id="grown")
        attrs.update({"seed": number, "run_id": "grown", "host": "bench", "pid": 1, "worker": 0, "worker_pid": 1})
        batch.append(optuna.trial.create_trial(
            params=params, distributions=dists, value=result["val_acc"], user_attrs=attrs,
            intermediate_values={e: result["val_acc"] * e / EPOCHS for e in range(1, EPOCHS + 1)}))
        if len(batch) == 500:
            study.add_trials(batch)
            batch = []
    if batch:
        study.add_trials(batch)


class _Conn:
    def send(self, message) -> None:  # the coordinator's answers to a worker that does not exist
        pass


def _cycles(study: optuna.Study, spec, dists: dict, n: int, rng: random.Random) -> dict:
    """`n` real coordinator cycles (ask, report and prune, record, tell) without training."""
    from sweep.coordinator import Coordinator
    from sweep.pool import Worker

    target = len(study.get_trials(deepcopy=False)) + n
    study.set_user_attr("target_trials", target)
    c = Coordinator(study, spec, dists, 0, target, None, False)
    worker = Worker(0, "cpu", None, proc=None, conn=_Conn(), ready=True)
    c.pool = type("Pool", (), {"workers": [worker]})()
    asks, totals = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        r = c._ask()
        t1 = time.perf_counter()
        result = _fake_result(rng)
        for epoch in range(1, EPOCHS + 1):
            r.trial.report(result["val_acc"] * epoch / EPOCHS, epoch)
            r.trial.should_prune()
        c._finish(r.trial, result, worker)
        totals.append(time.perf_counter() - t0)
        asks.append(t1 - t0)
    return {"overhead_s_per_trial": statistics.median(totals), "ask_s": statistics.median(asks),
            "overhead_s_max": max(totals)}


def _timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmarks.scale: {' '.join(cmd[:3])} failed: {out.stderr.strip()[-300:]}")
    return time.perf_counter() - t0


def _dashboard_s(url: str, study: optuna.Study) -> tuple[float, float]:
    """optuna-dashboard's GET of the study's trials, in process, on the storage as `sweep dashboard`
    serves it: the first (a page opened) and a later poll (a new app: its own short-lived trial
    cache is empty, as after its time-to-live)."""
    import io

    from optuna_dashboard import wsgi

    from sweep.dashboard import served_storage
    from sweep.storage import open_storage

    storage = served_storage(open_storage(url, create=False))
    times = []
    for _ in range(2):
        app = wsgi(storage)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/api/studies/{study._study_id}", "QUERY_STRING": "after=0",
                   "SERVER_NAME": "bench", "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"}
        status = []
        t0 = time.perf_counter()
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        times.append(time.perf_counter() - t0)
        if not status or not status[0].startswith("200") or not body:
            raise SystemExit(f"benchmarks.scale: the dashboard answered {status}")
    storage._backend.engine.dispose()
    return times[0], times[1]


def _storage_bytes(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if not p.name.endswith(".lock"))
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as con:
        size = con.execute(sqlalchemy.text("SELECT pg_database_size(current_database())")).scalar()
    engine.dispose()
    return int(size)


def run_storage(kind: str, sizes: list[int], cycles: int, pg_admin: str, say) -> list[dict]:
    from data import load_dataset
    from sweep.runner import open_study
    from sweep.sampling import distributions
    from sweep.storage import open_storage
    from sweep.study_file import load_study_file

    spec = load_study_file(STUDY)
    data = load_dataset("synthetic", spec.data.split, n_images=spec.data.n_images, seed=spec.data.seed)
    dists = distributions(spec)
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pg_name = None
        if kind == "sqlite":
            url = f"sqlite:///{d}/scale.db"
        else:
            import psycopg

            pg_name = f"sweep_scale_{os.getpid()}"
            with psycopg.connect(pg_admin, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {pg_name}")
                admin.execute(f"CREATE DATABASE {pg_name}")
            url = pg_admin.rsplit("/", 1)[0] + f"/{pg_name}"
        try:
            storage = open_storage(url, create=True)
            study = open_study(spec, data, storage, STUDY, spec.seed)
            for size in sizes:
                t0 = time.perf_counter()
                _grow(study, spec, dists, size - cycles, rng)
                grow_s = time.perf_counter() - t0
                cyc = _cycles(study, spec, dists, cycles, rng)
                sweep = [sys.executable, "-m", "sweep"]
                row = {"storage": kind, "trials": len(study.get_trials(deepcopy=False)), "grow_s": round(grow_s, 1),
                       **{k: round(v, 4) for k, v in cyc.items()},
                       "studies_s": _timed([*sweep, "studies", "--storage", url], d),
                       "best_s": _timed([*sweep, "best", "--storage", url], d),
                       "export_s": _timed([*sweep, "export", "--storage", url, "-f", "csv", "-o", f"{d}/t.csv"], d),
                       "report_s": _timed([*sweep, "report", "--storage", url, "-o", f"{d}/r.html"], d),
                       "report_mb": round(os.path.getsize(f"{d}/r.html") / 1e6, 2),
                       **dict(zip(("dashboard_api_s", "dashboard_poll_s"), _dashboard_s(url, study))),
                       "storage_mb": round(_storage_bytes(url) / 1e6, 1)}
                for k in ("studies_s", "best_s", "export_s", "report_s", "dashboard_api_s", "dashboard_poll_s"):
                    row[k] = round(row[k], 3)
                rows.append(row)
                say(row)
            storage.engine.dispose()
        finally:
            if pg_name:
                import psycopg

                with psycopg.connect(pg_admin, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                  (pg_name,))
                    admin.execute(f"DROP DATABASE IF EXISTS {pg_name}")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--storages", default="sqlite,postgresql")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    say = (lambda row: None) if args.json else (lambda row: print(json.dumps(row), flush=True))
    rows = []
    for kind in args.storages.split(","):
        rows += run_storage(kind, sizes, args.cycles, args.pg_admin, say)
    if args.json:
        print(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
