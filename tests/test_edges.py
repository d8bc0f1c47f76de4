"""The edges an adversarial run found, one class per test: each bad input is one line and exit 2,
nothing stays RUNNING, and a storage is never written when something is wrong."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweep.cli import app
from sweep.storage import mask
from tests.test_faults import assert_exact_budget, cli, finish, load, study_file, wait_for

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, pattern: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.output


# ---------------------------------------------------------------- study files

BAD_VALUES = [
    ("[fixed]\nwidth = 0", r"fixed\.width: width must be > 0"),
    ("[fixed]\nwidth = 1000", r"fixed\.width: width must be > 0 and at most 4"),
    ("[search]\nlr = { low = 1e-4, high = inf, log = true }", r"search\.lr\.high: must be a finite number"),
    ("[search]\nlr = { low = nan, high = 0.1 }", r"search\.lr\.low: must be a finite number"),
    ("[search]\nbatch_size = { choices = [0, 32] }", r"search\.batch_size\.choices\[0\]: batch_size must be between 1"),
    ("[fixed]\nepochs = 1000000000", r"fixed\.epochs: epochs must be between 1 and 10,000"),
    ("[search]\nepochs = { low = 1, high = 20000 }", r"search\.epochs\.high: epochs must be between 1 and 10,000"),
    ("[fixed]\nlabel_smoothing = 1.5", r"fixed\.label_smoothing"),
]


@pytest.mark.parametrize("body,expected", BAD_VALUES)
def test_values_that_cannot_work_are_refused_naming_their_key(tmp_path, body, expected):
    f = tmp_path / "bad.toml"
    f.write_text(f'description = "x"\n[data]\nsource = "synthetic"\n{body}\n')
    r = sweep("run", "--study", f, "--trials", 1, "--storage", tmp_path / "s.db")
    one_line_error(r, expected)
    assert not (tmp_path / "s.db").exists()


def test_a_failing_sampler_leaves_no_trial_running(tmp_path, tiny_study, monkeypatch):
    """Whatever raises between ask and tell, the trial ends FAIL with the reason."""
    def broken(*args, **kwargs):
        raise RuntimeError("the sampler broke")

    monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent", broken)
    url = f"sqlite:///{tmp_path / 's.db'}"
    r = sweep("run", "--study", tiny_study, "--trials", 2, "--storage", url)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines()[-1] == "sweep: error: asking Optuna for a trial failed: RuntimeError: " \
        "the sampler broke"  # after the run's banner: the one error line
    trials = load(url, "tiny").trials
    assert trials and not any(t.state == TrialState.RUNNING for t in trials)
    assert all(t.state == TrialState.FAIL and "ask failed" in t.user_attrs["fail_reason"] for t in trials)


# ---------------------------------------------------------------- damaged storages and URLs

@pytest.fixture
def damaged(made_study, tmp_path):
    """A copy of a real study's SQLite file with garbage written over pages in its middle."""
    url, _ = made_study
    src = url.removeprefix("sqlite:///")
    path = tmp_path / "damaged.db"
    shutil.copy(src, path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 - (size // 2) % 4096)
        f.write(os.urandom(8192))
    return path


@pytest.mark.parametrize("command", [["studies"], ["best"], ["export"], ["report", "-o", "r.html"],
                                     ["run", "--trials", "1", "--study", "STUDY"], ["worker", "--study", "made"]])
def test_a_damaged_sqlite_file_is_one_line_and_never_written(damaged, tmp_path, command):
    study = tmp_path / "made.toml"
    from tests.conftest import TINY_STUDY

    study.write_text(TINY_STUDY)
    before = hashlib.sha256(damaged.read_bytes()).hexdigest()
    r = sweep(*[str(study) if a == "STUDY" else a for a in command], "--storage", damaged)
    one_line_error(r, r"damaged|not a SQLite database|cannot be read")
    assert "***" not in r.output  # SQLite's headings are not part of the message
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == before
    assert not (tmp_path / "damaged.db.lock").exists() or command[0] in ("run", "worker")


def test_sqlites_findings_are_said_without_its_headings():
    from sweep.storage import _first_finding

    verdict = ["*** in database main ***\nPage 7: btreeInitPage() returns error code 11", "row 3 missing from index"]
    assert _first_finding(verdict) == "Page 7: btreeInitPage() returns error code 11"
    assert _first_finding(["*** in database main ***"]) == "no detail"


def test_passwords_are_masked_wherever_they_sit():
    for url in ["postgresql://:SECRET@host/db", "postgresql://me:SECRET@host/db",
                "postgresql://me:p@SECRET@host/db", "postgresql://me@host/db?password=SECRET",
                "postgresql://me:SECRET@host/db?sslmode=require&password=SECRET"]:
        assert "SECRET" not in mask(url), url
    assert mask("postgresql://me@host/db?sslmode=require") == "postgresql://me@host/db?sslmode=require"


@pytest.mark.parametrize("args,expected", [
    (["--storage", "postgresql://:SECRET@127.0.0.1:1/test"], "cannot open"),
    (["--storage", "postgresql://me@127.0.0.1:1/test?password=SECRET"], "cannot open"),
    (["--storage", "postgresql://me:p@SECRET@127.0.0.1:1/test"], "raw '@'; write it as %40"),
    (["--storage", "postgresql://me@127.0.0.1:port/test"], "not a database URL"),
    (["--storage", "mysql://me@127.0.0.1/test"], "unsupported database 'mysql'"),
    (["--name", ""], "study name cannot be empty"),
    (["--name", "x" * 5000], "a study name holds at most 512"),
    (["--data", "LOOP"], "Too many levels of symbolic links"),
])
def test_bad_urls_names_and_paths_are_one_line(tmp_path, args, expected):
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    args = [str(tmp_path / "loop-a") if a == "LOOP" else a for a in args]
    if "--storage" not in args:
        args += ["--storage", str(tmp_path / "s.db")]
    r = sweep("run", "--trials", 1, "--data", "synthetic", *args) if "--data" not in args else \
        sweep("run", "--trials", 1, *args)
    one_line_error(r, expected)
    assert "SECRET" not in r.output
    assert not (tmp_path / "s.db").exists()


def test_a_storage_path_that_cannot_hold_files_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    for storage in ["/proc/sweep.db", str(tmp_path / "afile" / "s.db")]:
        one_line_error(sweep("run", "--trials", 1, "--storage", storage), "cannot create files|does not exist")


def test_no_lock_file_is_left_beside_something_that_is_no_database(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("not a database, though it is long enough to have a header of sixteen bytes\n" * 3)
    one_line_error(sweep("run", "--trials", 1, "--storage", target), "not a SQLite database")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_symbolic_link_to_a_database_shares_its_one_writer_lock(tmp_path):
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    f = study_file(tmp_path, epochs="{ low = 8, high = 8 }", name="one")
    first = cli("run", "--trials", 2, "--study", f, "--storage", f"sqlite:///{real}")
    wait_for(lambda: load(f"sqlite:///{real}", "one").trials)
    link.symlink_to(real)
    code, _, err = finish(cli("run", "--trials", 2, "--study", f, "--storage", f"sqlite:///{link}"))
    assert code == 2 and "another sweep" in err, err
    first.send_signal(signal.SIGINT)
    assert finish(first)[0] == 130


# ---------------------------------------------------------------- weights and prediction

def _trained(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert sweep("run", "--trials", 2, "--study", tiny_study, "--storage", url, "--keep-top", 1).exit_code == 0
    study = load(url, "tiny")
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    return url, study, best


def test_predict_opens_only_files_of_the_artifact_store(tmp_path, tiny_study):
    from PIL import Image

    url, study, best = _trained(tmp_path, tiny_study)
    img = tmp_path / "face.png"
    Image.new("L", (48, 48), 128).save(img)
    r = sweep("predict", img, "--storage", url)
    assert r.exit_code == 0 and "synthetic" in r.output and "never seen a real face" in r.output, r.output
    engine = optuna.storages.RDBStorage(url).engine
    (tmp_path / "evil.pt").write_bytes(b"x")
    for hostile in ["../evil.pt", "/etc/passwd", "..", "sub/../../evil.pt"]:
        with engine.begin() as con:  # a finished trial's attribute, as a tamperer would
            con.exec_driver_sql("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = "
                                "'weights_artifact'", (f'"{hostile}"', best._trial_id))
        one_line_error(sweep("predict", img, "--storage", url), "not an artifact id|refusing")


def test_predict_with_truncated_weights_is_one_line(tmp_path, tiny_study):
    from PIL import Image

    url, study, best = _trained(tmp_path, tiny_study)
    weights = os.path.join(study.user_attrs["artifact_dir"], best.user_attrs["weights_artifact"])
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    img = tmp_path / "face.png"
    Image.new("L", (48, 48), 128).save(img)
    one_line_error(sweep("predict", img, "--storage", url), "cannot be loaded")


# ---------------------------------------------------------------- start-up and workers

def test_a_worker_killed_while_starting_is_replaced(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    f = study_file(tmp_path, name="st")
    code, _, err = finish(cli("run", "--trials", 2, "--study", f, "--storage", url,
                              env={"SWEEP_FAULT_DIE_STARTING": str(tmp_path / "die-flag")}))
    assert code == 0, err
    assert "died while starting" in err and (tmp_path / "die-flag").exists()
    assert_exact_budget(url, "st", 2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_an_interrupt_during_start_up_is_one_line_and_130(tmp_path, sig, delay):
    """While Python imports (torch included): the same line and exit code as later."""
    p = subprocess.Popen([sys.executable, "-m", "sweep", "run", "--trials", "1", "--storage", str(tmp_path / "s.db")],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith(("sweep:", "Traceback", "terminate"))]
    assert p.returncode == 130 and len(lines) == 1 and lines[0].startswith("sweep: interrupted"), err


@pytest.mark.parametrize("delay", [1.0, 2.0])
def test_a_terminals_ctrl_c_during_start_up_is_one_line_too(tmp_path, delay):
    """A terminal's Ctrl-C reaches the whole process group, the workers' fork server too, which
    imports torch meanwhile: it printed a traceback beside the run's line (4 of 8 delays tried)."""
    p = subprocess.Popen([sys.executable, "-m", "sweep", "run", "--trials", "1", "--storage", str(tmp_path / "s.db")],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith(("sweep:", "Traceback", "terminate", "KeyboardInterrupt"))]
    assert p.returncode == 130 and len(lines) == 1 and lines[0].startswith("sweep: interrupted"), err


# ---------------------------------------------------------------- a late process

def test_a_paused_worker_drops_its_taken_over_trial_and_goes_on(pg_url, tmp_path):
    """A `sweep worker` stopped (SIGSTOP) for longer than the heartbeat grace has its trial failed
    as abandoned and queued again by the others; resumed, it says so in one line and goes on."""
    env = {"SWEEP_HEARTBEAT_S": "1", "SWEEP_GRACE_S": "3"}
    f = study_file(tmp_path, epochs="{ low = 20, high = 20 }", name="late")
    run = cli("run", "--trials", 4, "--study", f, "--name", "late", "--storage", pg_url, env=env)
    wait_for(lambda: "target_trials" in load(pg_url, "late").user_attrs)
    late = cli("worker", "--study", "late", "--storage", pg_url, env=env)
    victim = wait_for(lambda: next((t for t in load(pg_url, "late").trials if t.state == TrialState.RUNNING
                                    and t.user_attrs.get("pid") == late.pid and t.intermediate_values), None))
    late.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: load(pg_url, "late").trials[victim.number].state == TrialState.FAIL, timeout=60)
    finally:
        late.send_signal(signal.SIGCONT)
    for p in (run, late):
        code, _, err = finish(p)
        assert code == 0, err
    assert "taken over by another process" in err and "Traceback" not in err
    trials = assert_exact_budget(pg_url, "late", 4)
    failed = trials[victim.number]
    assert "no heartbeat" in failed.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == failed.params


# ---------------------------------------------------------------- saying what it does

def test_a_bad_argument_is_the_only_line_even_without_fer2013(tmp_path):
    """The 'No FER2013' notice comes only once the arguments are known to be good."""
    for args, expected in [(["--device", "tpu"], "unknown device|unsupported device"),
                           (["--workers", "0"], "--workers must be at least 1"),
                           (["--storage", "/proc/x.db"], "cannot create files"),
                           (["--engine", "lots"], "--engine lots"), (["--engine", "multi:0"], "at least 1")]:
        one_line_error(sweep("run", "--trials", 1, *args), expected)


def test_help_reads_as_a_person_wrote_it():
    top = sweep("--help").output
    commands = top.split("Commands:")[1]
    assert "..." not in commands and "Start with `sweep run`" in top  # no summary cut short
    for command in ["run", "worker", "studies", "best", "dashboard", "export", "report", "bench", "confirm",
                    "predict"]:
        text = sweep(command, "--help").output
        assert not re.search(r"<(str|int|float|int range|float range|list\[str\])>|\{\w+\}", text, re.I), command
    run = sweep("run", "--help").output
    assert "--study FILE|NAME" in run and "[default: default with FER2013 in place, else quick]" in " ".join(run.split())
    assert "--study NAME" in sweep("best", "--help").output
    assert "predict [OPTIONS] IMAGE...\n" in sweep("predict", "--help").output
    version = sweep("--version").output.strip()
    commit = r" \(commit [0-9a-f]{40}(\+dirty)?\)" if (Path(__file__).parents[1] / ".git").exists() else ""
    assert re.fullmatch(rf"fer-sweep \d+\.\d+\.\d+{commit}", version), version  # a checkout names its commit


def test_the_dashboard_names_the_metric_and_a_lowered_budget_is_said(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert sweep("run", "--study", tiny_study, "--trials", 2, "--storage", url).exit_code == 0
    assert load(url, "tiny").metric_names == ["val_acc"]  # optuna-dashboard shows it instead of "Objective 0"
    r = sweep("run", "--study", tiny_study, "--trials", 1, "--storage", url)
    assert r.exit_code == 0 and "budget lowered from 2 to 1 finished trials" in r.output
    assert "nothing is left to run" in r.output and "sweep dashboard" in r.output
    assert "2 finished, more than its budget of 1" in r.output and "2/1" not in r.output


def test_the_end_hint_names_a_command_that_works_here(tmp_path, monkeypatch):
    from sweep.cli import how_to_call

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "sweep"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", ["venv/bin/sweep", "run"])
    assert how_to_call() == "venv/bin/sweep"  # not on PATH: the path as typed
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(exe), "run"])
    assert how_to_call() == "sweep"  # on PATH (an activated environment): the plain name
    monkeypatch.setattr(sys, "argv", [str(Path(__file__).parents[1] / "sweep" / "__main__.py")])
    assert how_to_call().endswith(" -m sweep")


def test_a_storage_locked_for_a_moment_as_a_run_starts_is_waited_for(tmp_path, monkeypatch):
    """SQLite answers 'database is locked' at once, without its busy wait, where two connections
    would wait on each other: a reader polling the file while a run created it made the run fail
    with 'not a SQLite database'. Switching to WAL is tried again; other errors still say what they are."""
    import sqlite3

    from sweep import storage

    real_connect, calls = sqlite3.connect, []

    def connect(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real_connect(*args, **kwargs)

    path = tmp_path / "s.db"
    monkeypatch.setattr(storage.sqlite3, "connect", connect)
    storage._enable_wal(path)
    assert len(calls) == 3
    assert real_connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setattr(storage.sqlite3, "connect", lambda *a, **k: (_ for _ in ()).throw(sqlite3.DatabaseError("file is not a database")))
    with pytest.raises(storage.SweepError, match="not a SQLite database"):
        storage._enable_wal(path)
