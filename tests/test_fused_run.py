"""`sweep run --engine fused:K`: fused groups under the sweep's guarantees, on real storages and processes.

Every test ends with the exact budget: N finished trials, none RUNNING or WAITING, no trial
finished twice. The study fixes batch size and optimizer, so every trial fits one group.
"""

import os
import signal
from collections import Counter

from optuna.trial import TrialState

from tests.test_faults import FIN, assert_exact_budget, cli, finish, load, wait_for

FUSABLE = """
description = "one fusion key: every trial can join every group"
seed = 5
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
batch_size = 32
optimizer = "sgd"
[search]
epochs = {epochs}
lr = {{ low = 1e-3, high = 0.1, log = true }}
momentum = {{ low = 0.0, high = 0.9 }}
[sampler]
name = "random"
"""


def fusable(tmp_path, epochs="{ low = 1, high = 3 }", name="fz"):
    p = tmp_path / f"{name}.toml"
    p.write_text(FUSABLE.format(epochs=epochs))
    return p


def test_fused_run_keeps_the_budget_and_each_trials_own_record(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    code, out, err = finish(cli("run", "--trials", 7, "--study", fusable(tmp_path), "--engine", "fused:3", "--storage", url))
    assert code == 0, err
    assert "7/7 finished" in out
    trials = assert_exact_budget(url, "fz", 7)
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(1, t.params["epochs"] + 1))  # its own curve
        assert t.user_attrs["epochs_run"] == t.params["epochs"]
        assert 1 <= t.user_attrs["concurrent"] <= 3 and t.user_attrs["train_s"] > 0
        assert t.user_attrs["fused_group"].startswith(t.user_attrs["run_id"])
    groups = Counter(t.user_attrs["fused_group"] for t in trials)
    assert max(groups.values()) >= 2, "no two trials trained together"
    assert max(t.user_attrs["concurrent"] for t in trials) > 1
    seeds = [t.user_attrs["seed"] for t in trials]
    assert len(set(seeds)) == len(seeds)


def test_kill_9_of_a_fused_worker_fails_and_requeues_every_member(pg_url, tmp_path):
    # PostgreSQL only: what differs between the storages is tested by the plain kill -9 tests
    url = pg_url
    f = fusable(tmp_path, epochs="{ low = 20, high = 20 }", name="kf")
    run = cli("run", "--trials", 4, "--study", f, "--name", "kf", "--engine", "fused:3", "--storage", url)

    def group_running():
        running = [t for t in load(url, "kf").trials if t.state == TrialState.RUNNING and t.intermediate_values]
        return running if len(running) >= 2 else None

    members = wait_for(group_running)
    os.kill(members[0].user_attrs["worker_pid"], signal.SIGKILL)
    code, _, err = finish(run)
    assert code == 0, err
    trials = assert_exact_budget(url, "kf", 4)
    for m in members:
        assert trials[m.number].state == TrialState.FAIL and "worker died" in trials[m.number].user_attrs["fail_reason"]
        retry = [t for t in trials if t.user_attrs.get("retry_of") == m.number]
        assert len(retry) == 1 and retry[0].state in FIN
        assert retry[0].params == m.params and retry[0].user_attrs["seed"] == m.user_attrs["seed"]


def test_kill_9_of_a_fused_coordinator_then_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'kc.db'}"
    f = fusable(tmp_path, epochs="{ low = 8, high = 8 }", name="kc")
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


def test_oom_shrinks_the_group_and_fails_no_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    f = fusable(tmp_path, name="oom")
    env = {"SWEEP_FAULT_OOM_ONCE": f"1:{tmp_path / 'oom-flag'}"}
    code, _, err = finish(cli("run", "--trials", 6, "--study", f, "--engine", "fused:4", "--storage", url, env=env))
    assert code == 0, err
    trials = assert_exact_budget(url, "oom", 6)
    assert not any(t.state == TrialState.FAIL for t in trials)
    regrouped = [t for t in trials if t.user_attrs.get("oom_regrouped")]
    assert any(t.number == 1 for t in regrouped)
    after = [t for t in trials if t.number > max(r.number for r in regrouped)]
    assert all(t.user_attrs["concurrent"] <= 2 for t in after), "the group did not shrink"


def test_ctrl_c_leaves_no_fused_member_or_waiting_trial_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    f = fusable(tmp_path, epochs="{ low = 8, high = 8 }", name="int")
    run = cli("run", "--trials", 6, "--study", f, "--engine", "fused:2", "--storage", url)
    wait_for(lambda: sum(1 for t in load(url, "int").trials
                         if t.state == TrialState.RUNNING and t.intermediate_values) >= 2)
    run.send_signal(signal.SIGINT)
    code, _, err = finish(run)
    assert code == 130, err
    trials = load(url, "int").trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.FAIL] >= 2
    # what trained an epoch failed; what never trained waits for the next run
    assert all((t.state == TrialState.FAIL) == bool(t.intermediate_values) for t in trials if t.state != TrialState.COMPLETE)
