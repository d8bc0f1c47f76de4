"""The real thing, small: `sweep run` into a temporary SQLite file, read back with plain Optuna."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweep.cli import app
from tests.conftest import TINY_STUDY, make_rows, write_csv

runner = CliRunner()


def sweep(*args, cwd=None):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


def db(tmp_path):
    return f"sqlite:///{tmp_path / 'sweep.db'}"


def finished(study):
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_run_three_trials_into_sqlite(tmp_path, tiny_study):
    r = sweep("run", "--trials", 3, "--study", tiny_study, "--storage", db(tmp_path), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "3/3 finished" in r.output
    assert "for the remaining 2 trials at the pace now" in r.stderr  # said once the first trial is done
    study = optuna.load_study(study_name="tiny", storage=db(tmp_path))
    assert len(finished(study)) == 3 and len(study.trials) == 3
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    sa = study.user_attrs
    assert sa["data_name"] == "synthetic" and sa["n_train"] + sa["n_val"] + sa["n_test"] == 240
    assert json.loads(sa["definition"])["fixed"]["width"] == 0.0625
    assert "torch=" in sa["versions"] and sa["git_commit"]
    for t in study.trials:
        a = t.user_attrs
        assert set(t.params) == {"epochs", "batch_size", "lr", "optimizer"}
        for key in ("test_acc", "train_s", "images_per_s", "device_name", "epochs_run", "n_params",
                    "data_name", "data_hash", "seed", "versions", "git_commit"):
            assert key in a, key
        assert a["data_name"] == "synthetic" and a["device"] == "cpu" and a["compile"] == "off"
        assert len(t.intermediate_values) == a["epochs_run"]
        if t.state == TrialState.COMPLETE:
            assert t.value == t.intermediate_values[a["epochs_run"]]  # the final epoch's val accuracy
    seeds = [t.user_attrs["seed"] for t in study.trials]
    assert len(set(seeds)) == 3


def test_compiled_sweep_records_its_engine_option(tmp_path, monkeypatch):
    """`--compile on` reaches the workers (one compilation per worker, reused: tests/test_speed.py),
    and each trial records the engine option it ran with. Data, shapes and thread count are those
    of test_speed's compiled training, so one of the two compiles and the other finds the graph in
    torch's on-disk cache (a CPU compilation costs ~40 s cold; its cache key holds the threads)."""
    monkeypatch.setattr("sweep.pool._usable_cores", lambda: 1)  # one torch thread, as the tests' own
    study_file = tmp_path / "compiled.toml"
    study_file.write_text(TINY_STUDY.replace("n_images = 240", "n_images = 1000\nseed = 2")
                          .replace("epochs = { low = 1, high = 3 }", "epochs = { low = 1, high = 1 }")
                          .replace("batch_size = { choices = [32, 64] }", "batch_size = { choices = [32] }"))
    r = sweep("run", "--trials", 1, "--study", study_file, "--storage", db(tmp_path), "--compile", "on")
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="compiled", storage=db(tmp_path))
    assert len(finished(study)) == 1 and len(study.trials) == 1
    assert {t.user_attrs["compile"] for t in study.trials} == {"on"}


def test_budget_is_the_studys_and_resume_runs_only_the_remainder(tmp_path, tiny_study):
    args = ["--study", tiny_study, "--storage", db(tmp_path), "--device", "cpu"]
    assert sweep("run", "--trials", 2, *args).exit_code == 0
    r = sweep("run", "--trials", 2, *args)
    assert r.exit_code == 0 and "2/2 finished" in r.output
    study = optuna.load_study(study_name="tiny", storage=db(tmp_path))
    assert len(study.trials) == 2  # nothing more ran
    r = sweep("run", "--trials", 3, *args)
    assert r.exit_code == 0 and "estimate: " in r.stderr and "at the pace of the study's last run" in r.stderr
    assert len(optuna.load_study(study_name="tiny", storage=db(tmp_path)).trials) == 3
    assert sweep("run", "--trials", 2, "--add", *args).exit_code == 0
    assert len(finished(optuna.load_study(study_name="tiny", storage=db(tmp_path)))) == 5


