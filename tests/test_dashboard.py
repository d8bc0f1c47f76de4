"""The real optuna-dashboard, served by `sweep dashboard`, over HTTP and in headless Chromium."""

import json
import socket
import os
import subprocess
import sys
import time
import urllib.error
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


def test_every_weights_link_the_dashboard_lists_downloads(made_study):
    """Only the kept top K list weights, and each listed file answers 200 with its bytes, named .pt;
    trials pushed out of the top K list none (their files are gone)."""
    url, name = made_study
    study = optuna.load_study(study_name=name, storage=url)
    store = study.user_attrs["artifact_dir"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    had_weights = [t for t in study.trials if "weights_artifact" in t.user_attrs]
    assert len(had_weights) > min(3, len(complete))  # some were pushed out of the top 3 during the run
    port = free_port()
    proc = start_dashboard(url, port)
    try:
        _, body = get_json(f"http://127.0.0.1:{port}/api/studies")
        study_id = {s["study_name"]: s["study_id"] for s in body["study_summaries"]}[name]
        _, detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0")
        assert len(detail["trials"]) == len(study.trials)
        listed = {}
        for t in detail["trials"]:
            for a in t["artifacts"]:
                link = f"http://127.0.0.1:{port}/artifacts/{study_id}/{t['trial_id']}/{a['artifact_id']}"
                with urllib.request.urlopen(link, timeout=10) as r:
                    assert r.status == 200, link
                    data = r.read()
                with open(os.path.join(store, a["artifact_id"]), "rb") as f:
                    assert data == f.read()
                assert a["filename"] == f"{name}-trial-{t['number']}.pt"
                listed[t["number"]] = a["artifact_id"]
    finally:
        _, err = stop(proc)
    ranked = sorted(complete, key=lambda t: (-t.value, t.number))
    assert sorted(listed) == sorted(t.number for t in ranked[:3])
    assert sorted(f for f in os.listdir(store) if not f.startswith(".")) == sorted(listed.values())
    assert "Traceback" not in err and "GET /" not in err  # a quiet console: no access lines


def test_dashboard_hides_entries_without_a_file_and_says_errors_in_one_line(made_study, tmp_path):
    """An entry whose file is gone (deleted by hand, or left by an older sweep) is not listed and
    its link answers 404; a request that fails is one line on the console, never a traceback."""
    url, name = made_study
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=copy, to_study_name=name)
    storage = optuna.storages.RDBStorage(copy)
    study = optuna.load_study(study_name=name, storage=storage)
    trial = study.trials[0]
    gone = "00000000-0000-0000-0000-000000000000"
    meta = {"artifact_id": gone, "filename": "x.pt", "mimetype": "application/x-pytorch", "encoding": None}
    storage.set_study_system_attr(study._study_id, f"dashboard:artifacts:{trial._trial_id}:{gone}", json.dumps(meta))
    port = free_port()
    proc = start_dashboard(copy, port)
    try:
        _, detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study._study_id}?after=0")
        listed = [a["artifact_id"] for t in detail["trials"] for a in t["artifacts"]]
        assert gone not in listed and len(listed) == 3
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{trial._trial_id}/{gone}")
            raise AssertionError("a missing file was served")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        # a damaged entry makes the dashboard's own code fail: the API view and a download route
        storage.set_study_system_attr(study._study_id, "artifacts:1234abcd", "{not json")
        for path in (f"/api/studies/{study._study_id}?after=0", f"/artifacts/{study._study_id}/1234abcd"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
                raise AssertionError(f"{path} did not fail")
            except urllib.error.HTTPError as e:
                assert e.code == 500
    finally:
        _, err = stop(proc)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and not any("GET /" in line and "HTTP/1.1" in line for line in lines), err
    errors = [line for line in lines if line.startswith("sweep dashboard:")]
    assert len(errors) == 2 and all("JSONDecodeError" in line or "Expecting" in line for line in errors), err
