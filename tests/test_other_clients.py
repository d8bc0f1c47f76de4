"""A storage shared with the rest of the Optuna world: studies made or changed by other clients (the
`optuna` CLI, Optuna's API, a tool that renames) in a second process, on SQLite and PostgreSQL.
`sweep` never trains into a study it did not make, reads one as what it is, treats a stored value
it did not expect as missing, shows names as they are, and loses nothing already stored."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from sweep.cli import app
from tests.test_limits import copy_db, one_line_error

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args])


def another_process(code: str, *args) -> str:
    """Python `code` run with Optuna in a process of its own (argv: `args`); its stdout."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---------------------------------------------------------------- names nobody can see

@pytest.mark.parametrize("ch", ["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u00a0", "\u202e"])
def test_a_name_with_an_invisible_character_is_refused_as_a_control_character_is(tmp_path, ch):
    db = tmp_path / "s.db"
    one_line_error(sweep("run", "--data", "synthetic", "--trials", 1, "--name", f"fer{ch}2013", "--storage", db),
                   "a study name cannot hold control characters or invisible ones", f"U+{ord(ch):04X}")
    assert not db.exists()


def test_a_name_another_tool_gave_is_shown_escaped_by_every_output(made_study, tmp_path):
    url, _ = made_study
    path = copy_db(url, tmp_path / "renamed.db")
    another_process("""
        import sqlite3, sys
        with sqlite3.connect(sys.argv[1]) as con:
            con.execute("UPDATE studies SET study_name = ?", ("made\\u202eevil\\u200bname",))
            con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'device_name'", ('"cpu\\u2060x"',))
        """, path)
    outputs = {}
    for command in (["studies"], ["studies", "--json"], ["best"], ["best", "--json"],
                    *(["export", "-f", fmt] for fmt in ("md", "csv", "latex", "json", "html"))):
        r = sweep(*command, "--storage", path)
        assert r.exit_code == 0, (command, r.output)
        outputs[" ".join(command)] = r.output
    assert sweep("report", "--storage", path, "-o", tmp_path / "r.html").exit_code == 0
    outputs["report"] = (tmp_path / "r.html").read_text()
    for command, text in outputs.items():
        assert not any(ch in text for ch in "\u202e\u200b\u2060"), command
    for command in ("studies", "best", "export -f md", "export -f latex", "export -f html", "report"):
        assert "u202eevil" in outputs[command] and "u200bname" in outputs[command], command  # written out
    for command in ("best", "export -f md", "export -f csv", "export -f html", "report"):
        assert "u2060x" in outputs[command], command
    assert json.loads(outputs["best --json"])["study"] == "made\u202eevil\u200bname"  # JSON keeps the value itself


# ---------------------------------------------------------------- studies other clients made

def optuna_cli(*args) -> subprocess.CompletedProcess:
    """The `optuna` command, as a person beside `sweep` runs it."""
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "optuna"), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def fresh_name(prefix: str) -> str:
    """A study name no other test uses: the PostgreSQL database is shared by the whole run."""
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_study_the_optuna_cli_made_is_refused_in_one_line_and_left_as_it_was(url, tiny_study):
    import optuna

    minimize, maximize = fresh_name("cli-min"), fresh_name("cli-max")
    optuna_cli("create-study", "--study-name", minimize, "--storage", url)  # minimize: Optuna's default
    optuna_cli("create-study", "--study-name", maximize, "--direction", "maximize", "--storage", url)
    line = one_line_error(sweep("run", "--trials", 2, "--study", tiny_study, "--name", minimize, "--storage", url),
                          f"study '{minimize}' was not made by `sweep run`", "its direction is minimize",
                          "sweep never trains into it")
    assert f"optuna delete-study --study-name {minimize} --storage" in line  # what to do: it is empty
    one_line_error(sweep("run", "--trials", 2, "--study", tiny_study, "--name", maximize, "--add", "--storage", url),
                   "no sweep study definition", "pick another --name")
    for name, direction in ((minimize, "MINIMIZE"), (maximize, "MAXIMIZE")):
        study = optuna.load_study(study_name=name, storage=url)
        assert study.trials == [] and study.user_attrs == {} and study.direction.name == direction