def test_nothing_to_train_starts_no_worker_process(tmp_path, tiny_study, monkeypatch):
    """A study that holds its budget, joined or run again, and a set-up run (--timeout 0) start no
    worker process: each would import torch and load the data for nothing."""
    args = ["--study", tiny_study, "--storage", db(tmp_path), "--device", "cpu"]
    assert sweep("run", "--trials", 2, *args).exit_code == 0

    from sweep import runner as runner_module

    def no_pool(*a, **kw):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(runner_module, "Pool", no_pool)
    r = sweep("run", "--trials", 2, *args)
    assert r.exit_code == 0 and "2/2 finished" in r.output
    r = sweep("worker", "--study", "tiny", "--storage", db(tmp_path))
    assert r.exit_code == 0 and "this worker ran 0" in r.output and "joining study 'tiny'" in r.stderr
    r = sweep("worker", "--study", "tiny", "--storage", db(tmp_path), "--quiet")
    assert r.exit_code == 0 and r.stderr == "" and "this worker ran 0" in r.stdout
    r = sweep("run", "--trials", 4, *args, "--timeout", 0)
    assert r.exit_code == 0 and "2/4 finished (stopped by --timeout)" in r.output
    assert optuna.load_study(study_name="tiny", storage=db(tmp_path)).user_attrs["target_trials"] == 4


def test_studies_and_best_commands(tmp_path, tiny_study):
    r = sweep("run", "--trials", 2, "--study", tiny_study, "--storage", db(tmp_path), "--name", "alpha", "--quiet")
    assert r.exit_code == 0, r.output
    # --quiet: the summary line and nothing else (no banner, no progress, no hint)
    assert r.stderr == "" and r.stdout.count("\n") == 1 and "'alpha': 2/2 finished" in r.stdout, r.output
    r = sweep("studies", "--storage", db(tmp_path))
    assert r.exit_code == 0 and "alpha" in r.output and "synthetic" in r.output
    assert r.output.splitlines()[1].split()[2] == "2/2"  # finished / the study's budget
    r = sweep("best", "--storage", db(tmp_path))
    study = optuna.load_study(study_name="alpha", storage=db(tmp_path))
    assert r.exit_code == 0 and f"best trial {study.best_trial.number}" in r.output
    assert f"val accuracy   {study.best_value:.2%}" in r.output  # a percentage, as every command prints it

    r = sweep("studies", "--storage", db(tmp_path), "--json")
    assert r.exit_code == 0 and r.stderr == ""
    assert json.loads(r.stdout) == [{"study": "alpha", "data": "synthetic", "budget": 2, "finished": 2,
                                     "complete": sum(t.state == TrialState.COMPLETE for t in study.trials),
                                     "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
                                     "failed": 0, "running": 0, "training": 0, "waiting": 0,
                                     "best_value": study.best_value, "objective": "val_acc",
                                     "direction": "maximize"}]
    r = sweep("best", "--storage", db(tmp_path), "--json")
    assert r.exit_code == 0 and r.stderr == ""
    best = json.loads(r.stdout)
    a = study.best_trial.user_attrs
    assert list(best) == ["study", "data", "trial", "val_acc", "test_acc", "params", "fixed", "epochs_run",
                          "train_s", "images_per_s", "device_name", "precision", "seed", "git_commit", "objective",
                          "direction", "value"]
    assert (best["objective"], best["direction"], best["value"]) == ("val_acc", "maximize", study.best_value)
    assert (best["study"], best["data"], best["trial"], best["val_acc"]) == \
        ("alpha", "synthetic", study.best_trial.number, study.best_value)
    assert best["params"] == study.best_params and best["fixed"] == {"width": 0.0625}
    assert (best["test_acc"], best["seed"], best["epochs_run"]) == (a["test_acc"], a["seed"], a["epochs_run"])
    assert sweep("studies", "--storage", str(tmp_path / "none.db"), "--json").exit_code == 2


