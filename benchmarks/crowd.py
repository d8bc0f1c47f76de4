"""Many workers on one study: directly on PostgreSQL against through `sweep proxy`, in the same run.

    python -m benchmarks.crowd [--workers 20] [--trials 40] [--connections 6] [--json]

Each way starts `workers` `sweep worker` processes (each pinned to one core, as a scheduler grants
a job its cores) on a fresh study of tiny trials (the synthetic data, width 1/16, 1-3 epochs) with
a budget of `trials`, and measures: the wall time from the first worker's start to the last one's
end, the most database connections seen at once (pg_stat_activity, sampled every 0.2 s), and the
finished trials against the budget. Tiny trials make the storage's share of the time as large as
it gets; on a real sweep a trial trains for minutes and the storage's cost is what is left over.

PostgreSQL: the server at 127.0.0.1:5432 (`--pg-admin URL`); each way makes and drops its own database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
seed = 3
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
[search]
epochs = { low = 1, high = 3 }
batch_size = { choices = [32, 64] }
lr = { low = 1e-3, high = 0.1, log = true }
optimizer = { choices = ["sgd", "adam"] }
[sampler]
name = "tpe"
n_startup_trials = 3
[pruner]
name = "median"
n_startup_trials = 2
"""


def _sweep(args: list, cwd: str, core: int | None = None, **kw) -> subprocess.Popen:
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    return subprocess.Popen([sys.executable, "-m", "sweep", *map(str, args)], cwd=cwd, preexec_fn=pin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_way(way: str, workers: int, trials: int, connections: int, pg_admin: str, d: str) -> dict:
    import psycopg

    name = f"sweep_crowd_{way}_{os.getpid()}"
    admin = psycopg.connect(pg_admin, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")
    db_url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
    proxy = None
    try:
        url = db_url
        if way == "proxy":
            port = _free_port()
            proxy = _sweep(["proxy", "--storage", db_url, "--port", port, "--connections", connections], d)
            proxy.stderr.readline()  # it says where it serves once it does
            url = f"grpc://127.0.0.1:{port}"
        study_file = Path(d) / "crowd.toml"
        study_file.write_text(STUDY)
        setup = _sweep(["run", "--trials", trials, "--study", study_file, "--name", "crowd", "--storage", url,
                        "--timeout", 0], d)
        if setup.wait() != 0:
            raise SystemExit(f"benchmarks.crowd: setting up the study failed: {setup.stderr.read()[-300:]}")
        cores = sorted(os.sched_getaffinity(0))
        t0 = time.perf_counter()
        procs = [_sweep(["worker", "--study", "crowd", "--storage", url, "--workers", 1, "--device", "cpu"], d,
                        core=cores[i % len(cores)])
                 for i in range(workers)]
        peak = 0
        while any(p.poll() is None for p in procs):
            peak = max(peak, admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                           (name,)).fetchone()[0])
            time.sleep(0.2)
        wall_s = time.perf_counter() - t0
        failed = [p.stderr.read()[-300:] for p in procs if p.returncode != 0]
        if failed:
            raise SystemExit(f"benchmarks.crowd: {len(failed)} workers failed: {failed[0]}")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        states = [t.state.name for t in optuna.load_study(study_name="crowd", storage=db_url).trials]
        return {"way": way, "workers": workers, "budget": trials, "wall_s": round(wall_s, 1),
                "finished": states.count("COMPLETE") + states.count("PRUNED"), "running": states.count("RUNNING"),
                "peak_db_connections": peak}
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGINT)
            proxy.wait(timeout=30)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--connections", type=int, default=6, help="the proxy's --connections")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for way in ("direct", "proxy"):
            rows.append(one_way(way, args.workers, args.trials, args.connections, args.pg_admin, d))
            if not args.json:
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
