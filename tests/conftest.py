"""Shared fixtures: an isolated cache, tiny FER2013 files in every format, a tiny study file."""

from __future__ import annotations

import gzip
import os
import signal
from pathlib import Path

import numpy as np
import pytest


USAGES = ("Training", "PublicTest", "PrivateTest")


def pytest_terminal_summary(terminalreporter):
    """Where Chromium is missing the browser tests are skipped: said once at the end, with how to
    get it, rather than only in the list of skip reasons (`.ci/run` sets SWEEP_REQUIRE_BROWSER=1,
    which fails them instead)."""
    from tests.browser import HOW_TO_INSTALL, NOT_FOUND

    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and NOT_FOUND in str(r.longrepr[-1])]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} browser test{'s' if len(skipped) > 1 else ''} skipped: "
                                    f"{NOT_FOUND}; {HOW_TO_INSTALL}, or set SWEEP_REQUIRE_BROWSER=1 to fail them")


@pytest.fixture(autouse=True)
def _default_signals():
    """Every test starts with Ctrl-C and SIGTERM at their defaults, which the processes it starts
    inherit. They can arrive ignored: a suite started from a background job (`cmd &` in a script)
    inherits SIGINT ignored, and an in-process run interrupted once ignores both for good, as a
    process about to end should. Ctrl-C tests would then see a run that cannot be interrupted, and
    a `sweep proxy` the tests stop with Ctrl-C would never stop."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache, its own working directory (whatever a command writes beside
    it, weights or reports, lands there and not in the checkout), and no ambient FER2013 or study
    overrides."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("SWEEP_DATA", raising=False)
    monkeypatch.delenv("SWEEP_STUDIES", raising=False)


def make_rows(n_per_usage=(14, 7, 7), seed=0):
    """Tiny labelled images: (images uint8 (N,48,48), labels, usage names), every class present."""
    rng = np.random.default_rng(seed)
    images, labels, usage = [], [], []
    for name, n in zip(USAGES, n_per_usage):
        for i in range(n):
            images.append(rng.integers(0, 256, (48, 48), dtype=np.uint8))
            labels.append(i % 7)
            usage.append(name)
    return np.stack(images), np.array(labels), usage


def write_csv(path: Path, images, labels, usage=None, *, icml=False, gz=False) -> Path:
    sep = ", " if icml else ","
    cols = ["emotion", "pixels"] + (["Usage"] if usage is not None else [])
    lines = [sep.join(cols)]
    for i, (img, y) in enumerate(zip(images, labels)):
        row = [str(int(y)), " ".join(map(str, img.ravel().tolist()))]
        if usage is not None:
            row.append(usage[i])
        lines.append(",".join(row))
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def rows():
    return make_rows()


@pytest.fixture
def kaggle_csv(tmp_path, rows):
    images, labels, usage = rows
    return write_csv(tmp_path / "fer2013.csv", images, labels, usage)


@pytest.fixture
def tiny_study(tmp_path) -> Path:
    """A study small enough that a trial takes about a second on a CPU (1-2 epochs)."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_STUDY.replace("epochs = { low = 1, high = 3 }", "epochs = { low = 1, high = 2 }"))
    return p


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests are tiny: one torch thread avoids oversubscribing a 2-core machine under xdist or CI."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def env_for_subprocess(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


TINY_STUDY = """
description = "test study"
seed = 3
[data]
source = "synthetic"
n_images = 240
[fixed]
width = 0.0625
[search]
epochs = { low = 1, high = 3 }
batch_size = { choices = [32, 64] }
lr = { low = 1e-3, high = 0.1, log = true }
optimizer = { choices = ["sgd", "adam"] }
[sampler]
name = "tpe"
n_startup_trials = 3
[pruner]
name = "median"
n_startup_trials = 2
"""


@pytest.fixture(scope="session")
def made_study(tmp_path_factory):
    """A study written by a real `sweep run` (8 trials), shared read-only by the reporting tests."""
    from typer.testing import CliRunner

    from sweep.cli import app

    d = tmp_path_factory.mktemp("made")
    (d / "made.toml").write_text(TINY_STUDY)
    url = f"sqlite:///{d / 'sweep.db'}"
    r = CliRunner().invoke(app, ["run", "--trials", "8", "--study", str(d / "made.toml"), "--storage", url])
    assert r.exit_code == 0, r.output
    return url, "made"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_admin():
    """An autocommit connection to the server's `test` database; the test is skipped without a
    server (failed in CI, where one must be)."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    try:
        return psycopg.connect(PG_ADMIN, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required in CI: {e}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({e})")


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin = pg_admin()
    name = f"sweep_test_{os.getpid()}"
    with admin.cursor() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        c.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    """The same test on a SQLite file and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'f.db'}"
    return request.getfixturevalue("pg_url")