def test_study_name_clash_with_other_data_is_refused(tmp_path, tiny_study):
    sweep("run", "--trials", 1, "--study", tiny_study, "--storage", db(tmp_path))
    text = tiny_study.read_text().replace("n_images = 240", "n_images = 250")
    other = tmp_path / "sub"
    other.mkdir()
    (other / "tiny.toml").write_text(text)
    r = sweep("run", "--trials", 2, "--study", other / "tiny.toml", "--storage", db(tmp_path))
    assert r.exit_code == 2 and "already exists with a different" in r.output
    r = sweep("run", "--trials", 2, "--study", tiny_study, "--storage", db(tmp_path), "--seed", 5)
    assert r.exit_code == 2 and "already exists with seed 3 (this run asks for 5); pass --seed 3" in r.output


def test_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    p = tmp_path / "div.toml"
    p.write_text("""
[data]
n_images = 200
[fixed]
width = 0.0625
epochs = 2
precision = "fp32"
[search]
lr = { choices = [1e9, 1e-3] }
[sampler]
name = "grid"
""")
    r = sweep("run", "--trials", 2, "--study", p, "--storage", db(tmp_path))
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="div", storage=db(tmp_path))
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[1e9].state == TrialState.PRUNED and "diverged" in by_lr[1e9].user_attrs["fail_reason"]
    assert by_lr[1e-3].state == TrialState.COMPLETE


def _bad_inputs(tmp_path):
    images, labels, usage = make_rows()
    bad = tmp_path / "bad.csv"
    write_csv(bad, images, labels, usage)
    bad.write_text(bad.read_text().replace(",Training", ",Nope", 1))
    bad_study = tmp_path / "bad.toml"
    bad_study.write_text("[search]\nlr = { low = 0.1, high = 0.01 }\n")
    return {
        "missing data": (["--data", tmp_path / "nope.csv"], "nope.csv: no such file"),
        "bad usage": (["--data", bad], "row 2: Usage 'Nope'"),
        "bad study": (["--study", bad_study], "search.lr: low"),
        "unknown study": (["--study", "nope"], "unknown study 'nope'"),
        "unknown device": (["--device", "tpu", "--data", "synthetic"], "unsupported device 'tpu'|unknown device"),
        "missing cuda": (["--device", "cuda:3", "--data", "synthetic"], "CUDA is not available"),
        "cuda graphs on cpu": (["--compile", "cudagraphs", "--device", "cpu", "--data", "synthetic"],
                               "--compile cudagraphs needs CUDA"),
        "unknown compile mode": (["--compile", "fast", "--data", "synthetic"], "--compile must be one of off, on"),
    }


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    for name, (args, expected) in _bad_inputs(tmp_path).items():
        r = sweep("run", "--trials", 1, "--storage", db(tmp_path), *args)
        assert r.exit_code == 2, (name, r.output)
        lines = [l for l in r.output.splitlines() if l.startswith("sweep: error")]
        assert len(lines) == 1 and __import__("re").search(expected, lines[0]), (name, r.output)
        assert "Traceback" not in r.output
        assert not (tmp_path / "sweep.db").exists(), name


def test_bad_input_leaves_an_existing_storage_untouched(tmp_path, tiny_study):
    sweep("run", "--trials", 1, "--study", tiny_study, "--storage", db(tmp_path))
    path = tmp_path / "sweep.db"
    before = sqlite3.connect(path).execute("select count(*) from trials").fetchone()
    for args, _ in _bad_inputs(tmp_path).values():
        assert sweep("run", "--trials", 1, "--storage", db(tmp_path), *args).exit_code == 2
    assert sqlite3.connect(path).execute("select count(*) from trials").fetchone() == before


def test_reading_commands_never_create_a_storage(tmp_path):
    for cmd in ("studies", "best"):
        r = sweep(cmd, "--storage", db(tmp_path))
        assert r.exit_code == 2 and "no such file" in r.output
    assert not (tmp_path / "sweep.db").exists()


