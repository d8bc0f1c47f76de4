"""benchmarks/gpu.sh: the script that measures every GPU figure, tried here on the CPU.

A CUDA machine is lent for minutes at a time and runs the script once; a mistake found there costs
the run. `SMOKE=1` runs the engines mode's steps as written, at a toy scale: a 1/16-width network,
350 synthetic faces packed as the FER2013 file is, one-epoch trials."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import env_for_subprocess

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu.sh"
STEPS = ["machine", "imports", "synthetic", "profile", "bench_fuse", "bench_multi", "default", "default_studies",
         "default_export", "beyond", "beyond_studies", "beyond_export"]


def test_gpu_script_parses_and_names_its_modes(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "fuse"], cwd=REPO, capture_output=True, text=True,
                         env=env_for_subprocess(OUT=tmp_path, WHEELS=""))
    assert out.returncode == 2  # the fused modes of --fuse auto are gone: engines replaces them
    assert out.stdout.strip() == "usage: benchmarks/gpu.sh [speed|engines|paper|beyond|all]"


def test_engines_mode_runs_every_step_on_a_cpu(tmp_path):
    """The engines mode end to end, as a CUDA machine runs it but on this CPU: DEVICE=auto, so the
    sweep commands get no --device (auto picks CUDA there, the CPU here)."""
    out = tmp_path / "out"
    env = env_for_subprocess(SMOKE=1, DEVICE="auto", OUT=out, PYTHON=sys.executable, TMPDIR=tmp_path)
    before = _checkout_files()
    r = subprocess.run(["bash", str(SCRIPT), "engines"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = (out / "gpu.log").read_text()
    assert r.returncode == 0, log[-3000:]
    ends = dict(re.findall(r"^=== (\w+): exit (\d+), \d+ s$", log, re.M))
    assert list(ends) == STEPS and set(ends.values()) == {"0"}, ends
    commands = re.findall(r"^=== \w+: (.*)$", log, re.M)
    sweep_calls = [c for c in commands if " -m sweep " in c or c.startswith("sweep ")]
    assert len(sweep_calls) == 8 and not any("--device" in c for c in sweep_calls)
    assert any("--engine multi:4" in c for c in sweep_calls)
    profile = json.loads((out / "profile.json").read_text())
    assert [c["case"] for c in profile["cases"]] == ["multi x2, batch 16"] and profile["cases"][0]["images_per_s"] > 0
    assert re.search(r"^2 fused +[\d.]+ +[\d.]+x", log, re.M) and re.search(r"^2 multi +[\d.]+ +[\d.]+x", log, re.M)
    # both studies ran on the packed stand-in for FER2013, one on each split, and finished their trials
    assert re.search(r"study 'default' .* on fer2013 \[.*official split: 246 train / 52 val / 52 test\]", log)
    assert re.search(r"study 'beyond' .* on fer2013 \[.*stratified split: 209 train / 37 val / 104 test\]", log)
    assert len(re.findall(r"^(default|beyond) +fer2013 +4/4 ", log, re.M)) == 2
    assert "| Test acc. | Angry (val) |" in log  # the beyond export, per class
    assert (out / "default.db").is_file() and (out / "beyond.db").is_file()
    assert not list(tmp_path.glob("tmp.*"))  # its scratch folder is gone
    assert _checkout_files() == before  # and it wrote nothing into the checkout


def _checkout_files() -> set[str]:
    """The checkout's files that git does not ignore, and what the script would write by default."""
    listed = subprocess.run(["git", "ls-files", "--others", "--cached", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    tracked = set(listed.stdout.splitlines()) if listed.returncode == 0 else set()
    return tracked | {p for p in ("gpu-out", "sweep.db", "artifacts") if (REPO / p).exists()}
