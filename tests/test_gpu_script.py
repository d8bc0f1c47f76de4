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
STEPS = ["machine", "imports", "synthetic", "profile", "speed", "auto", "study_plain", "study_auto", "table"]


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
    r = subprocess.run(["bash", str(SCRIPT), "engines"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    log = (out / "gpu.log").read_text()
    assert r.returncode == 0, log[-3000:]
    ends = dict(re.findall(r"^=== (\w+): exit (\d+), \d+ s$", log, re.M))
    assert list(ends) == STEPS, ends
    # each study is stopped by Ctrl-C after its time (timeout says 124); every other step ends well
    assert {k: v for k, v in ends.items() if not k.startswith("study_")} == {k: "0" for k in STEPS if not k.startswith("study_")}
    assert {ends["study_plain"], ends["study_auto"]} <= {"0", "124"}
    assert "=== mps: nvidia-cuda-mps-control could not start here: left out" in log
    commands = re.findall(r"^=== \w+: (.*)$", log, re.M)
    sweep_calls = [c for c in commands if " -m sweep " in c]
    assert len(sweep_calls) == 2 and not any("--device" in c for c in sweep_calls)
    assert any("--engine plain" in c for c in sweep_calls) and any("--engine auto" in c for c in sweep_calls)
    profile = json.loads((out / "profile.json").read_text())
    assert [c["case"] for c in profile["cases"]] == ["graph x2, batch 16"] and profile["cases"][0]["images_per_s"] > 0
    speed = json.loads((out / "speed.json").read_text())
    assert [row["case"] for row in speed["rows"]] == ["plain eager", "graph:1", "graph:2", "graph:4", "graph:8",
                                                      "graph:16", "multi:4", "fused:16"]  # compiling left out on a CPU
    assert speed["rows"][0]["vs_plain"] == 1.0 and all(row["images_per_s"] > 0 for row in speed["rows"])
    assert json.loads((out / "auto.json").read_text())["engine"] == "plain"  # off CUDA auto is plain
    # both studies trained on the packed stand-in for FER2013, for the same time, and finished trials
    assert len(re.findall(r"study 'default' .* on fer2013 \[.*official split: 246 train / 52 val / 52 test\]", log)) == 2
    table = log[log.index("=== table:"):]
    assert "| what | images/s (aggregate) | vs plain eager | note |" in table
    for row in ("| profile: graph x2, batch 16 |", "| plain eager |", "| graph:16 |", "| fused:16 |",
                "| 4 processes under MPS | - | - | MPS could not start here |", "| `default` study, plain |",
                "| `default` study, auto (plain:1) |"):
        assert row in table, row
    finished = [int(n) for n in re.findall(r"\| `default` study, \w+[^|]*\| [\d.]+ trials finished a minute \| [^|]* \| (\d+) finished", table)]
    assert len(finished) == 2 and min(finished) >= 1, table
    assert (out / "plain.db").is_file() and (out / "auto.db").is_file()
    assert not list(tmp_path.glob("tmp.*"))  # its scratch folder is gone
    assert _checkout_files() == before  # and it wrote nothing into the checkout


def _checkout_files() -> set[str]:
    """The checkout's files that git does not ignore, and what the script would write by default."""
    listed = subprocess.run(["git", "ls-files", "--others", "--cached", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    tracked = set(listed.stdout.splitlines()) if listed.returncode == 0 else set()
    return tracked | {p for p in ("gpu-out", "sweep.db", "artifacts") if (REPO / p).exists()}
