"""The fault suite: parallel workers, kill -9 of workers and coordinators, OOM, on SQLite and PostgreSQL.

Every test ends by checking the budget exactly: N finished trials, none left RUNNING, and no
COMPLETE trial duplicated (a re-queued trial reruns the same parameters and seed only once).
"""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import TINY_STUDY

FIN = (TrialState.COMPLETE, TrialState.PRUNED)


def cli(*args, env=None, core: int | None = None, **kw) -> subprocess.Popen:
    """`sweep ARGS` as a process; with `core`, pinned to that core (as a batch scheduler pins a job)."""
    if core is not None:
        kw["preexec_fn"] = lambda: os.sched_setaffinity(0, {core})
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "sweep", *map(str, args)], cwd=os.getcwd(), env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout=240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def load(url, name):
    return optuna.load_study(study_name=name, storage=url)


def wait_for(pred, timeout=120, every=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            got = pred()
            if got:
                return got
        except Exception:  # the study may not exist yet
            pass
        time.sleep(every)
    raise AssertionError("condition not met in time")


def assert_exact_budget(url, name, n):
    trials = load(url, name).trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == n, states
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    done = [(tuple(sorted(t.params.items())), t.user_attrs.get("seed")) for t in trials if t.state in FIN]
    assert len(done) == len(set(done)), "a trial ran to the end twice"
    return trials


def study_file(tmp_path, epochs="{ low = 1, high = 3 }", name="s"):
    p = tmp_path / f"{name}.toml"
    p.write_text(TINY_STUDY.replace("epochs = { low = 1, high = 3 }", f"epochs = {epochs}"))
    return p




def test_three_workers_share_one_postgres_study(pg_url, tmp_path):
    f = study_file(tmp_path)
    n, name = 8, "three"
    run = cli("run", "--trials", n, "--study", f, "--name", name, "--storage", pg_url)
    wait_for(lambda: "target_trials" in load(pg_url, name).user_attrs)
    joiners = [cli("worker", "--study", name, "--storage", pg_url) for _ in range(2)]
    for p in [run, *joiners]:
        code, out, err = finish(p)
        assert code == 0, err
    trials = assert_exact_budget(pg_url, name, n)
    assert len({t.user_attrs["pid"] for t in trials}) >= 2, "the work was not shared"


def test_two_runs_started_at_once_share_the_budget(pg_url, tmp_path):
    f = study_file(tmp_path)
    a = cli("run", "--trials", 8, "--study", f, "--name", "twin", "--storage", pg_url)
    b = cli("run", "--trials", 8, "--study", f, "--name", "twin", "--storage", pg_url)
    for p in (a, b):
        code, _, err = finish(p)
        assert code == 0, err
    assert_exact_budget(pg_url, "twin", 8)


def test_budget_lock_is_taken_through_a_studys_cached_storage(pg_url):
    """Optuna wraps an RDBStorage in a cache inside a Study; the lock must still reach PostgreSQL
    (it once silently did nothing there, and two runs could overshoot the budget by a trial)."""
    import sqlalchemy

    from sweep.locks import _key, budget_lock
    from sweep.storage import open_storage

    study = optuna.create_study(storage=open_storage(pg_url, create=True), study_name="locked")
    assert type(study._storage).__name__ == "_CachedStorage"
    other = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with other.connect() as con:
        def free() -> bool:
            got = con.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": _key("locked")}).scalar()
            if got:
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _key("locked")})
            return got

        with budget_lock(study._storage, "locked"):
            assert not free()
        assert free()
    other.dispose()


def test_kill_9_of_a_worker_mid_trial(url, tmp_path):
    f = study_file(tmp_path, epochs="{ low = 30, high = 30 }", name="kw")
    run = cli("run", "--trials", 3, "--study", f, "--name", "kw", "--workers", 2, "--storage", url)
    victim = wait_for(lambda: next((t for t in load(url, "kw").trials
                                    if t.state == TrialState.RUNNING and t.intermediate_values), None))
    os.kill(victim.user_attrs["worker_pid"], signal.SIGKILL)
    code, _, err = finish(run)
    assert code == 0, err
    trials = assert_exact_budget(url, "kw", 3)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and "worker died" in dead.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state in FIN
    assert retry[0].params == dead.params and retry[0].user_attrs["seed"] == dead.user_attrs["seed"]


def test_kill_9_of_the_coordinator_then_resume(url, tmp_path):
    f = study_file(tmp_path, epochs="{ low = 8, high = 8 }", name="kc")
    run = cli("run", "--trials", 3, "--study", f, "--name", "kc", "--workers", 2, "--storage", url)
    wait_for(lambda: any(t.intermediate_values for t in load(url, "kc").trials if t.state == TrialState.RUNNING))
    run.kill()
    run.wait()
    stuck = [t for t in load(url, "kc").trials if t.state == TrialState.RUNNING]
    assert stuck, "nothing was running when the coordinator died"
    again = cli("run", "--trials", 3, "--study", f, "--name", "kc", "--workers", 2, "--storage", url)
    code, _, err = finish(again)
    assert code == 0, err
    trials = assert_exact_budget(url, "kc", 3)
    for t in stuck:
        assert trials[t.number].state == TrialState.FAIL
        assert "abandoned" in trials[t.number].user_attrs["fail_reason"]