def test_unwritable_storage_and_unknown_scheme(tmp_path):
    r = sweep("run", "--trials", 1, "--data", "synthetic", "--storage", f"sqlite:///{tmp_path}/no/dir/x.db")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = sweep("run", "--trials", 1, "--data", "synthetic", "--storage", "mongodb://u:secret@h/db")
    assert r.exit_code == 2 and "unsupported database" in r.output and "secret" not in r.output


def test_fresh_clone_default_falls_back_to_quick_on_synthetic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from sweep.cli import _resolve

    spec, source, notice = _resolve(None, None)
    assert spec.name == "quick" and source == "synthetic" and "No FER2013" in notice
    (tmp_path / "data").mkdir()
    images, labels, usage = make_rows()
    write_csv(tmp_path / "data" / "fer2013.csv", images, labels, usage)
    spec, source, notice = _resolve(None, None)
    assert spec.name == "default" and source == "data/fer2013.csv" and notice is None
    monkeypatch.setenv("SWEEP_DATA", str(tmp_path / "elsewhere.csv.gz"))
    assert _resolve(None, None)[1] == str(tmp_path / "elsewhere.csv.gz")


SLOW_STUDY = """
[data]
n_images = 600
[fixed]
width = 0.25
epochs = 50
"""


def _start_slow_run(tmp_path, *args, running: int = 1, **popen):
    """A `sweep run` of the slow study in a subprocess, returned once `running` of its trials have
    finished an epoch; and its storage URL."""
    study_file = tmp_path / "slow.toml"
    study_file.write_text(SLOW_STUDY)
    url = db(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "run", "--study", str(study_file), "--storage", url,
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1], **popen)
    deadline = time.time() + 120
    seen = []
    while time.time() < deadline and len(seen) < running:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="slow", storage=url)
            seen = [t for t in study.trials if t.state == TrialState.RUNNING and t.intermediate_values]
        except Exception:
            pass
    if len(seen) < running:  # say why: the run may have ended (its own error line) or be stuck
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"{running} trial(s) did not reach their first epoch; the run's exit code "
                             f"{proc.returncode}, its stderr:\n{err[-3000:]}")
    return proc, url


def _assert_stopped_cleanly(proc, url, n_trials):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    study = optuna.load_study(study_name="slow", storage=url)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * n_trials
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in study.trials)


def test_ctrl_c_marks_the_running_trial_failed_and_exits_130(tmp_path):
    proc, url = _start_slow_run(tmp_path, "--trials", 3)
    proc.send_signal(signal.SIGINT)
    _assert_stopped_cleanly(proc, url, 1)


@pytest.mark.parametrize("gap_s", [0.02, 0.4])
def test_sigterm_as_timeout_sends_it_leaves_no_trial_running(tmp_path, gap_s):
    # `timeout` signals the run, then the run's whole process group: the coordinator gets SIGTERM
    # twice, and its workers die under it. Seen on a GPU machine: the second signal cut the
    # clean-up short and left trials RUNNING.
    proc, url = _start_slow_run(tmp_path, "--trials", 6, "--workers", 3, running=3, start_new_session=True)
    os.kill(proc.pid, signal.SIGTERM)
    # 0.02 s: the second lands during the clean-up (it left trials RUNNING); 0.4 s: after it, while
    # Python shuts down (it ended the process with -15).
    time.sleep(gap_s)
    os.killpg(proc.pid, signal.SIGTERM)
    _assert_stopped_cleanly(proc, url, 3)


