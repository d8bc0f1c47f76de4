"""`sweep run --engine fused:K`, `multi:K` and `graph:K` under the sweep's guarantees, on real
storages and processes (graph in its CPU form: every step eager, the same engine code). Every test ends with the exact budget: N finished trials, none RUNNING or
WAITING, no trial finished twice.

The fused engine's study fixes batch size and optimizer, so every trial fits one group; the multi
and graph engines' search both, so their trials could rarely share a fused group.
"""

import os
import signal
from collections import Counter

import pytest
from optuna.trial import TrialState

from tests.test_faults import FIN, assert_exact_budget, cli, finish, load, wait_for

HEAD = """
description = "{description}"
seed = 5
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
"""
STUDIES = {
    "fused": HEAD + """batch_size = 32
optimizer = "sgd"
[search]
epochs = {epochs}
lr = {{ low = 1e-3, high = 0.1, log = true }}
momentum = {{ low = 0.0, high = 0.9 }}
[sampler]
name = "random"
""",
    "multi": HEAD + """[search]
epochs = {epochs}
batch_size = {{ choices = [16, 32, 64] }}
optimizer = {{ choices = ["sgd", "adam"] }}
lr = {{ low = 1e-3, high = 0.05, log = true }}
[sampler]
name = "random"
""",
}
STUDIES["graph"] = STUDIES["multi"]
ENGINES = ["fused", "multi", "graph"]


def study(tmp_path, engine, epochs="{ low = 1, high = 3 }", name="s"):
    p = tmp_path / f"{name}.toml"
    p.write_text(STUDIES[engine].format(description=f"{engine} engine test", epochs=epochs))
    return p


def overlap(a, b) -> bool:
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_keeps_the_budget_and_each_trials_own_record(tmp_path, engine):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    code, out, err = finish(cli("run", "--trials", 6, "--study", study(tmp_path, engine, name="r"),
                                "--engine", f"{engine}:3", "--storage", url))
    assert code == 0, err
    assert "6/6 finished" in out
    trials = assert_exact_budget(url, "r", 6)
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(1, t.params["epochs"] + 1))  # its own curve
        assert t.user_attrs["epochs_run"] == t.params["epochs"] and t.user_attrs["engine"] == engine
        assert 1 <= t.user_attrs["concurrent"] <= 3 and t.user_attrs["train_s"] > 0
    assert max(t.user_attrs["concurrent"] for t in trials) > 1, "no two trials trained together"
    seeds = [t.user_attrs["seed"] for t in trials]
    assert len(set(seeds)) == len(seeds)
    if engine == "fused":
        assert all(t.user_attrs["fused_group"].startswith(t.user_attrs["run_id"]) for t in trials)
        assert max(Counter(t.user_attrs["fused_group"] for t in trials).values()) >= 2
    else:
        # what ran is recorded: on a CPU no step replays a CUDA graph, and none failed to capture
        assert all(t.user_attrs.get("cuda_graph") is (False if engine == "graph" else None) for t in trials)
        assert not any("graph_fallback" in t.user_attrs for t in trials)
        key = lambda t: (t.params["batch_size"], t.params["optimizer"])  # noqa: E731
        assert any(overlap(a, b) and key(a) != key(b) for a in trials for b in trials if a.number < b.number), \
            "no two trials of different batch size or optimizer trained at the same time"


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_of_a_worker_fails_and_requeues_every_member(request, tmp_path, engine):
    # fused on PostgreSQL, multi on SQLite: what differs between the storages is tested by the plain kill -9 tests
    url = request.getfixturevalue("pg_url") if engine == "fused" else f"sqlite:///{tmp_path / 'k.db'}"
    name = f"kill-{engine}"
    f = study(tmp_path, engine, epochs="{ low = 6, high = 6 }", name=name)
    run = cli("run", "--trials", 3, "--study", f, "--name", name, "--engine", f"{engine}:3", "--storage", url)

    def members_running():
        running = [t for t in load(url, name).trials if t.state == TrialState.RUNNING and t.intermediate_values]
        return running if len(running) >= 2 else None

    members = wait_for(members_running)
    os.kill(members[0].user_attrs["worker_pid"], signal.SIGKILL)
    code, _, err = finish(run)
    assert code == 0, err
    trials = assert_exact_budget(url, name, 3)
    for m in members:
        assert trials[m.number].state == TrialState.FAIL and "worker died" in trials[m.number].user_attrs["fail_reason"]
        retry = [t for t in trials if t.user_attrs.get("retry_of") == m.number]
        assert len(retry) == 1 and retry[0].state in FIN
        assert retry[0].params == m.params and retry[0].user_attrs["seed"] == m.user_attrs["seed"]


def test_kill_9_of_a_fused_coordinator_then_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'kc.db'}"
    f = study(tmp_path, "fused", epochs="{ low = 8, high = 8 }", name="kc")
    run = cli("run", "--trials", 5, "--study", f, "--name", "kc", "--engine", "fused:2", "--storage", url)
    wait_for(lambda: any(t.intermediate_values for t in load(url, "kc").trials if t.state == TrialState.RUNNING))
    run.kill()
    run.wait()
    stuck = [t for t in load(url, "kc").trials if t.state == TrialState.RUNNING]
    assert len(stuck) >= 2, "no group was running when the coordinator died"
    code, _, err = finish(cli("run", "--trials", 5, "--study", f, "--name", "kc", "--engine", "fused:2", "--storage", url))
    assert code == 0, err
    trials = assert_exact_budget(url, "kc", 5)
    for t in stuck:
        assert trials[t.number].state == TrialState.FAIL and "abandoned" in trials[t.number].user_attrs["fail_reason"]


@pytest.mark.parametrize("engine", ENGINES)
def test_oom_shrinks_the_group_and_fails_no_trial(tmp_path, engine):
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    env = {"SWEEP_FAULT_OOM_ONCE": f"1:{tmp_path / 'oom-flag'}"}
    code, _, err = finish(cli("run", "--trials", 6, "--study", study(tmp_path, engine, name="oom"),
                              "--engine", f"{engine}:4", "--storage", url, env=env))
    assert code == 0, err
    trials = assert_exact_budget(url, "oom", 6)
    assert not any(t.state == TrialState.FAIL for t in trials)
    regrouped = [t for t in trials if t.user_attrs.get("oom_regrouped")]
    assert any(t.number == 1 for t in regrouped)
    after = [t for t in trials if t.number > max(r.number for r in regrouped)]
    assert all(t.user_attrs["concurrent"] <= 2 for t in after), "the group did not shrink"


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_fails_what_trained_and_sends_what_never_did_back_to_waiting(tmp_path, engine):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    run = cli("run", "--trials", 6, "--study", study(tmp_path, engine, epochs="{ low = 8, high = 8 }", name="int"),
              "--engine", f"{engine}:2", "--storage", url)
    wait_for(lambda: sum(1 for t in load(url, "int").trials
                         if t.state == TrialState.RUNNING and t.intermediate_values) >= 2)
    run.send_signal(signal.SIGINT)
    code, _, err = finish(run)
    assert code == 130, err
    trials = load(url, "int").trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.FAIL] >= 2
    assert all((t.state == TrialState.FAIL) == bool(t.intermediate_values) for t in trials if t.state not in FIN)