def test_stale_heartbeat_from_another_host_is_failed_and_requeued(tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    f = study_file(tmp_path, name="hb")
    env = {"SWEEP_HEARTBEAT_S": "1", "SWEEP_GRACE_S": "2"}
    code, _, err = finish(cli("run", "--trials", 1, "--study", f, "--name", "hb", "--storage", url, env=env))
    assert code == 0, err
    # A trial some other machine started, then lost: RUNNING, its heartbeat going stale.
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="hb", storage=storage)
    ghost = study.ask({"epochs": optuna.distributions.IntDistribution(1, 3),
                       "batch_size": optuna.distributions.CategoricalDistribution([32, 64]),
                       "lr": optuna.distributions.FloatDistribution(1e-3, 0.1, log=True),
                       "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])})
    ghost.set_user_attr("host", "another-machine")
    ghost.set_user_attr("pid", 1)
    ghost.set_user_attr("seed", 77)
    storage.record_heartbeat(ghost._trial_id)
    time.sleep(3)
    code, _, err = finish(cli("run", "--trials", 3, "--study", f, "--name", "hb", "--storage", url, env=env))
    assert code == 0, err
    trials = assert_exact_budget(url, "hb", 3)
    assert trials[ghost.number].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == ghost.number]
    assert len(retry) == 1 and retry[0].user_attrs["seed"] == 77 and "heartbeat" in retry[0].user_attrs["retry_reason"]


def test_oom_is_retried_once_alone_not_blamed_on_the_parameters(tmp_path):
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    f = study_file(tmp_path, name="oom")
    p = cli("run", "--trials", 3, "--study", f, "--workers", 2, "--storage", url, env={"SWEEP_FAULT_OOM_ONCE": f"0:{tmp_path / 'oom-flag'}"})
    code, _, err = finish(p)
    assert code == 0, err
    trials = assert_exact_budget(url, "oom", 3)
    assert trials[0].user_attrs.get("oom_retry") is True and trials[0].state in FIN
    assert not any(t.state == TrialState.FAIL for t in trials)


def test_sqlite_takes_one_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    f = study_file(tmp_path, epochs="{ low = 8, high = 8 }", name="one")
    first = cli("run", "--trials", 2, "--study", f, "--storage", url)
    wait_for(lambda: load(url, "one").trials)
    code, _, err = finish(cli("run", "--trials", 2, "--study", f, "--storage", url))
    assert code == 2 and "another sweep" in err and "PostgreSQL" in err
    first.send_signal(signal.SIGINT)
    assert finish(first)[0] == 130


BAD = [
    (["run", "--data", "synthetic", "--storage", "postgresql://postgres:hunter2@127.0.0.1:1/test"], "cannot open"),
    (["run", "--data", "synthetic", "--storage", "postgresql://nobody_here@127.0.0.1:5432/test"], "cannot open"),
    (["run", "--data", "synthetic", "--storage", "redis://127.0.0.1/0"], "unsupported database"),
    (["run", "--data", "synthetic", "--workers", "0"], "--workers must be at least 1"),
    (["run", "--data", "synthetic", "--per-gpu", "2"], "--per-gpu needs a GPU"),
    (["run", "--data", "synthetic", "--gpus", "0,1"], "--gpus needs CUDA"),
    (["worker", "--study", "nope"], "no such file|no study"),
]


@pytest.mark.parametrize("args,expected", BAD)
def test_scale_out_bad_input(tmp_path, args, expected):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    if "--storage" not in args:
        args = [*args, "--storage", url]
    code, out, err = finish(cli(*args), timeout=120)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and __import__("re").search(expected, lines[0]), err
    assert "hunter2" not in err + out
    assert not (tmp_path / "bad.db").exists()


def test_run_with_timeout_0_sets_up_a_study_that_workers_fill(tmp_path):
    url = f"sqlite:///{tmp_path / 'setup.db'}"
    f = study_file(tmp_path, name="setup")
    code, out, err = finish(cli("run", "--trials", 2, "--study", f, "--storage", url, "--timeout", 0))
    assert code == 0, err
    study = load(url, "setup")
    assert study.trials == [] and study.user_attrs["target_trials"] == 2
    code, out, err = finish(cli("worker", "--study", "setup", "--storage", url))
    assert code == 0, err
    assert "2/2 finished" in out
    assert_exact_budget(url, "setup", 2)


def test_worker_plan_on_gpus_and_cpus(monkeypatch):
    """GPU assignment without a GPU: the plan the coordinator follows, with CUDA faked."""
    import torch

    from sweep import SweepError
    from sweep.runner import plan_workers

    n, slots, threads, engine, concurrent = plan_workers("cpu", 2, None, None)
    assert (engine, concurrent) == ("plain", 1)  # the default: one trial at a time
    assert plan_workers("cpu", 1, None, None, engine="fused:3")[3:] == ("fused", 3)
    assert plan_workers("cpu", 1, None, None, engine="multi")[3:] == ("multi", 4)
    assert plan_workers("cpu", 1, None, None, engine="graph:8")[3:] == ("graph", 8)
    assert plan_workers("cpu", 1, None, None, engine="fused")[3:] == ("fused", 16)
    assert plan_workers("cpu", 1, None, None, engine="auto")[3:] == ("plain", 1)  # off CUDA auto is plain
    assert n == 2 and slots == [("cpu", None)] and threads == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr("sweep.pool.GPU_DEVICE_NODES", (os.devnull,))  # a node that exists
    n, slots, _, _, _ = plan_workers("auto", None, None, None)
    assert plan_workers("auto", None, None, None, engine="auto")[3:] == ("auto", 256)  # each worker measures
    assert plan_workers("auto", None, None, None, compile="on", engine="auto")[3:] == ("plain", 1)
    for compile, engine in (("cudagraphs", "multi:2"), ("cudagraphs", "graph"), ("on", "graph:2")):
        with pytest.raises(SweepError, match="do not go together"):
            plan_workers("auto", None, None, None, compile=compile, engine=engine)
    assert n == 4 and [g for _, g in slots] == [0, 1, 2, 3]  # one worker per GPU by default
    n, slots, _, _, _ = plan_workers("auto", None, [1, 3], 2)
    assert n == 4 and sorted(g for _, g in slots) == [1, 1, 3, 3]  # two trials packed on each
    assert plan_workers("cuda:2", None, None, None)[1] == [("cuda", 2)]
    with pytest.raises(SweepError, match="only 4 GPU"):
        plan_workers("auto", None, [7], None)
    for bad in ("0", "fused:0", "multi:-2", "multi:many", "plain:2", "fused:257", "auto:4", "fast"):
        with pytest.raises(SweepError, match="--engine"):
            plan_workers("cpu", None, None, None, engine=bad)


def test_a_gpu_worker_sees_its_gpu_through_the_coordinators_own_list():
    """Under a scheduler's CUDA_VISIBLE_DEVICES (indices, UUIDs, MIG instances) the coordinator's
    logical GPU i is the i-th entry of its list, not physical GPU i."""
    from sweep.pool import worker_env

    assert worker_env({"CUDA_VISIBLE_DEVICES": "2,3", "X": "1"}, 1) == {"CUDA_VISIBLE_DEVICES": "3", "X": "1"}
    uuids = "GPU-8f3a2c1e-0000-0000-0000-000000000001, GPU-8f3a2c1e-0000-0000-0000-000000000002"
    assert worker_env({"CUDA_VISIBLE_DEVICES": uuids}, 0)["CUDA_VISIBLE_DEVICES"] == uuids.split(", ")[0]
    mig = "MIG-4b5c1d2e-aaaa-bbbb-cccc-000000000001,MIG-4b5c1d2e-aaaa-bbbb-cccc-000000000002"
    assert worker_env({"CUDA_VISIBLE_DEVICES": mig}, 1)["CUDA_VISIBLE_DEVICES"] == mig.split(",")[1]
    assert worker_env({}, 2)["CUDA_VISIBLE_DEVICES"] == "2"  # no list: logical is physical
    assert "CUDA_VISIBLE_DEVICES" not in worker_env({}, None)  # a CPU worker: untouched
    assert worker_env({"CUDA_VISIBLE_DEVICES": "5"}, None)["CUDA_VISIBLE_DEVICES"] == "5"


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


@pytest.mark.parametrize("ending", ["kill -9", "SIGINT", "done"])
def test_every_process_a_run_started_ends_with_it(tmp_path, ending):
    """Workers, fork server and resource tracker: none outlives its run by more than a few seconds,
    however the run ends (on a GPU an orphan would keep its memory)."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    epochs = "{ low = 1, high = 1 }" if ending == "done" else "{ low = 8, high = 8 }"
    f = study_file(tmp_path, epochs=epochs, name="procs")
    run = cli("run", "--trials", 2, "--study", f, "--workers", 2, "--storage", url, start_new_session=True)
    if ending != "done":
        wait_for(lambda: any(t.intermediate_values for t in load(url, "procs").trials))
        assert len(_group_members(run.pid)) >= 3  # the run, its fork server and workers
        if ending == "kill -9":
            run.kill()
        else:
            run.send_signal(signal.SIGINT)
    finish(run)
    deadline = time.time() + 5
    while _group_members(run.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _group_members(run.pid) == [], f"still running {3 - (deadline - time.time()):.1f} s after the run ended"


def test_ctrl_c_inside_optunas_ask_leaves_no_trial_unowned(tmp_path):
    """Optuna's ask creates the RUNNING trial, then samples; the coordinator marks it as its run's
    after that. A Ctrl-C between the two once left a trial RUNNING that the clean-up did not know
    was its own. Here the signal lands inside the sampler, the narrowest point of that window."""
    from sweep.coordinator import Coordinator
    from sweep.runner import InterruptOnce
    from sweep.sampling import distributions
    from sweep.study_file import load_study_file

    (tmp_path / "s.toml").write_text(TINY_STUDY)
    spec = load_study_file(str(tmp_path / "s.toml"))

    class SignalInside(optuna.samplers.RandomSampler):
        def sample_independent(self, *args):
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, in the main thread, mid-ask
            return super().sample_independent(*args)

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="a",
                                direction="maximize", sampler=SignalInside(seed=0))
    coordinator = Coordinator(study, spec, distributions(spec), 3, 5, None, progress=False)
    with pytest.raises(KeyboardInterrupt), InterruptOnce() as interrupt:  # (conftest restores the handlers)
        coordinator.held = interrupt.held
        coordinator._ask()
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.RUNNING and trial.user_attrs["run_id"] == coordinator.run_id
    coordinator.fail_all_running("interrupted (Ctrl-C or SIGTERM)")
    assert study.get_trials(deepcopy=False)[0].state == TrialState.WAITING  # it never trained: not a failure


def test_trials_that_never_trained_wait_for_the_next_run_which_takes_them_first(url, tmp_path):
    """Ctrl-C (or an error) fails only the trials that reported an epoch. Trials asked ahead and
    pending, or stopped inside their first epoch, go back to WAITING with their parameters and
    seed; the next run asks them first, as the same trials, with no stale heartbeat."""
    from sweep.coordinator import Coordinator
    from sweep.records import store_attrs
    from sweep.sampling import distributions
    from sweep.storage import open_storage
    from sweep.stored import study_rows
    from sweep.study_file import load_study_file

    (tmp_path / "s.toml").write_text(TINY_STUDY)
    spec = load_study_file(str(tmp_path / "s.toml"))
    storage = open_storage(url, create=True)
    study = optuna.create_study(storage=storage, study_name="never-trained", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    first = Coordinator(study, spec, distributions(spec), 3, 10, None, progress=False)
    trained, pending, started = first._ask(), first._ask(), first._ask()
    trained.trial.report(0.3, 1)  # one epoch reported: it trained
    for r in (trained, started):  # handed to a worker, as _send records it
        store_attrs(r.trial, {"worker": 0, "worker_pid": os.getpid()})
    first.pending = [pending]
    (row,) = [r for r in study_rows(study._storage) if r["study"] == "never-trained"]
    assert (row["running"], row["training"], row["waiting"]) == (3, 2, 1)  # the pending one waits for a slot
    params = {r.trial.number: (r.trial.params, r.trial.user_attrs["seed"]) for r in (pending, started)}
    first.fail_all_running("interrupted (Ctrl-C or SIGTERM)")
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {0: TrialState.FAIL, 1: TrialState.WAITING, 2: TrialState.WAITING}
    (row,) = [r for r in study_rows(study._storage) if r["study"] == "never-trained"]
    assert (row["failed"], row["running"], row["training"], row["waiting"]) == (1, 0, 0, 2)
    assert "worker" not in study.get_trials(deepcopy=False)[2].user_attrs  # no longer any worker's
    from sqlalchemy import text

    with storage.engine.connect() as db:  # no heartbeat left to make them look abandoned when they run
        beats = dict(db.execute(text(
            "SELECT t.number, count(h.trial_id) FROM trials t LEFT JOIN trial_heartbeats h "
            "ON h.trial_id = t.trial_id WHERE t.study_id = :s GROUP BY t.number"), {"s": study._study_id}).all())
    assert beats == {0: 1, 1: 0, 2: 0}

    second = Coordinator(study, spec, distributions(spec), 3, 10, None, progress=False)
    again = [second._ask(), second._ask()]
    assert sorted(r.trial.number for r in again) == [1, 2]  # the waiting trials come first, as themselves
    for r in again:
        assert (r.trial.params, r.trial.user_attrs["seed"]) == params[r.trial.number]
        assert r.trial.user_attrs["run_id"] == second.run_id and r.config["seed"] == params[r.trial.number][1]
    assert second._ask().trial.number == 3  # then new ones
    assert "fail_reason" not in study.get_trials(deepcopy=False)[1].user_attrs
