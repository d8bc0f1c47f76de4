"""What the command line takes: every usage error is one `sweep: error:` line and exit 2, and a
number is plain digits (no '4_0', ' 4', '+4' or full-width digits, no empty list entry)."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sweep import numbers
from sweep.cli import app
from sweep.errors import SweepError

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(r, *fragments: str) -> str:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), r.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


USAGE_ERRORS = [
    (["run", "--trials", "0"], ["'--trials'", "0 is less than 1", "see `sweep run --help`"]),
    (["run", "--bogus"], ["no such option: --bogus"]),
    (["worker"], ["missing option '--study'", "see `sweep worker --help`"]),
    (["nosuch"], ["no such command 'nosuch'"]),
    (["export", "--format"], ["'--format' requires an argument"]),
    (["dashboard", "--port", "70000"], ["'--port'", "70000 is not between 1 and 65535"]),
    (["bench", "--width", "abc"], ["'--width'", "'abc' is not a number written in plain digits"]),
]


@pytest.mark.parametrize("args,fragments", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_usage_error_is_one_line_and_exit_2(tmp_path, args, fragments):
    one_line(sweep(*args), *fragments)
    assert os.listdir(tmp_path) == []


def test_the_installed_command_says_a_usage_error_in_one_line_too(tmp_path):
    """The real entry point, not only Typer's test runner: no 'Usage:' block, nothing on stdout."""
    r = subprocess.run([sys.executable, "-m", "sweep", "run", "--trials", "0"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.strip().splitlines() == ["sweep: error: invalid value for '--trials': 0 is less than 1; see "
                                             "`sweep run --help`"], r.stderr


NOT_NUMBERS = [
    (["run", "--trials", "4_0"], ["'--trials'", "'4_0' is not a whole number"]),
    (["run", "--trials", " 4"], ["'--trials'", "' 4' is not a whole number"]),
    (["run", "--trials", "+4"], ["'--trials'", "'+4'"]),
    (["run", "--trials", "\uff14"], ["'--trials'", "is not a whole number written in plain digits"]),
    (["run", "--seed", "1_000"], ["'--seed'"]),
    (["run", "--timeout", "1_0"], ["'--timeout'", "'1_0' is not a number"]),
    (["run", "--timeout", "nan"], ["'--timeout'", "'nan' is not a number"]),
    (["run", "--workers", "0x2"], ["'--workers'"]),
    (["run", "--engine", "multi:4_0"], ["--engine multi:4_0: K must be a whole number in plain digits"]),
    (["run", "--engine", "fused: 4"], ["--engine fused: 4: K must be a whole number"]),
    (["run", "--gpus", "0,,1"], ["--gpus '0,,1': entry 2 is empty"]),
    (["run", "--gpus", "0,"], ["--gpus '0,': entry 2 is empty"]),
    (["run", "--storage", "postgresql://me@127.0.0.1:5_432/test"], ["port '5_432' is not a number"]),
    (["bench", "--multi", "1,,2"], ["--multi '1,,2': entry 2 is empty"]),
    (["bench", "--fuse", "1,+2"], ["--fuse '+2': expected a whole number written in plain digits"]),
    (["bench", "--pack", "1_2"], ["--pack '1_2'"]),
    (["export", "--top", "1_0"], ["'--top'"]),
    (["confirm", "--seeds", "\u0663"], ["'--seeds'"]),  # an Arabic-Indic 3: int() reads it
    (["proxy", "--port", "13_000"], ["'--port'"]),
    (["proxy", "--storage", "postgresql://me@127.0.0.1:+5432/test"], ["port '+5432'"]),
]


@pytest.mark.parametrize("args,fragments", NOT_NUMBERS, ids=[" ".join(a) for a, _ in NOT_NUMBERS])
def test_numbers_are_plain_digits_and_lists_have_no_empty_entry(tmp_path, args, fragments):
    if args[0] in ("run", "export", "confirm") and "--storage" not in args:
        args = [*args, "--storage", tmp_path / "s.db"]
    one_line(sweep(*args), *fragments)
    assert os.listdir(tmp_path) == []


def test_plain_numbers_still_read_as_they_say(tmp_path):
    assert numbers.whole("40", "--x") == 40 and numbers.whole("-1", "--x") == -1
    assert numbers.decimal("1.5", "--x") == 1.5 and numbers.decimal("1e3", "--x") == 1000.0
    assert numbers.decimal(".5", "--x") == 0.5
    assert numbers.whole_list("1,2,4", "--x", "1,2") == [1, 2, 4]
    for bad in ["4_0", " 4", "4 ", "+4", "\uff14", "", "0x10", "4.0"]:
        with pytest.raises(SweepError, match="plain digits"):
            numbers.whole(bad, "--x")
    for bad in ["1_0.5", "inf", "nan", "1e", "\uff11.5", "."]:
        with pytest.raises(SweepError, match="plain digits"):
            numbers.decimal(bad, "--x")
    r = sweep("run", "--trials", "3", "--timeout", "0", "--seed", "7", "--data", "synthetic", "--storage",
              tmp_path / "s.db", "--quiet")
    assert r.exit_code == 0 and "0/3 finished" in r.output, r.output


def test_proxy_help_offers_only_storages_it_serves():
    text = " ".join(sweep("proxy", "--help").output.split())
    assert "postgresql://USER@HOST/DB" in text and "grpc://HOST:PORT (a `sweep proxy`)" not in text
    assert "--storage grpc://HOST:PORT" in text  # what its workers pass: the docstring says so