LOSS_STUDY = """
    import sys
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, name, pair = sys.argv[1:]
    study = optuna.create_study(study_name=name, storage=url)  # a loss, minimised
    study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 2) ** 2 * 100 + t.suggest_int("n", 1, 5), n_trials=5)
    print(study.best_value)
    optuna.create_study(study_name=pair, storage=url, directions=["minimize", "maximize"]).optimize(
        lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    """


def test_a_study_optunas_api_made_is_read_as_what_it_is_and_never_trained_into(url, tiny_study, tmp_path):
    import optuna

    name, pair = fresh_name("loss"), fresh_name("pair")
    best = float(another_process(LOSS_STUDY, url, name, pair))
    text = sweep("best", "--study", name, "--storage", url)
    assert text.exit_code == 0 and "%" not in text.output and "val accuracy" not in text.output, text.output
    assert f"value          {best:.6g}  (minimized)" in text.output
    record = json.loads(sweep("best", "--study", name, "--storage", url, "--json").output)
    assert (record["val_acc"], record["value"], record["direction"]) == (None, best, "minimize")
    table = sweep("export", "--study", name, "--storage", url)
    assert table.exit_code == 0 and "%" not in table.output, table.output
    rows = table.output.splitlines()
    assert rows[0] == "| Rank | Trial | n | x | value |" and rows[2].endswith(f"| {best:.6g} |")  # the least first
    assert "made by another tool (minimize value)" in rows[-1]
    rows = json.loads(sweep("export", "--study", name, "--storage", url, "-f", "json").output)["rows"]
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows) and "val_acc" not in rows[0]
    listed = [line for line in sweep("studies", "--storage", url).output.splitlines() if line.startswith(name)]
    assert len(listed) == 1 and listed[0].endswith(f"{best:.6g} (min)")
    assert sweep("report", "--study", name, "--storage", url, "-o", tmp_path / "r.html").exit_code == 0
    one_line_error(sweep("best", "--study", pair, "--storage", url), f"study '{pair}' has 2 objectives")
    for command in (["run", "--trials", 2, "--study", tiny_study, "--name", name, "--add"],
                    ["worker", "--study", name], ["confirm", "--study", name]):
        one_line_error(sweep(*command, "--storage", url), f"study '{name}' was not made by `sweep run`")
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert len(trials) == 5 and all(set(t.params) == {"x", "n"} for t in trials)  # nothing of sweep's mixed in


# ---------------------------------------------------------------- the running study deleted

