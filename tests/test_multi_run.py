"""`sweep run --engine multi:K`: trials of any hyperparameters side by side in one worker, under
the sweep's guarantees, on real storages and processes. Every test ends with the exact budget.

The study searches batch size and optimizer, so its trials could rarely share a fused group."""

import os
import signal

from optuna.trial import TrialState

from tests.test_faults import FIN, assert_exact_budget, cli, finish, load, wait_for

MIXED = """
description = "batch size and optimizer searched: trials of every key"
seed = 3
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
[search]
epochs = {epochs}
batch_size = {{ choices = [16, 32, 64] }}
optimizer = {{ choices = ["sgd", "adam"] }}
lr = {{ low = 1e-3, high = 0.05, log = true }}
[sampler]
name = "random"
"""


def mixed(tmp_path, epochs="{ low = 1, high = 3 }", name="mx"):
    p = tmp_path / f"{name}.toml"
    p.write_text(MIXED.format(epochs=epochs))
    return p


def overlap(a, b) -> bool:
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


def test_multi_run_trains_trials_of_different_keys_together(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    code, out, err = finish(cli("run", "--trials", 5, "--study", mixed(tmp_path), "--engine", "multi:3",
                                "--storage", url))
    assert code == 0, err
    assert "5/5 finished" in out
    trials = assert_exact_budget(url, "mx", 5)
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(1, t.params["epochs"] + 1))  # its own curve
        assert t.user_attrs["engine"] == "multi" and 1 <= t.user_attrs["concurrent"] <= 3
        assert t.user_attrs["train_s"] > 0
    key = lambda t: (t.params["batch_size"], t.params["optimizer"])  # noqa: E731
    assert any(overlap(a, b) and key(a) != key(b) for a in trials for b in trials if a.number < b.number), \
        "no two trials of different batch size or optimizer trained at the same time"
    assert max(t.user_attrs["concurrent"] for t in trials) > 1


def test_kill_9_of_a_multi_worker_fails_and_requeues_every_member(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    f = mixed(tmp_path, epochs="{ low = 6, high = 6 }", name="km")
    run = cli("run", "--trials", 3, "--study", f, "--name", "km", "--engine", "multi:3", "--storage", url)

    def members_running():
        running = [t for t in load(url, "km").trials if t.state == TrialState.RUNNING and t.intermediate_values]
        return running if len(running) >= 2 else None

    members = wait_for(members_running)
    os.kill(members[0].user_attrs["worker_pid"], signal.SIGKILL)
    code, _, err = finish(run)
    assert code == 0, err
    trials = assert_exact_budget(url, "km", 3)
    for m in members:
        assert trials[m.number].state == TrialState.FAIL and "worker died" in trials[m.number].user_attrs["fail_reason"]
        retry = [t for t in trials if t.user_attrs.get("retry_of") == m.number]
        assert len(retry) == 1 and retry[0].state in FIN
        assert retry[0].params == m.params and retry[0].user_attrs["seed"] == m.user_attrs["seed"]


def test_oom_shrinks_a_multi_worker_and_fails_no_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    env = {"SWEEP_FAULT_OOM_ONCE": f"1:{tmp_path / 'oom-flag'}"}
    code, _, err = finish(cli("run", "--trials", 6, "--study", mixed(tmp_path, name="mo"), "--engine", "multi:4",
                              "--storage", url, env=env))
    assert code == 0, err
    trials = assert_exact_budget(url, "mo", 6)
    assert not any(t.state == TrialState.FAIL for t in trials)
    regrouped = [t for t in trials if t.user_attrs.get("oom_regrouped")]
    assert any(t.number == 1 for t in regrouped)
    after = [t for t in trials if t.number > max(r.number for r in regrouped)]
    assert all(t.user_attrs["concurrent"] <= 2 for t in after), "the worker did not shrink"


def test_ctrl_c_leaves_no_multi_member_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    run = cli("run", "--trials", 6, "--study", mixed(tmp_path, epochs="{ low = 8, high = 8 }", name="mi"),
              "--engine", "multi:2", "--storage", url)
    wait_for(lambda: sum(1 for t in load(url, "mi").trials
                         if t.state == TrialState.RUNNING and t.intermediate_values) >= 2)
    run.send_signal(signal.SIGINT)
    code, _, err = finish(run)
    assert code == 130, err
    trials = load(url, "mi").trials
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) >= 2
    assert all((t.state == TrialState.FAIL) == bool(t.intermediate_values) for t in trials if t.state != TrialState.COMPLETE)
