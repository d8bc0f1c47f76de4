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
