"""The thread benchmark (benchmarks/threads.py), at a tiny size."""

from __future__ import annotations


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
