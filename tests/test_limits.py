"""Ceilings, special files, study-file steps and names that reach other formats: every bad value
is one line naming the option or key and its limit, exit 2, and nothing is written."""

import contextlib
import csv
import hashlib
import io
import os
import re
import sqlite3
import threading

import pytest
from typer.testing import CliRunner

from sweep.cli import app
from sweep.limits import max_workers
from tests.conftest import TINY_STUDY

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args])


def copy_db(url: str, path):
    """A private copy of a SQLite storage, its WAL's pages included."""
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as src, \
            contextlib.closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
    return path


def one_line_error(r, *fragments: str) -> str:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), r.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# ---------------------------------------------------------------- 1. values without a ceiling

OPTIONS = [
    (["run", "--workers", 100000], ["--workers 100,000", f"at most {max_workers()}"]),
    (["run", "--seed", 2**32], ["--seed 4,294,967,296", "0..4,294,967,295"]),
    (["run", "--seed", -1], ["--seed -1", "0..4,294,967,295"]),
    (["run", "--trials", 10**7], ["--trials 10,000,000", "at most 1,000,000"]),
    (["run", "--timeout", 1e12], ["--timeout", "at most 31,622,400 s"]),
    (["run", "--timeout", "inf"], ["'--timeout'", "'inf' is not a number written in plain digits"]),
    (["run", "--keep-top", 10**7], ["--keep-top", "at most 1,000,000"]),
    (["run", "--engine", "multi:100000"], ["--engine multi:K, K = 100,000", "at most 256"]),
    (["run", "--gpus", ",".join(["0"] * 100)], ["--gpus", "at most 64"]),
    (["run", "--name", "x\ny"], ["--name", "control characters", "U+000A"]),
    (["run", "--data", "d" * 5000], ["--data", "at most 4,096"]),
    (["worker", "--study", "s", "--workers", 100000], ["--workers 100,000"]),
    (["worker", "--study", "s", "--timeout", 1e12], ["--timeout"]),
    (["export", "--top", 10**7], ["--top 10,000,000", "at most 1,000,000"]),
    (["report", *["--study", "s"] * 65], ["--study", "65 given", "at most 64"]),
    (["confirm", "--seeds", 1000], ["--seeds 1,000", "at most 100"]),
    (["bench", "--steps", 10**7], ["--steps 10,000,000", "at most 100,000"]),
    (["bench", "--batch-size", 10**6], ["--batch-size 1,000,000", "at most 65,536"]),
    (["bench", "--width", 100], ["--width 100", "at most 4"]),
    (["bench", "--repeats", 1000], ["--repeats 1,000", "at most 100"]),
    (["dashboard", "--host", "h" * 300], ["--host", "at most 253"]),
    (["proxy", "--host", "h" * 300], ["--host", "at most 253"]),
]


@pytest.mark.parametrize("args,fragments", OPTIONS)
def test_every_option_has_a_ceiling_checked_before_anything_is_written(tmp_path, args, fragments):
    db = tmp_path / "s.db"
    r = sweep(*args, "--storage", db) if args[0] != "bench" else sweep(*args)
    one_line_error(r, *fragments)
    assert os.listdir(tmp_path) == []


def test_list_options_have_ceilings(tmp_path):
    one_line_error(sweep("bench", "--pack", f"1,{max_workers() + 1}"), "--pack", f"at most {max_workers()}")
    one_line_error(sweep("bench", "--fuse", "1,100000"), "--fuse 100,000", "at most 256")
    one_line_error(sweep("bench", "--fuse", ",".join(["1"] * 65)), "--fuse", "at most 64")
    one_line_error(sweep("bench", "--multi", "1,100000"), "--multi 100,000", "at most 256")
    one_line_error(sweep("predict", *["x.png"] * 10001, "--storage", tmp_path / "s.db"), "10,001 given",
                   "at most 10,000")


STUDY_KEYS = [
    ("seed = 4294967296", "seed: 4,294,967,296: a seed is a whole number in 0..4,294,967,295"),
    ("seed = -5", "seed: -5: a seed is a whole number"),
    ("[data]\nseed = 99999999999999", "data.seed: 99,999,999,999,999: a seed"),
    ("[data]\nn_images = 1000000000000", "data.n_images: 1,000,000,000,000 is too large: at most 100,000"),
    ("[data]\npaper_n_train = 1000000000000", "data.paper_n_train: 1,000,000,000,000 is too large"),
    ('description = "' + "d" * 10_001 + '"', "description: 10,001 characters; at most 10,000"),
    ("[search]\nepochs = { choices = [" + ", ".join(map(str, range(1, 1003))) + "] }",
     "search.epochs.choices: 1,002 is too large: at most 1,000 choices"),
    ("[sampler]\nn_startup_trials = 1000000000", "sampler.n_startup_trials: 1,000,000,000 is too large"),
    ('[pruner]\nname = "median"\nn_warmup_steps = 1000000000', "pruner.n_warmup_steps: 1,000,000,000 is too large: at most 10,000"),
    ('[pruner]\nname = "hyperband"\nreduction_factor = 1000', "pruner.reduction_factor: 1,000 is too large: at most 100"),
    ("[search]\nlr = { low = 0.001, high = " + "9" * 400 + " }", "search.lr.high: must be a finite number"),
    ('[data]\nsource = "a\\u0000b"', "data.source: not a usable path"),
]


