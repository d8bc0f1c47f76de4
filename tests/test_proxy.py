"""`sweep proxy`: many workers on one PostgreSQL study through Optuna's gRPC storage proxy.

The budget stays exact through the proxy (it counts under the study's lock), the database sees the
proxy's bounded pool and not one set of connections per worker, heartbeats and abandoned trials
work without a direct connection, and a proxy killed mid-run loses nothing.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import free_port, pg_admin
from tests.test_faults import assert_exact_budget, cli, finish, load, study_file, wait_for

pytest.importorskip("grpc", reason="the proxy extra is not installed (pip install -e '.[test]')")


@pytest.fixture
def fresh_pg():
    """A PostgreSQL database of this test's own: its connections are counted, nobody else's."""
    admin = pg_admin()
    name = f"sweep_proxy_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")

    def connections() -> int:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]

    yield f"postgresql://postgres@127.0.0.1:5432/{name}", connections
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


def start_proxy(db_url: str, port: int, connections: int = 6, env=None) -> subprocess.Popen:
    p = cli("proxy", "--storage", db_url, "--port", port, "--connections", connections, env=env)
    line = p.stderr.readline()  # the proxy says where it serves once it does
    assert f"grpc://127.0.0.1:{port}" in line, line + (p.stderr.read() if p.poll() is not None else "")
    return p


def stop(p: subprocess.Popen) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    return err


def test_the_proxy_keeps_a_budget_exact_under_racing_asks(fresh_pg):
    """Eight threads, each with its own proxy client, ask as fast as they can for a study of budget
    10: exactly 10 trials start; the rest are refused as 'budget taken', and a waiting trial is not
    started over the budget either. No torch, no training: the proxy's rules alone."""
    from sweep.proxy import budget_refused
    from sweep.storage import open_storage

    db_url, _ = fresh_pg
    port = free_port()
    proxy = start_proxy(db_url, port)
    try:
        grpc_url = f"grpc://127.0.0.1:{port}"
        study = optuna.create_study(study_name="race", storage=open_storage(grpc_url, create=False),
                                    direction="maximize")
        study.set_user_attr("target_trials", 10)
        refused, other_errors = [], []
        go = threading.Barrier(8)

        def asker():
            s = optuna.load_study(study_name="race", storage=open_storage(grpc_url, create=False))
            go.wait()
            for _ in range(6):
                try:
                    s.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
                except Exception as e:  # noqa: BLE001
                    (refused if budget_refused(e) else other_errors).append(e)

        threads = [threading.Thread(target=asker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not other_errors, other_errors[:2]
        direct = optuna.load_study(study_name="race", storage=db_url)
        assert Counter(t.state for t in direct.trials) == {TrialState.RUNNING: 10}
        assert len(refused) == 8 * 6 - 10
        # one fails (failed trials do not count): a waiting trial may start in its place, and only one
        direct.tell(direct.trials[0].number, state=TrialState.FAIL)
        direct.enqueue_trial({"x": 0.25})
        direct.enqueue_trial({"x": 0.75})
        s = optuna.load_study(study_name="race", storage=open_storage(grpc_url, create=False))
        assert s.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params == {"x": 0.25}
        with pytest.raises(Exception) as e:
            s.ask()
        assert budget_refused(e.value)
        states = Counter(t.state for t in direct.trials)
        assert states == {TrialState.FAIL: 1, TrialState.RUNNING: 10, TrialState.WAITING: 1}
        # a study not made by sweep (no budget) follows Optuna's rules: no refusal
        free = optuna.create_study(study_name="free", storage=open_storage(grpc_url, create=False))
        for _ in range(3):
            free.ask()
    finally:
        err = stop(proxy)
    assert proxy.returncode == 0 and "Traceback" not in err, err


def test_more_workers_than_connections_through_the_proxy(fresh_pg, tmp_path):
    """8 `sweep worker` processes, each with its own training process, reach one study through the
    proxy: exactly N finished, none duplicated, none RUNNING; the database never sees more
    connections than the proxy's bound (6), fewer than the workers (directly, each holds about two:
    benchmarks/crowd.py runs 20)."""
    db_url, connections = fresh_pg
    port = free_port()
    proxy = start_proxy(db_url, port, connections=6)
    grpc_url = f"grpc://127.0.0.1:{port}"
    n, name, n_workers = 10, "crowd", 8
    try:
        code, _, err = finish(cli("run", "--trials", n, "--study", study_file(tmp_path), "--name", name,
                                  "--storage", grpc_url, "--timeout", 0))
        assert code == 0, err
        # each pinned to one core, as a scheduler grants a job its cores: one torch thread each
        cores = sorted(os.sched_getaffinity(0))
        workers = [cli("worker", "--study", name, "--storage", grpc_url, "--workers", 1, "--device", "cpu",
                       core=cores[i % len(cores)])
                   for i in range(n_workers)]
        peak, seen = 0, 0
        while any(w.poll() is None for w in workers):
            peak = max(peak, connections())
            seen += 1
            time.sleep(0.2)
        results = [finish(w) for w in workers]
        for code, out, err in results:
            assert code == 0, err
            assert "Traceback" not in err
        trials = assert_exact_budget(db_url, name, n)
        pids = {t.user_attrs["pid"] for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
        assert len(pids) >= n_workers // 2, f"only {len(pids)} workers got trials"
        assert seen > 10 and 1 <= peak <= 6, (peak, seen)
    finally:
        err = stop(proxy)
    assert "Traceback" not in err, err


def test_kill_9_of_the_proxy_loses_nothing_and_a_restart_finishes(fresh_pg, tmp_path):
    db_url, _ = fresh_pg
    port = free_port()
    quick = {"SWEEP_HEARTBEAT_S": "1", "SWEEP_GRACE_S": "4"}
    proxy = start_proxy(db_url, port, env=quick)
    grpc_url = f"grpc://127.0.0.1:{port}"
    n, name = 6, "cut"
    f = study_file(tmp_path, epochs="{ low = 6, high = 8 }")
    code, _, err = finish(cli("run", "--trials", n, "--study", f, "--name", name, "--storage", grpc_url, "--timeout", 0))
    assert code == 0, err
    workers = [cli("worker", "--study", name, "--storage", grpc_url, "--workers", 1, "--device", "cpu", env=quick) for _ in range(2)]
    wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in load(db_url, name).trials),
             timeout=180)
    before = {t.number: (t.state, t.value, t.params) for t in load(db_url, name).trials
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    proxy.kill()
    proxy.wait()
    for w in workers:
        code, _, err = finish(w, timeout=60)
        lines = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("sweep: ")]
        assert code == 2 and "Traceback" not in err, err
        assert lines[-1].startswith("sweep: error: lost the storage proxy"), err
    after = load(db_url, name).trials
    assert {t.number: (t.state, t.value, t.params) for t in after if t.number in before} == before
    assert any(t.state == TrialState.RUNNING for t in after)  # cut off mid-trial: for the restart to recover

    proxy = start_proxy(db_url, port, env=quick)  # the same port: its old connections do not hold it
    try:
        again = [cli("worker", "--study", name, "--storage", grpc_url, "--workers", 1, "--device", "cpu", env=quick)]
        for w in again:
            code, _, err = finish(w)
            assert code == 0, err
        trials = assert_exact_budget(db_url, name, n)
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert failed and all(t.user_attrs.get("fail_reason", "").startswith("abandoned") for t in failed)
        assert any(t.user_attrs.get("retry_of") is not None for t in trials)  # re-queued with their parameters
    finally:
        err = stop(proxy)
    assert "Traceback" not in err, err


def test_proxy_errors_are_one_line(fresh_pg, tmp_path):
    db_url, _ = fresh_pg
    env = {"SWEEP_PROXY_CONNECT_S": "1"}
    port = free_port()
    cases = [
        (["worker", "--study", "x", "--storage", f"grpc://127.0.0.1:{port}"], "no storage proxy answers there within 1 s"),
        (["studies", "--storage", f"grpc://127.0.0.1:{port}"], "no storage proxy answers there"),
        (["studies", "--storage", "grpc://127.0.0.1"], "a storage proxy is grpc://HOST:PORT"),
        (["proxy", "--storage", f"grpc://127.0.0.1:{port}"], "serves a database"),
        (["proxy", "--storage", "postgresql://postgres@127.0.0.1:1/none"], "cannot open"),
        (["proxy", "--storage", f"sqlite:///{tmp_path}/no/such/dir.db"], "does not exist"),
    ]
    for args, expected in cases:
        code, out, err = finish(cli(*args, env=env), timeout=60)
        assert code == 2 and "Traceback" not in err, (args, err)
        assert err.strip().startswith("sweep: error:") and expected in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    proxy = start_proxy(db_url, port)
    try:
        code, _, err = finish(cli("proxy", "--storage", db_url, "--port", port))
        assert code == 2 and "in use" in err and "Traceback" not in err, err
    finally:
        stop(proxy)


def test_a_proxy_in_front_of_sqlite_is_its_one_writer(tmp_path):
    """SQLite takes one writer: the proxy holds the file's writer lock, so a direct `sweep run`
    on the file is refused while workers go through the proxy."""
    db = tmp_path / "p.db"
    port = free_port()
    proxy = start_proxy(f"sqlite:///{db}", port)
    try:
        f = study_file(tmp_path)
        code, _, err = finish(cli("run", "--trials", 4, "--study", f, "--name", "lite", "--storage", f"sqlite:///{db}"))
        assert code == 2 and "another sweep" in err, err
        code, out, err = finish(cli("run", "--trials", 4, "--study", f, "--name", "lite",
                                    "--storage", f"grpc://127.0.0.1:{port}"))
        assert code == 0, err
        assert "4/4 finished" in out
    finally:
        stop(proxy)
    assert_exact_budget(f"sqlite:///{db}", "lite", 4)
    assert sys.executable  # the run above used this interpreter's sweep


def test_heartbeats_through_the_proxy_and_its_reaper(fresh_pg):
    """A worker behind the proxy beats through it (a real heartbeat row, nothing stored as an
    attribute); when the beats stop, the proxy itself fails the trial with its reason and queues it
    again, with no worker connected to the database."""
    import sqlalchemy

    from sweep.recovery import HEARTBEAT_ATTR, beat
    from sweep.storage import open_storage

    db_url, _ = fresh_pg
    port = free_port()
    proxy = start_proxy(db_url, port, env={"SWEEP_HEARTBEAT_S": "1", "SWEEP_GRACE_S": "2"})
    try:
        client = open_storage(f"grpc://127.0.0.1:{port}", create=False)
        study = optuna.create_study(study_name="beats", storage=client, direction="maximize")
        study.set_user_attr("target_trials", 5)
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
        for k, v in {"seed": 11, "host": "elsewhere", "pid": 1}.items():
            trial.set_user_attr(k, v)
        for _ in range(4):  # beating: the trial stays RUNNING past the grace period
            beat(client, trial._trial_id)
            time.sleep(0.8)
        engine = sqlalchemy.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as con:
            rows = con.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                               {"t": trial._trial_id}).scalar()
        engine.dispose()
        direct = optuna.load_study(study_name="beats", storage=db_url)
        assert rows == 1 and direct.trials[0].state == TrialState.RUNNING
        assert HEARTBEAT_ATTR not in direct.trials[0].system_attrs
        # the beats stop (the worker died elsewhere): the proxy fails it and queues it again
        wait_for(lambda: optuna.load_study(study_name="beats", storage=db_url).trials[0].state == TrialState.FAIL,
                 timeout=30)
        trials = optuna.load_study(study_name="beats", storage=db_url).trials
        assert "no heartbeat" in trials[0].user_attrs["fail_reason"]
        retry = [t for t in trials if t.state == TrialState.WAITING]
        assert len(retry) == 1 and retry[0].user_attrs["retry_of"] == 0 and retry[0].user_attrs["seed"] == 11
    finally:
        err = stop(proxy)
    assert "trial 0 abandoned (no heartbeat); queued again" in err and "Traceback" not in err, err
