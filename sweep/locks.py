"""Who may write a storage, and when.

SQLite: one writer process per file (several corrupt nothing but fail with "database is locked"),
so a coordinator holds an exclusive lock file beside the database for its whole run.
PostgreSQL: many writers; checking the budget and asking for a trial happen under a
transaction-free advisory lock, so N workers never start more than the study's budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import text

from .errors import SweepError
from .storage import sqlite_path


@contextlib.contextmanager
def sqlite_writer_lock(url: str):
    """Hold the one-writer lock of a SQLite file for the block. The lock file sits beside the real
    file (symbolic links resolved), so two paths to one database share one lock. A lock file this
    call created is removed again when the block fails with a SweepError (the target was no
    database, say), so failed attempts leave nothing behind."""
    path = sqlite_path(url)
    if path is None or not os.access(path.parent, os.W_OK):
        yield  # not SQLite, or a directory open_storage will refuse with a clear message
        return
    real = Path(os.path.realpath(path))
    lock_path = Path(f"{real}.lock")
    created = not lock_path.exists()
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SweepError(f"storage '{url}': cannot create its lock file {lock_path}: "
                         f"{e.strerror or type(e).__name__}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            created = False
            raise SweepError(f"another sweep (pid {other}) is writing {real}; SQLite takes one writer: "
                             "wait for it, or use PostgreSQL (--storage postgresql://...) for several") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        except SweepError:
            if created:  # still held by us: no other process can be relying on this file
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
            raise
    finally:
        os.close(fd)  # closing releases the lock; the file stays (removing it would race)


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"sweep:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def budget_lock(storage, study_name: str):
    """Serialise 'count, then ask' across processes on PostgreSQL; a no-op elsewhere.

    `storage` may be a study's own storage, which Optuna wraps in a cache (`_CachedStorage`)
    around the RDBStorage: the engine is the wrapped one's."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as con:
        con.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_name)})
        con.commit()
        try:
            yield
        finally:
            con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_name)})
            con.commit()
