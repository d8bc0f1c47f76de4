"""What a path is, checked before anything reads or writes it.

A FIFO opened for reading waits for a writer forever, a device like /dev/zero never ends, and a
regular file where a folder belongs fails only after the storage was written. Every path a user
gives (study file, output file, artifact folder, image, SQLite file) is checked here for what it
is first; the data's paths are checked the same way in `data.sources`.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import SweepError


def kind(mode: int) -> str:
    """'a regular file', 'a directory', 'a FIFO (named pipe)', ... for an st_mode."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: Path, what: str) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # a link loop, a path through a file, a NUL byte
        raise SweepError(f"{what}{path}: cannot be used ({getattr(e, 'strerror', None) or e})") from None


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them. Opened without blocking,
    so that a FIFO is refused instead of waited on, and checked for what it is on the open file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SweepError(f"{what}{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise SweepError(f"{what}{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SweepError(f"{what}{path}: {kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise SweepError(f"{what}{path}: {st.st_size:,} bytes; at most {limit:,}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise SweepError(f"{what}{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SweepError(f"{what}{path}: more than {limit:,} bytes")
    return data


def regular_file(path: Path, what: str = "") -> None:
    """An existing regular file (a link to one is fine)."""
    st = _stat(path, what)
    if st is None:
        raise SweepError(f"{what}{path}: no such file")
    if not stat.S_ISREG(st.st_mode):
        raise SweepError(f"{what}{path}: {kind(st.st_mode)}, not a regular file")


def output_file(path: Path, what: str) -> None:
    """A file to write: a regular file or none yet, in an existing folder one can write; or a
    FIFO someone reads, or a device such as /dev/null. Creates and changes nothing."""
    st = _stat(path, what)
    if st is None:
        parent = path.parent
        pst = _stat(parent, what)
        if pst is None or not stat.S_ISDIR(pst.st_mode):
            raise SweepError(f"{what}{path}: cannot write there (folder {parent} does not exist)")
        _probe(parent, what, path)
        return
    if stat.S_ISDIR(st.st_mode):
        raise SweepError(f"{what}{path}: cannot write there (a directory, not a file)")
    if stat.S_ISREG(st.st_mode):
        if not os.access(path, os.W_OK):
            raise SweepError(f"{what}{path}: cannot write there (not writable)")
        return
    try:  # without blocking: a FIFO nobody reads fails here (ENXIO) instead of waiting forever
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        reason = "nobody reads it" if e.errno == errno.ENXIO else (e.strerror or str(e))
        raise SweepError(f"{what}{path}: {kind(st.st_mode)} that cannot be written ({reason}); "
                         "leave -o out to write to standard output") from None
    os.close(fd)


def folder(path: Path, what: str) -> None:
    """A folder to keep files in: an existing directory one can write, or one that can be made
    (its nearest existing ancestor is a directory one can write). Creates nothing."""
    st = _stat(path, what)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise SweepError(f"{what}{path}: {kind(st.st_mode)}, not a folder")
        _probe(path, what, path)
        return
    ancestor = path.absolute().parent
    while True:
        ast = _stat(ancestor, what)
        if ast is not None:
            break
        if ancestor == ancestor.parent:
            raise SweepError(f"{what}{path}: no existing folder above it")
        ancestor = ancestor.parent
    if not stat.S_ISDIR(ast.st_mode):
        raise SweepError(f"{what}{path}: {ancestor} is {kind(ast.st_mode)}, not a folder")
    _probe(ancestor, what, path)


def _probe(folder: Path, what: str, path: Path) -> None:
    """Whether files can be made in `folder`: by making one and removing it. Permission bits miss
    read-only mounts (and do not stop root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SweepError(f"{what}{path}: cannot create files in {folder} ({e.strerror or type(e).__name__})") from None
