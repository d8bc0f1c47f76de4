"""Output that nobody reads: a pipe whose reader left, a standard stream closed before `sweep`
started. A run still trains and stores its budget; a command ends quietly (exit 0), or in one line
where its output was the point and could not be written; never a traceback."""

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.test_faults import assert_exact_budget


def sweep_process(*args, stdout=None, stderr=subprocess.PIPE, close_stdout=False) -> tuple[int, str]:
    """`python -m sweep ARGS` as the shell starts it: (exit code, what it wrote on stderr)."""
    p = subprocess.run([sys.executable, "-m", "sweep", *map(str, args)], cwd=os.getcwd(), stdout=stdout,
                       stderr=stderr, text=True, timeout=240, preexec_fn=(lambda: os.close(1)) if close_stdout else None)
    return p.returncode, p.stderr or ""


@pytest.fixture
def dead_pipe():
    """The writing end of a pipe whose reader has already left: every write to it fails (EPIPE),
    as `| head -c 10` or `| true` does once the reader is gone."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


@pytest.mark.parametrize("progress", ["on a terminal's stderr", "into the same dead pipe"])
def test_a_run_nobody_reads_trains_and_stores_its_whole_budget(tmp_path, tiny_study, dead_pipe, progress):
    url = f"sqlite:///{tmp_path / 's.db'}"
    code, err = sweep_process("run", "--trials", 2, "--study", tiny_study, "--storage", url, stdout=dead_pipe,
                              stderr=dead_pipe if progress == "into the same dead pipe" else subprocess.PIPE)
    assert code == 0 and "Traceback" not in err and "sweep: error" not in err, err
    assert_exact_budget(url, "tiny", 2)


@pytest.mark.parametrize("command", [["export", "-f", "md", "--top", "1000"], ["export", "-f", "csv"],
                                     ["studies", "--json"], ["best"]])
def test_a_reader_that_left_ends_a_command_quietly(made_study, dead_pipe, command):
    url, _ = made_study
    code, err = sweep_process(*command, "--storage", url, stdout=dead_pipe)
    assert code in (0, 141) and err == "", err


@pytest.mark.parametrize("command", [["export", "-f", "csv"], ["studies", "--json"], ["best"]])
def test_a_closed_stdout_where_the_output_was_the_point_is_one_line(made_study, command):
    url, _ = made_study
    code, err = sweep_process(*command, "--storage", url, close_stdout=True)
    assert code == 2 and err.splitlines() == ["sweep: error: standard output is closed, so the output was not "
                                              "written anywhere; open it (or write to a file with -o where the "
                                              "command has it)"], err


def test_a_run_with_stdout_closed_trains_and_never_writes_into_its_database(tmp_path, tiny_study):
    """With descriptor 1 closed, the database would be opened as descriptor 1, and anything printed
    (here, the run's closing line) written into it."""
    path = tmp_path / "s.db"
    code, err = sweep_process("run", "--trials", 2, "--study", tiny_study, "--storage", path, close_stdout=True)
    assert code == 0 and "Traceback" not in err and "sweep: error" not in err, err
    assert_exact_budget(f"sqlite:///{path}", "tiny", 2)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_answer_to_a_worker_that_just_died_is_not_the_end_of_the_run():
    """A worker killed (kill -9) between asking about an epoch and getting the answer: the answer
    goes nowhere and the run goes on (the death is seen on the worker's sentinel). The broken pipe
    ended the run with exit 1 and not a word (Click's answer to any EPIPE)."""
    import multiprocessing as mp
    from types import SimpleNamespace

    from sweep.coordinator.messages import Messages

    ours, theirs = mp.Pipe()
    theirs.close()
    coordinator = SimpleNamespace(replied=False)
    Messages._reply(coordinator, SimpleNamespace(conn=ours), "go")
    assert coordinator.replied


def test_any_other_broken_pipe_is_one_line_not_a_silent_exit_1(capsys):
    import typer

    from sweep.cli import friendly

    @friendly
    def command():
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(typer.Exit) as stopped:
        command()
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err.startswith("sweep: error: a pipe to one of this command's own processes broke")