@pytest.mark.parametrize("body,expected", STUDY_KEYS, ids=[k[1].split(":")[0] for k in STUDY_KEYS])
def test_every_study_file_key_has_a_ceiling(tmp_path, body, expected):
    f = tmp_path / "big.toml"
    text = f'description = "x"\n{body}\n' if not body.startswith("description") else body + "\n"
    f.write_text(text)
    one_line_error(sweep("run", "--study", f, "--trials", 1, "--storage", tmp_path / "s.db"), str(f), expected)
    assert not (tmp_path / "s.db").exists()


def test_a_huge_study_file_is_refused_by_its_size_unread(tmp_path):
    f = tmp_path / "huge.toml"
    f.write_text('description = "' + "d" * (20 << 20) + '"\n')  # 20 MB
    one_line_error(sweep("run", "--study", f, "--trials", 1, "--storage", tmp_path / "s.db"), "bytes; at most 1,048,576")
    assert not (tmp_path / "s.db").exists()


# ---------------------------------------------------------------- 2. special files

@contextlib.contextmanager
def fifo(path):
    """A FIFO at `path`. Should a command wait on it after all, it is let go after 20 s (opened from
    the other end and closed), so that a regression fails the test instead of hanging the suite."""
    os.mkfifo(path)
    done = threading.Event()

    def release():
        if not done.wait(20):
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
                os.close(fd)

    t = threading.Thread(target=release, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        t.join()


def test_special_files_as_inputs_are_refused_by_what_they_are(tmp_path):
    db = tmp_path / "s.db"
    with fifo(tmp_path / "pipe.toml") as p:
        one_line_error(sweep("run", "--study", p, "--trials", 1, "--storage", db), "a FIFO (named pipe), not a regular file")
        one_line_error(sweep("run", "--data", p, "--trials", 1, "--storage", db), "a FIFO (named pipe), not a data file")
        one_line_error(sweep("studies", "--storage", p), "is a FIFO (named pipe), not a database file")
        one_line_error(sweep("run", "--data", "synthetic", "--trials", 1, "--storage", p), "not a database file")
        one_line_error(sweep("predict", p, "--storage", db), "a FIFO (named pipe), not a regular file")
    one_line_error(sweep("run", "--data", "/dev/zero", "--trials", 1, "--storage", db), "a character device")
    one_line_error(sweep("run", "--study", "/dev/zero", "--trials", 1, "--storage", db), "a character device")
    assert os.listdir(tmp_path) == ["pipe.toml"]


def test_special_files_as_outputs_are_refused_before_anything_is_read(made_study, tmp_path):
    url, _ = made_study
    with fifo(tmp_path / "nobody-reads") as p:
        one_line_error(sweep("export", "--storage", url, "-o", p), "FIFO", "nobody reads it")
        one_line_error(sweep("report", "--storage", url, "-o", p), "FIFO", "nobody reads it")
    one_line_error(sweep("export", "--storage", url, "-o", tmp_path), "a directory, not a file")
    assert sweep("export", "--storage", url, "-o", "/dev/null").exit_code == 0  # a device that takes writes is fine


def test_an_artifact_dir_that_is_no_folder_is_refused_before_the_storage_is_written(made_study, tmp_path, tiny_study):
    db = tmp_path / "s.db"
    (tmp_path / "afile").write_text("x")
    one_line_error(sweep("run", "--study", tiny_study, "--trials", 1, "--storage", db, "--artifact-dir", tmp_path / "afile"),
                   "--artifact-dir", "a regular file, not a folder")
    one_line_error(sweep("run", "--study", tiny_study, "--trials", 1, "--storage", db,
                         "--artifact-dir", tmp_path / "afile" / "sub"), "--artifact-dir")
    with fifo(tmp_path / "p") as p:
        one_line_error(sweep("run", "--study", tiny_study, "--trials", 1, "--storage", db, "--artifact-dir", p),
                       "a FIFO (named pipe), not a folder")
    (tmp_path / "s-artifacts").write_text("x")  # where the default folder goes
    one_line_error(sweep("run", "--study", tiny_study, "--trials", 1, "--storage", db), "s-artifacts: a regular file")
    assert not db.exists()
    # joining a study: the same check, before the worker writes anything
    url, name = made_study
    copy = copy_db(url, tmp_path / "copy.db")
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    one_line_error(sweep("worker", "--study", name, "--storage", copy, "--artifact-dir", tmp_path / "afile"),
                   "a regular file, not a folder")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before


# ---------------------------------------------------------------- 4. a step that does not divide its range

@pytest.mark.parametrize("search,key", [
    ("epochs = { low = 1, high = 2, step = 5 }", "search.epochs.step: 5 does not divide the range 1..2"),
    ("epochs = { low = 2, high = 9, step = 2 }", "search.epochs.step: 2 does not divide the range 2..9"),
    ("lr = { low = 0.1, high = 0.35, step = 0.1 }", "search.lr.step: 0.1 does not divide the range 0.1..0.35"),
    ("batch_size = { low = 32, high = 100, step = 32 }", "search.batch_size.step: 32 does not divide"),
])
def test_a_step_that_does_not_divide_its_range_is_refused(tmp_path, search, key):
    f = tmp_path / "step.toml"
    f.write_text(f'[data]\nsource = "synthetic"\n[search]\n{search}\n')
    one_line_error(sweep("run", "--study", f, "--trials", 1, "--storage", tmp_path / "s.db"), key)
    assert not (tmp_path / "s.db").exists()


def test_a_step_that_divides_its_range_in_decimal_passes():
    from pathlib import Path

    from sweep.study_file import parse_study

    spec = parse_study({"search": {"lr": {"low": 0.0001, "high": 0.3001, "step": 0.1},
                                   "epochs": {"low": 30, "high": 120, "step": 10}}}, Path("ok.toml"))
    assert spec.search["lr"].step == 0.1 and spec.search["epochs"].high == 120


# ---------------------------------------------------------------- 5. names that reach other formats

@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "esc\x1b[31mred", "bidi\u202eevil", "line\u2028sep", "nul\x7f"])
def test_control_characters_in_a_study_name_are_refused_at_creation(tmp_path, bad):
    one_line_error(sweep("run", "--data", "synthetic", "--trials", 1, "--name", bad, "--storage", tmp_path / "s.db"),
                   "--name: a study name cannot hold control characters")
    assert not (tmp_path / "s.db").exists()


