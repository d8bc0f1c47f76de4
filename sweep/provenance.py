"""What a result needs to be redone: library versions and the git commit of this code."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path


DISTRIBUTION = "fer-sweep"  # the name pip knows this project by; its command is `sweep`


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "sweep": sweep_version()}
    for dist in ("torch", "optuna", "numpy", "pandas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def sweep_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _checkout_version()


def _checkout_version() -> str:
    """sweep's version from pyproject.toml, when it runs from a checkout it was not installed from
    (as on a GPU machine, through PYTHONPATH)."""
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def versions_line() -> str:
    return " ".join(f"{k}={v}" for k, v in versions().items())


@functools.cache
def git_commit() -> str:
    """HEAD of the checkout this code runs from, '+dirty' when it has local changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def host() -> str:
    return socket.gethostname()
