"""The real optuna-dashboard, served by `sweep dashboard`, over HTTP and in headless Chromium."""

import json
import socket
import os
import subprocess
import sys
import time
import urllib.request

import optuna
from optuna.trial import TrialState

from tests import browser
from tests.conftest import TINY_STUDY, free_port



def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def start_dashboard(url: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "dashboard", "--storage", url, "--port", str(port)],
                            cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            get_json(f"http://127.0.0.1:{port}/api/studies", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.communicate()[1])
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("dashboard did not come up")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_dashboard_serves_a_study_made_by_sweep_run_and_renders_it(made_study):
    url, name = made_study
    port = free_port()
    proc = start_dashboard(url, port)
    try:
        status, body = get_json(f"http://127.0.0.1:{port}/api/studies")
        assert status == 200
        summaries = {s["study_name"]: s for s in body["study_summaries"]}
        assert name in summaries
        study_id = summaries[name]["study_id"]
        status, detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0")
        n_trials = len(optuna.load_study(study_name=name, storage=url).trials)
        assert len(detail["trials"]) == n_trials
        dom, errors = browser.render(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}",
                                     screenshot="dashboard.png", size="1400,1400")
        # The page is drawn by JavaScript: these strings exist only after React rendered the study.
        assert name in dom, dom[:2000]
        assert "Best Trial" in dom or "best trial" in dom.lower()
        assert errors == [], errors
        dom_trials, _ = browser.render(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials",
                                       screenshot="dashboard-trials.png", size="1400,1400")
        assert "Trial 0" in dom_trials or "#0" in dom_trials
    finally:
        stop(proc)


def test_dashboard_prints_localhost_url(made_study):
    url, _ = made_study
    port = free_port()
    proc = start_dashboard(url, port)
    _, err = stop(proc)
    assert f"http://127.0.0.1:{port}/" in err


def test_dashboard_bad_input(made_study, tmp_path):
    url, _ = made_study
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sweep", "dashboard", "--storage", url, "--port", str(port)],
                           cwd=os.getcwd(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    missing = tmp_path / "missing.db"
    r = subprocess.run([sys.executable, "-m", "sweep", "dashboard", "--storage", f"sqlite:///{missing}"],
                       cwd=os.getcwd(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such file" in r.stderr and not missing.exists()
    r = subprocess.run([sys.executable, "-m", "sweep", "dashboard", "--storage", url, "--artifact-dir",
                        str(tmp_path / "nope")], cwd=os.getcwd(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--artifact-dir" in r.stderr and "no such directory" in r.stderr


def test_dashboard_polling_while_a_sweep_writes_sqlite(tmp_path):
    """No 'database is locked' in the sweep, no trial lost, every poll answered."""
    study_file = tmp_path / "live.toml"
    study_file.write_text(TINY_STUDY)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    n = 10
    sweep = subprocess.Popen([sys.executable, "-m", "sweep", "run", "--trials", str(n), "--study", str(study_file),
                              "--storage", url], cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "live.db").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    port = free_port()
    dash = start_dashboard(url, port)
    polls, failures = 0, []
    try:
        while sweep.poll() is None:
            try:
                status, body = get_json(f"http://127.0.0.1:{port}/api/studies")
                for s in body["study_summaries"]:
                    get_json(f"http://127.0.0.1:{port}/api/studies/{s['study_id']}?after=0")
                polls += 1
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                failures.append(repr(e))
            time.sleep(0.05)
        out, err = sweep.communicate()
    finally:
        _, dash_err = stop(dash)
    assert sweep.returncode == 0, err
    assert "locked" not in err.lower() and "locked" not in dash_err.lower()
    assert failures == []
    assert polls >= 5
    trials = optuna.load_study(study_name="live", storage=url).trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]