def test_a_study_files_name_with_a_control_character_is_refused(tmp_path):
    f = tmp_path / "bad\x1bname.toml"
    f.write_text(TINY_STUDY)
    line = one_line_error(sweep("run", "--study", f, "--trials", 1, "--storage", tmp_path / "s.db"),
                          "a study name cannot hold control characters")
    assert "\x1b" not in line and "\\x1b" in line  # the message itself stays printable
    assert not (tmp_path / "s.db").exists()


HOSTILE = "x\n\\end{tabular}\\input{/etc/passwd}% | <script>alert(1)</script> [a](javascript:b) `c`"


@pytest.fixture
def hostile_study(made_study, tmp_path):
    """A copy of a real study renamed, behind sweep's back, to a name holding a newline, LaTeX,
    Markdown and HTML; one trial's device reads like a spreadsheet formula."""
    url, name = made_study
    path = copy_db(url, tmp_path / "hostile.db")
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute("UPDATE studies SET study_name = ?", (HOSTILE,))
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'device_name'", ('"=cmd|/c calc"',))
    return path


def test_every_export_format_escapes_what_the_storage_holds(hostile_study):
    def export(fmt):
        r = sweep("export", "--storage", hostile_study, "-f", fmt)
        assert r.exit_code == 0, r.output
        return r.stdout

    tex = export("latex").splitlines()
    assert tex[0].startswith("% ") and tex[1].startswith("\\begin{tabular}")  # the name stayed in its comment
    assert not any("\\input" in line for line in tex[1:]) and "\\end{tabular}" == tex[-1]
    md = export("md").splitlines()
    assert all(line.startswith("|") for line in md[:-2]) and md[-2] == ""
    assert "<script>" not in "\n".join(md) and "&lt;script&gt;" in md[-1]
    assert not re.search(r"(?<!\\)\]\(", "\n".join(md)) and "\\[a\\](javascript:b)" in md[-1]  # no live link
    html_out = export("html")
    assert "<script>" not in html_out and "&lt;script&gt;" in html_out
    rows = list(csv.DictReader(io.StringIO(export("csv"))))
    assert rows and all(r["device"] == "'=cmd|/c calc" for r in rows)  # text, never a formula
    studies = sweep("studies", "--storage", hostile_study)
    assert studies.exit_code == 0 and len(studies.output.strip().splitlines()) == 2 and "\x1b" not in studies.output