def test_progress_in_a_log_prints_trials_and_throttled_epochs(monkeypatch):
    import io

    from sweep import progress

    out = io.StringIO()
    bar = progress.Progress(total=4, done=1, best=0.5, stream=out)
    bar.epoch(1, 1, 10, 0.4)
    assert out.getvalue() == ""  # nothing for a quick epoch
    monkeypatch.setattr(progress, "QUIET_S", 0)
    bar.epoch(1, 2, 10, 0.45)
    bar.done, bar.best = 2, 0.6
    bar.trial_done(1, "COMPLETE", 0.6, 3.2)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("1/4 trials | best val 50.00% | trial 1 epoch 2/10 val 45.00%")
    assert "2/4 trials | best val 60.00% | trial 1 complete val 60.00% in 3.2s" in lines[1]
    bar.training, bar.waiting = 3, 2  # several trials at once: the line tells training from waiting ones
    bar.trial_done(2, "PRUNED", None, 1.0)
    assert "2/4 trials | best val 60.00% | 3 training, 2 waiting | trial 2 pruned" in out.getvalue().splitlines()[2]


def test_progress_estimates_the_time_left_from_the_range_and_the_pace(monkeypatch):
    """Said once the run's first trial is done, then in every progress line: epochs left (trials
    left x the study's mean epochs, less what running trials did) x wall seconds per epoch."""
    import io
    import types

    from sweep import progress
    from sweep.study_file import Param

    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress, "QUIET_S", 10**6)  # no sign-of-life epoch lines here
    out = io.StringIO()
    bar = progress.Progress(total=12, done=0, best=None, stream=out, epochs_per_trial=4)
    for epoch in (1, 2, 3, 4):  # trial 0: its first epoch report starts the clock, then 10 s an epoch
        bar.epoch(0, epoch, 4, 0.3)
        clock[0] += 10
    bar.epoch(1, 1, 4, 0.3)  # trial 1 runs meanwhile (a second worker)
    assert bar.seconds_left() is None and "left" not in out.getvalue()  # no estimate before a trial is done
    bar.done = 1
    bar.trial_done(0, "COMPLETE", 0.5, 40.0)
    # pace: 40 s over 4 epochs after the first = 10 s; left: 11 trials x 4 epochs - 1 done = 43 epochs
    assert bar.pace() == 10 and bar.epochs_left() == 43 and bar.seconds_left() == 430
    lines = out.getvalue().splitlines()
    assert "1/12 trials | best val - | ~7 min left | trial 0 complete" in lines[0]
    assert lines[1].startswith("estimate: about 7 minutes for the remaining 11 trials at the pace now (10.00 s per epoch "
                               "over the last trial, 4 epochs per trial on average); the progress line keeps it up to "
                               "date at the pace of the last 5 trials")
    bar.done = 2
    bar.trial_done(1, "PRUNED", None, 5.0)
    assert len(out.getvalue().splitlines()) == 3 and "~7 min left" in out.getvalue().splitlines()[2]  # said once
    assert progress.say_duration(30) == "under a minute" and progress.say_duration(3 * 3600) == "about 3.0 hours"
    out = io.StringIO()
    resumed = progress.Progress(total=10, done=4, best=0.5, stream=out, epochs_per_trial=4)
    resumed.start(earlier_pace=5.0)  # 6 trials x 4 epochs x 5 s
    assert out.getvalue().startswith("estimate: about 2 minutes for the remaining 6 trials at the pace of the "
                                      "study's last run (5.00 s per epoch")
    assert "~2 min left" in resumed._head()

    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1)

    def trial(run, start, end, epochs, state="COMPLETE"):
        return types.SimpleNamespace(state=TrialState[state], datetime_start=t0 + timedelta(seconds=start),
                                     datetime_complete=t0 + timedelta(seconds=end),
                                     user_attrs={"run_id": run, "epochs_run": epochs})
    # the last run: 60 s from its first start to its last end, 2 + 4 epochs
    trials = [trial("a", 0, 100, 1), trial("b", 200, 230, 2), trial("b", 230, 260, 4, "PRUNED")]
    assert progress.earlier_pace(trials) == 10 and progress.earlier_pace([]) is None
    spec = types.SimpleNamespace(search={"epochs": Param("epochs", low=2, high=6)}, fixed={})
    assert progress.mean_epochs(spec) == 4
    assert progress.mean_epochs(types.SimpleNamespace(search={"epochs": Param("epochs", choices=(5, 10))}, fixed={})) == 7.5
    assert progress.mean_epochs(types.SimpleNamespace(search={}, fixed={"epochs": 30})) == 30
    assert progress.mean_epochs(types.SimpleNamespace(search={}, fixed={})) == 200  # the paper's run