def test_the_running_study_deleted_by_another_client_stops_the_run_in_one_line(url, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from tests.conftest import TINY_STUDY
    from tests.test_faults import cli, finish, load, wait_for

    name, bystander = fresh_name("deleted"), fresh_name("bystander")
    another_process("""
        import sys, optuna
        optuna.create_study(study_name=sys.argv[2], storage=sys.argv[1]).optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        """, url, bystander)
    f = tmp_path / "long.toml"  # trials of 30 epochs, none pruned: the run is still training when the study goes
    f.write_text(TINY_STUDY.split("[pruner]")[0].replace("epochs = { low = 1, high = 3 }", "epochs = { low = 30, high = 30 }"))
    run = cli("run", "--trials", 8, "--study", f, "--name", name, "--storage", url)
    wait_for(lambda: run.poll() is not None or any(t.state == TrialState.COMPLETE for t in load(url, name).trials))
    assert run.poll() is None, finish(run)
    optuna_cli("delete-study", "--study-name", name, "--storage", url)
    code, out, err = finish(run)
    lines = [line for line in err.splitlines() if line.startswith(("sweep:", "Traceback"))]
    assert code == 2 and len(lines) == 1 and out == "", err
    assert lines[0].startswith(f"sweep: error: study '{name}' was deleted from the storage by another client")
    assert "this run finished among them" in lines[0] and "stopped its workers" in lines[0]
    assert name not in optuna.get_all_study_names(url)
    assert len(optuna.load_study(study_name=bystander, storage=url).trials) == 3  # nothing else was touched


# ---------------------------------------------------------------- attributes another client rewrote

REWRITE = """
    import json, sys
    import optuna, sqlalchemy
    url, name = sys.argv[1:]
    study = optuna.load_study(study_name=name, storage=url)
    study.set_user_attr("data_name", {"nested": {"dict": 1}})  # a nested object where a string was
    study.set_user_attr("target_trials", {"n": float("nan")})  # an object (holding NaN) where a number was
    study.set_user_attr("confirm:0", "not json")
    ids = [t._trial_id for t in study.trials]
    rewrites = {"test_acc": float("nan"), "train_s": {"a": {"b": 1}}, "device_name": "x" * 1_000_000,
                "val_confusion": [[1, 2], "x"], "epochs_run": {"n": 2}, "seed": "3", "images_per_s": [1]}
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as con:  # finished trials: Optuna's API refuses, a client with SQL does not
        for key, value in rewrites.items():
            con.execute(sqlalchemy.text("UPDATE trial_user_attributes SET value_json = :v WHERE key = :k AND "
                                        "trial_id IN (" + ",".join(map(str, ids)) + ")"),
                        {"v": json.dumps(value), "k": key})
    """


def snapshot(url: str, name: str) -> list:
    """Every stored row of the study: what a reader must leave exactly as it was."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as con:
        sid = con.execute(sqlalchemy.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}).scalar()
        out = [con.execute(sqlalchemy.text(f"SELECT * FROM {table} WHERE study_id = :s ORDER BY 1"), {"s": sid}).all()
               for table in ("trials", "study_user_attributes")]
        for table in ("trial_user_attributes", "trial_values", "trial_params"):
            out.append(con.execute(sqlalchemy.text(
                f"SELECT x.* FROM {table} x JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s ORDER BY 1"),
                {"s": sid}).all())
    engine.dispose()
    return out


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_attributes_another_client_rewrote_read_as_missing_and_nothing_is_changed(url, tiny_study, tmp_path):
    name = fresh_name("rewritten")
    assert sweep("run", "--trials", 3, "--study", tiny_study, "--name", name, "--storage", url, "-q").exit_code == 0
    another_process(REWRITE, url, name)
    before = snapshot(url, name)
    outputs = {}
    for command in (["studies"], ["studies", "--json"], ["best"], ["best", "--json"], ["export", "--per-class"],
                    *(["export", "-f", fmt] for fmt in ("md", "csv", "latex", "json", "html"))):
        r = sweep(*command, *(["--study", name] if command[0] != "studies" else []), "--storage", url)
        assert r.exit_code == 0 and "Traceback" not in r.output, (command, r.output)
        assert len(r.output) < 20_000 and "xxxxxxxxxx" not in r.output, command  # the megabyte is not shown
        outputs[" ".join(command)] = r.output
    report = sweep("report", "--study", name, "--storage", url, "-o", tmp_path / "r.html")
    assert report.exit_code == 0 and "xxxxxxxxxx" not in (tmp_path / "r.html").read_text(), report.output
    mine = [row for row in strict_json(outputs["studies --json"]) if row["study"] == name]
    assert mine[0]["data"] is None and mine[0]["budget"] is None  # NaN and a nested object: missing, as null
    best = strict_json(outputs["best --json"])
    assert best["test_acc"] is None and best["train_s"] is None and best["device_name"] is None
    assert best["epochs_run"] is None and best["seed"] is None and best["val_acc"] is not None
    rows = strict_json(outputs["export -f json"])["rows"]
    assert all(r["test_acc"] is None and r["train_s"] is None and r["device"] is None for r in rows)
    assert "| - | - | - |" in outputs["export -f md"]  # test accuracy, seconds and device: not recorded
    assert snapshot(url, name) == before  # reading changed nothing
    r = sweep("run", "--trials", 4, "--study", tiny_study, "--name", name, "--storage", url, "-q")
    assert r.exit_code == 0 and "4/4 finished" in r.output, r.output  # the study goes on
