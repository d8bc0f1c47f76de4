"""Opening Optuna storages: SQLite files (WAL mode) and PostgreSQL, with one-line errors.

Reading never creates: a command that only reads a storage fails when the file is not there,
instead of leaving an empty database behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import SweepError
from .recovery import GRACE_S, HEARTBEAT_S

DEFAULT_STORAGE = "sqlite:///sweep.db"
SQLITE_TIMEOUT_S = 60  # how long a writer waits for a lock before SQLite gives up


def mask(url: str) -> str:
    """The URL with any password replaced by ***, for messages and attributes."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def normalize(url: str) -> str:
    """Accept a bare file path as SQLite."""
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


def sqlite_path(url: str) -> Path | None:
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite":
        return None
    return Path(u.database) if u.database and u.database != ":memory:" else None


def open_storage(url: str, *, create: bool) -> optuna.storages.RDBStorage:
    """An RDBStorage for `url`; `create=False` refuses a SQLite file that does not exist."""
    url = normalize(url)
    try:
        u = make_url(url)
    except ArgumentError:
        raise SweepError(f"storage '{mask(url)}': not a database URL (e.g. sqlite:///sweep.db)") from None
    backend = u.get_backend_name()
    engine_kwargs: dict = {}
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is None:
            raise SweepError(f"storage '{url}': an in-memory SQLite database cannot hold a study; name a file")
        if not path.exists():
            if not create:
                raise SweepError(f"storage '{url}': no such file ({path})")
            if not path.parent.exists():
                raise SweepError(f"storage '{url}': directory {path.parent} does not exist")
            if not os.access(path.parent, os.W_OK):
                raise SweepError(f"storage '{url}': directory {path.parent} is not writable")
        elif create and not os.access(path, os.W_OK):
            raise SweepError(f"storage '{url}': {path} is not writable")
        if create:
            _enable_wal(path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif backend == "postgresql":
        engine_kwargs["pool_pre_ping"] = True
    elif backend not in ("mysql",):
        raise SweepError(f"storage '{mask(url)}': unsupported scheme '{u.drivername}' "
                         "(use sqlite:///FILE or postgresql://USER@HOST/DB)")
    try:
        with _schema_lock(url, backend):
            # Heartbeats let any process tell a dead process's RUNNING trials from live ones; the
            # stale ones are failed and re-queued by sweep.recovery, with their reason.
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except ImportError:
        raise SweepError(f"storage '{mask(url)}': no database driver for '{u.drivername}'; "
                         "for PostgreSQL install the postgres extra: pip install -e '.[postgres]'") from None
    except Exception as e:  # SQLAlchemy wraps connection failures in many types
        first = str(getattr(e, "orig", e) or type(e).__name__).strip().splitlines()[0]
        raise SweepError(f"storage '{mask(url)}': cannot open ({mask(first)})") from None


@contextlib.contextmanager
def _schema_lock(url: str, backend: str):
    """Workers starting at once on a fresh PostgreSQL database would race to create Optuna's
    tables (duplicate-key errors); an advisory lock lets one create them and the rest find them."""
    if backend != "postgresql":
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(7342001)"))
            con.commit()
            try:
                yield
            finally:
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(7342001)"))
                con.commit()
    finally:
        engine.dispose()


def _enable_wal(path: Path) -> None:
    """WAL lets readers (the dashboard) and the one writer work at once without 'database is locked'."""
    try:
        con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise SweepError(f"storage 'sqlite:///{path}': not a SQLite database ({e})") from None