def test_the_estimate_follows_the_pace_of_the_recent_trials(monkeypatch):
    """Other work on the machine slows a run, then stops: the time left follows the last few
    trials' pace, not the whole run's mean (which would still say 6x the time left)."""
    import io

    from sweep import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress, "QUIET_S", 10**6)
    bar = progress.Progress(total=40, done=0, best=None, stream=io.StringIO(), epochs_per_trial=2)

    def trials(n: int, epoch_s: float) -> None:
        for _ in range(n):
            number = bar.done
            for epoch in (1, 2):
                clock[0] += epoch_s
                bar.epoch(number, epoch, 2, 0.3)
            bar.done += 1
            bar.trial_done(number, "COMPLETE", 0.3, 2 * epoch_s)

    trials(10, 30.0)  # a busy machine: 30 s an epoch
    assert bar.pace() == 30.0 and bar.seconds_left() == 30 * 2 * 30.0
    trials(2, 3.0)  # the load goes: the pace moves at once, as far as the window of 5 trials allows
    assert bar.pace() == (3 * 2 * 30.0 + 2 * 2 * 3.0) / 10  # the last 5 trials: 3 slow, 2 fast
    trials(progress.RECENT_TRIALS, 3.0)
    assert bar.recent_trials() == progress.RECENT_TRIALS
    assert bar.pace() == 3.0 and bar.seconds_left() == (40 - 17) * 2 * 3.0  # the fast trials' pace only
    whole_run = (clock[0] - 30.0) / (17 * 2 - 1)  # what the whole run's mean said: from its first epoch
    assert whole_run > 6 * bar.pace()
    assert "~2 min left" in bar._head()
    trials(2, 12.0)  # and back up as the load returns
    assert bar.pace() == (3 * 3.0 + 2 * 12.0) * 2 / 10


def test_versions_name_sweeps_own_version_when_run_from_a_checkout(monkeypatch):
    # On a GPU machine sweep runs through PYTHONPATH, not installed: its version still gets recorded.
    import tomllib

    from sweep import provenance

    real = provenance.metadata.version

    def not_installed(dist):
        if dist == provenance.DISTRIBUTION:
            raise provenance.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(provenance.metadata, "version", not_installed)
    provenance.versions.cache_clear()
    try:
        expected = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
        assert provenance.versions()["sweep"] == expected != "unknown"
    finally:
        provenance.versions.cache_clear()


def test_commands_that_train_nothing_start_without_torch(made_study, tmp_path):
    """--help, studies, best, export, report and dashboard's checks import no torch: they start in
    a fraction of a second (benchmarks/startup.py measures it). Neither does a run's coordinating
    process on a machine without a GPU: its workers train."""
    url, name = made_study
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    script = f"""
import sys
from typer.testing import CliRunner
from sweep.cli import app
runs = [["--help"], ["--version"], ["run", "--help"], ["studies", "--storage", {url!r}],
        ["best", "--storage", {url!r}], ["export", "--storage", {url!r}, "-f", "csv"],
        ["report", "--storage", {url!r}, "-o", {str(tmp_path / 'r.html')!r}],
        ["dashboard", "--storage", {url!r}, "--port", "1", "--host", "203.0.113.1"]]
from sweep.pool import gpu_possible
if not gpu_possible():  # a run that trains nothing (--timeout 0), where no GPU can be asked for
    runs.append(["run", "--study", {str(study)!r}, "--storage", {db(tmp_path)!r}, "--timeout", "0"])
for args in runs:
    r = CliRunner().invoke(app, args)
    assert r.exit_code in (0, 2), (args, r.output)
    assert "torch" not in sys.modules, args
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
