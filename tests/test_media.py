"""Storage media: a SQLite file on read-only media is read, a full disk is said in one line with the
running trial failed, and a SQLite file deleted or replaced under a run stops it.

Read-only media and a full disk are made with a small tmpfs, where this machine lets the tests
mount one (root with CAP_SYS_ADMIN); elsewhere those tests are skipped with the reason, and the
emulated ones (SQLite's read-only modes, a write that fails as a full disk fails) still run."""

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweep import coordinator, storage
from sweep.cli import app
from tests.test_limits import copy_db, one_line_error

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args])


def _mount(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs of its own, unmounted after the test."""
    d = tmp_path / "media"
    d.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: read-only media and a full disk cannot be made")
    r = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", d)
    if r.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs ({r.stderr.strip() or r.returncode}); "
                    "needs root with CAP_SYS_ADMIN")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _read_only(d) -> None:
    r = _mount("-o", "remount,ro", d)
    assert r.returncode == 0, r.stderr


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


READERS = [["studies"], ["best"], ["export", "-f", "csv"], ["export", "-f", "latex"]]


# ---------------------------------------------------------------- read-only media

def test_reading_commands_work_on_read_only_media(made_study, tmpfs, tmp_path):
    url, name = made_study
    db = copy_db(url, tmpfs / "s.db")
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"  # as `sweep run` leaves it
    _read_only(tmpfs)
    before = _digest(db)
    for command in READERS:
        r = sweep(*command, "--storage", db)
        assert r.exit_code == 0 and "not a SQLite database" not in r.output, (command, r.output)
    r = sweep("report", "--storage", db, "-o", tmp_path / "r.html")
    assert r.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 0, r.output
    st = storage.open_storage(str(db), create=False)  # what `sweep dashboard` serves
    assert [s.study_name for s in st.get_all_studies()] == [name]
    st.engine.dispose()
    one_line_error(sweep("run", "--data", "synthetic", "--trials", 1, "--storage", db), "read-only file system")
    assert _digest(db) == before and os.listdir(tmpfs) == ["s.db"]


def test_a_log_that_cannot_be_read_on_read_only_media_is_said(made_study, tmpfs):
    url, _ = made_study
    db = copy_db(url, tmpfs / "s.db")
    (tmpfs / "s.db-wal").write_bytes(b"\0" * 4096)  # pages in the log, and no -shm to read them by
    _read_only(tmpfs)
    one_line_error(sweep("studies", "--storage", db), "read-only media", "s.db-wal")


def test_read_only_media_read_through_sqlites_immutable_mode(made_study, tmp_path, monkeypatch):
    """Where nothing can be mounted: the same path, with read-only media reported by the check."""
    url, name = made_study
    db = copy_db(url, tmp_path / "s.db")
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA journal_mode=WAL")
    monkeypatch.setattr(storage, "read_only_media", lambda path: True)
    assert storage._sqlite_uri(db).endswith("?mode=ro&immutable=1")
    before = _digest(db)
    for command in READERS:
        r = sweep(*command, "--storage", db)
        assert r.exit_code == 0, (command, r.output)
    assert _digest(db) == before and sorted(os.listdir(tmp_path)) == ["s.db"]  # no -wal, no -shm made
    one_line_error(sweep("run", "--data", "synthetic", "--trials", 1, "--storage", db), "read-only file system")


# ---------------------------------------------------------------- a full disk

def _fill(folder) -> None:
    """Fill the file system holding `folder` to the last byte."""
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
                f.flush()


def _after(monkeypatch, method: str, n: int, action) -> None:
    """Run `action` once, right after the coordinator's `n`th call of `method`."""
    real = getattr(coordinator.Coordinator, method)
    calls = []

    def wrapped(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(True)
        if len(calls) == n:
            action()
        return out

    monkeypatch.setattr(coordinator.Coordinator, method, wrapped)


def _assert_disk_full_stop(r, url, name):
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith(("sweep: error", "Traceback"))]
    assert len(errors) == 1 and "is full" in errors[0] and "exceeding max length" not in r.output, r.output
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING], [(t.number, t.state) for t in trials]
    # what had trained an epoch failed with the reason; what had not waits for the next run
    stopped = [t for t in trials if t.state in (TrialState.FAIL, TrialState.WAITING)]
    assert stopped, [(t.number, t.state) for t in trials]
    for t in stopped:
        assert "disk is full" in t.user_attrs["fail_reason"] if t.state == TrialState.FAIL else not t.intermediate_values
    assert [t for t in trials if t.state == TrialState.COMPLETE]  # what was stored before stays


def test_a_full_disk_during_a_run_is_one_line_and_fails_the_running_trial(tmpfs, tiny_study, monkeypatch):
    url = f"sqlite:///{tmpfs / 's.db'}"
    _after(monkeypatch, "_send", 2, lambda: _fill(tmpfs))  # the second trial is RUNNING: then the disk fills
    r = sweep("run", "--study", tiny_study, "--trials", 6, "--storage", url)  # weights kept beside it too
    (tmpfs / "filler").unlink()
    _assert_disk_full_stop(r, url, "tiny")
    assert not (tmpfs / ".s.db.reserve").exists()


def test_a_write_failing_as_a_full_disk_fails_is_one_line(tmp_path, tiny_study, monkeypatch):
    """Where no tmpfs can be mounted: Optuna's error for a full SQLite disk, raised by a write."""
    from sqlalchemy.exc import OperationalError

    def full(*args, **kwargs):
        try:
            raise OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database or disk is full"))
        except OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. "
                                                         "e.g. exceeding max length.") from e

    url = f"sqlite:///{tmp_path / 's.db'}"
    _after(monkeypatch, "_tell", 1, lambda: monkeypatch.setattr(optuna.study.Study, "tell", full))
    r = sweep("run", "--study", tiny_study, "--trials", 4, "--storage", url, "--keep-top", 0)
    _assert_disk_full_stop(r, url, "tiny")


# ---------------------------------------------------------------- a file deleted or replaced

def test_a_sqlite_file_deleted_under_a_run_stops_it(tmp_path, tiny_study, monkeypatch):
    db = tmp_path / "s.db"

    def delete():
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{db}{suffix}")

    _after(monkeypatch, "_tell", 1, delete)
    r = sweep("run", "--study", tiny_study, "--trials", 4, "--storage", db, "--keep-top", 0)
    assert r.exit_code == 2 and "finished" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith(("sweep: error", "Traceback"))]
    assert len(errors) == 1 and "was deleted while this process wrote it" in errors[0], r.output


def test_a_sqlite_file_replaced_under_a_writer_is_noticed(made_study, tmp_path):
    url, _ = made_study
    db = copy_db(url, tmp_path / "s.db")
    st = storage.open_storage(str(db), create=False)
    storage.check_same_file(st)  # the same file: nothing to say
    copy_db(url, tmp_path / "other.db")
    os.replace(tmp_path / "other.db", db)
    with pytest.raises(storage.SweepError, match="was replaced by another file"):
        storage.check_same_file(st)
    st.engine.dispose()
