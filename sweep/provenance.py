"""What a result needs to be redone: library versions and the git commit of this code."""

from __future__ import annotations

import functools
import platform
import re
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


TORCH_FLOOR = (2, 11)  # the oldest torch the tests pass with (docs/install.md); pyproject.toml's floor


def torch_too_old() -> str | None:
    """A line saying so where the torch installed is older than TORCH_FLOOR (as it can be where the
    code runs from a checkout through PYTHONPATH, beside a machine's own torch); None otherwise."""
    try:
        found = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    release = tuple(int(x) for x in re.findall(r"\d+", found.split("+")[0])[:2])
    if release >= TORCH_FLOOR:
        return None
    floor = ".".join(map(str, TORCH_FLOOR))
    return f"torch {found} is older than {floor}, the oldest torch sweep is tested with: install torch>={floor}"


def versions_line() -> str:
    return " ".join(f"{k}={v}" for k, v in versions().items())


@functools.cache
def git_commit() -> str:
    """HEAD of this project's own checkout, '+dirty' when it has local changes. Anywhere else (an
    installed copy, an unpacked release, a copy inside another project's repository): the
    distribution's version, 'not a checkout (fer-sweep 0.1.0)', never another repository's commit."""
    root = Path(__file__).resolve().parents[1]
    elsewhere = f"not a checkout ({DISTRIBUTION} {sweep_version()})"
    if not _is_own_project(root):
        return elsewhere
    try:
        head = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5)
        lines = head.stdout.split()
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return elsewhere
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return lines[1] + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _is_own_project(root: Path) -> bool:
    """Whether `root`, the folder above this package, is this project's root: its pyproject.toml
    names this distribution."""
    import tomllib

    try:
        with open(root / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["name"] == DISTRIBUTION
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return False


def host() -> str:
    return socket.gethostname()
