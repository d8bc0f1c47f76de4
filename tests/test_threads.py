"""The workers' OpenMP wait policy (sweep/openmp.py): what libgomp in the workers' fork server read,
and the thread benchmark that chose it (benchmarks/threads.py), at a tiny size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.openmp import USER_KEYS, WORKER_OPENMP_ENV, worker_openmp_env

ROOT = Path(__file__).resolve().parents[1]

# Starts the run's fork server as `sweep run` does, forks one process from it, and says whether
# this (coordinating) process imported torch: it must not, or its own OpenMP would print here too.
FORK_ONE = """
import os, sys
from sweep.pool import _context, fork_server
with fork_server():
    p = _context().Process(target=os.getpid)
    p.start()
    p.join()
print("coordinator imported torch:", "torch" in sys.modules)
"""


def _fork_server_openmp(**env: str) -> dict[str, str]:
    """The settings libgomp reported as it loaded in the fork server (OMP_DISPLAY_ENV)."""
    clean = {k: v for k, v in os.environ.items() if k not in USER_KEYS}
    out = subprocess.run([sys.executable, "-c", FORK_ONE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**clean, **env, "OMP_DISPLAY_ENV": "verbose"})
    assert out.returncode == 0, out.stderr
    assert "coordinator imported torch: False" in out.stdout
    shown = dict(re.findall(r"^\s+(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", out.stderr, re.M))
    if "GOMP_SPINCOUNT" not in shown:
        pytest.skip("torch here does not load GNU OpenMP (libgomp), whose settings this test reads")
    return shown


def _spin_of(env: dict[str, str]) -> str:
    """libgomp's spin count for an environment it reads (its documented defaults)."""
    if "GOMP_SPINCOUNT" in env:
        return env["GOMP_SPINCOUNT"]
    return {"PASSIVE": "0", "ACTIVE": "30000000000"}.get(env.get("OMP_WAIT_POLICY", ""), "300000")


def test_the_fork_servers_openmp_waits_as_the_workers_policy_says_unless_the_user_said():
    """Set in the worker it would be too late (OpenMP read it when the fork server imported torch):
    what libgomp itself reports in the fork server is the workers' policy; a user's setting wins."""
    assert _fork_server_openmp()["GOMP_SPINCOUNT"] == _spin_of(WORKER_OPENMP_ENV) != _spin_of({})
    assert _fork_server_openmp(OMP_WAIT_POLICY="ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE",
                                                             "GOMP_SPINCOUNT": _spin_of({"OMP_WAIT_POLICY": "ACTIVE"})}
    assert _fork_server_openmp(GOMP_SPINCOUNT="5000")["GOMP_SPINCOUNT"] == "5000"


def test_a_workers_environment_carries_the_policy_unless_the_user_set_their_own():
    assert worker_openmp_env({"PATH": "/bin"}) == WORKER_OPENMP_ENV
    for key in USER_KEYS:
        assert worker_openmp_env({key: "whatever the user chose"}) == {}
    mine = {"PATH": "/bin", "OMP_WAIT_POLICY": "ACTIVE"}
    assert {**mine, **worker_openmp_env(mine)}["OMP_WAIT_POLICY"] == "ACTIVE"


def test_thread_benchmark_runs_every_condition_quiet_and_busy(capsys):
    """A tiny run of `python -m benchmarks.threads`: the table's structure, every condition under
    both loads, each child's figures; the figures themselves are docs/benchmarks.md's business."""
    from benchmarks.threads import BASELINE, conditions, main, usable_cores

    result = main(["--repeats", "1", "--epochs", "1", "--n-images", "240", "--busy", "1", "--spin", "1000"])
    names = list(conditions(usable_cores(), [1000]))
    assert [row["condition"] for row in result["rows"]] == names and BASELINE in names and "1 thread" in names
    for row in result["rows"]:
        for load in ("quiet", "busy"):
            for key in ("wall_s", "cpu_s"):
                assert len(row[f"{load}_{key}_all"]) == 1 and row[f"{load}_{key}"] > 0
        assert row["threads"] == (1 if row["condition"] == "1 thread" else usable_cores())
    base = next(row for row in result["rows"] if row["condition"] == BASELINE)
    assert base["quiet_wall_s_ratio"] == base["busy_cpu_s_ratio"] == 1.0
    assert result["openmp"] and len(result["load_avg_1min"]) == 2
    table = capsys.readouterr().out.splitlines()
    header = table.index("| condition | torch threads | quiet wall s | quiet CPU s | busy wall s | busy CPU s |")
    rows = table[header + 2:header + 2 + len(names)]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == names
    assert all(len(r.split(" | ")) == 6 and r.count("x)") == 4 for r in rows)


def test_thread_benchmarks_sweep_run_trains_into_a_storage_of_its_own(tmp_path, tiny_study):
    """`--sweep`'s measurement: a real `sweep run` (here of the tiny study) into a new storage."""
    import optuna

    from benchmarks.threads import run_sweep

    out = run_sweep({"GOMP_SPINCOUNT": "300000"}, 2, str(tmp_path), 7, study=str(tiny_study))
    assert out["wall_s"] > 0 and out["cpu_s"] > 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/s7.db")
    assert len([t for t in study.trials if t.state.is_finished()]) == 2
