"""Keeping the best trials' weights, predicting with them, and confirming the best with new seeds."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from sweep.cli import app

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_only_the_top_k_keep_weights_and_predict_uses_the_best(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    r = sweep("run", "--trials", 6, "--study", tiny_study, "--storage", url, "--keep-top", 2)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="tiny", storage=url)
    store = tmp_path / "w-artifacts"
    assert study.user_attrs["artifact_dir"] == str(store)
    files = [f for f in os.listdir(store) if not f.startswith(".")]
    assert len(files) == 2  # the best two; those pushed out were deleted
    ranked = sorted([t for t in study.trials if t.state == TrialState.COMPLETE], key=lambda t: (-t.value, t.number))
    kept = {t.user_attrs["weights_artifact"] for t in ranked[:2]}
    assert kept == set(files)
    assert not any("weights_artifact" in t.user_attrs for t in study.trials if t.state != TrialState.COMPLETE)

    img = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((90, 70, 3)) * 255).astype("uint8")).save(img)
    r = sweep("predict", img, img, "--storage", url, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["trial"] == ranked[0].number and len(out["predictions"]) == 2
    probs = out["predictions"][0]["probabilities"]
    assert list(probs) == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert abs(sum(probs.values()) - 1) < 1e-4
    assert out["predictions"][0]["emotion"] == max(probs, key=probs.get)

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    r = sweep("predict", img, bad, "--storage", url)
    assert r.exit_code == 2 and "bad.jpg: not a readable image" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_predict_without_kept_weights_is_a_clear_error(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 'n.db'}"
    assert sweep("run", "--trials", 2, "--study", tiny_study, "--storage", url, "--keep-top", 0).exit_code == 0
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(img)
    r = sweep("predict", img, "--storage", url)
    assert r.exit_code == 2 and "kept no weights" in r.output


def _copy(made_study, tmp_path) -> tuple[str, str]:
    """A private copy of the shared study, which confirm writes into."""
    url, name = made_study
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=copy, to_study_name=name)
    return copy, name


def test_confirm_records_mean_and_std_and_export_shows_them(made_study, tmp_path):
    copy, name = _copy(made_study, tmp_path)
    r = sweep("confirm", "--storage", copy, "--top", 2, "--seeds", 2)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name=name, storage=copy)
    best = sorted([t for t in study.trials if t.state == TrialState.COMPLETE], key=lambda t: (-t.value, t.number))[:2]
    for t in best:
        rec = json.loads(study.user_attrs[f"confirm:{t.number}"])
        assert len(rec["seeds"]) == 2 and t.user_attrs["seed"] not in rec["seeds"]
        assert abs(rec["val_mean"] - sum(rec["val"]) / 2) < 1e-12 and rec["test_mean"] is not None
    r = sweep("export", "--storage", copy, "-f", "csv", "--per-class")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    first = rows[0]
    assert float(first["val_mean"]) == json.loads(study.user_attrs[f"confirm:{first['trial']}"])["val_mean"]
    assert first["n_seeds"] == "2" and rows[-1]["n_seeds"] in ("", "2")
    assert {"val_acc_angry", "val_acc_disgust", "val_acc_neutral"} <= set(first)


def test_confirm_keeps_each_seed_and_trains_only_the_missing_ones(made_study, tmp_path):
    from sweep.confirm import confirmation_seeds

    copy, name = _copy(made_study, tmp_path)
    r = sweep("confirm", "--storage", copy, "--top", 1, "--seeds", 1)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name=name, storage=copy)
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    first = json.loads(study.user_attrs[f"confirm:{best.number}"])

    r = sweep("confirm", "--storage", copy, "--top", 1, "--seeds", 3)  # two more, the first kept
    assert r.exit_code == 0, r.output
    assert "1 seed(s) already recorded" in r.output
    assert sum(" seed " in line and "val" in line for line in r.output.splitlines()) == 2
    study = optuna.load_study(study_name=name, storage=copy)
    rec = json.loads(study.user_attrs[f"confirm:{best.number}"])
    assert rec["seeds"] == confirmation_seeds(int(study.user_attrs["seed"]), best.number, 3)
    assert rec["val"][0] == first["val"][0] and len(rec["val"]) == len(rec["test"]) == 3

    r = sweep("confirm", "--storage", copy, "--top", 1, "--seeds", 2)  # fewer: nothing trained or lost
    assert r.exit_code == 0 and "3 seed(s) already recorded" in r.output
    assert not any(" seed " in line and "val" in line for line in r.output.splitlines())
    study = optuna.load_study(study_name=name, storage=copy)
    assert json.loads(study.user_attrs[f"confirm:{best.number}"]) == rec
    assert "over 3 seeds" in r.output


def test_confirm_stopped_by_sigterm_keeps_the_seeds_it_trained(tmp_path):
    study_file = tmp_path / "slowc.toml"
    study_file.write_text("""
[data]
n_images = 400
[fixed]
width = 0.125
epochs = 6
""")
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert sweep("run", "--trials", 1, "--study", study_file, "--storage", url).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "confirm", "--seeds", "5", "--storage", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1], start_new_session=True)
    deadline, rec = time.time() + 120, None
    while time.time() < deadline and rec is None:
        time.sleep(0.3)
        rec = optuna.load_study(study_name="slowc", storage=url).user_attrs.get("confirm:0")
    assert rec is not None, "no seed was recorded"
    os.kill(proc.pid, signal.SIGTERM)
    os.killpg(proc.pid, signal.SIGTERM)  # as `timeout` does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "every seed trained so far is recorded" in err
    kept = json.loads(optuna.load_study(study_name="slowc", storage=url).user_attrs["confirm:0"])
    assert 1 <= len(kept["seeds"]) < 5 and len(kept["val"]) == len(kept["seeds"])
