"""Standard streams nobody reads: a pipe whose reader left (`sweep export | head`, `sweep run |
true`) or a stream closed before sweep started (`sweep export >&-`).

A write there must never stop a run from training and storing its budget, nor end a command in a
traceback. `guard()`, called first thing, puts each standard stream behind a sink that writes to
its file descriptor and, once the reader is gone (EPIPE) or the descriptor is closed (EBADF),
drops what follows and notes it: a command then ends as `git log | head` does (quietly, exit 0).
Where stdout was closed from the start and the output was the point (a table, a listing, JSON),
`output_lost` says so and the command ends with one line instead. A closed descriptor is given
/dev/null first: otherwise the next file opened (the SQLite database) would take its number, and
whatever anything printed, in this process or the workers it starts, would land in the database.
"""

from __future__ import annotations

import errno
import io
import os
import sys

_GONE = (errno.EPIPE, errno.EBADF, errno.ECONNRESET)


class _Sink(io.RawIOBase):
    def __init__(self, fd: int, closed: bool):
        super().__init__()
        self.fd = fd
        self.closed_at_start = closed
        self.lost = closed  # nothing written here reaches anyone
        self.dropped = False  # something was written after it was lost

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return not self.lost and os.isatty(self.fd)

    def write(self, data) -> int:
        n = len(data)
        if not self.lost:
            try:
                return os.write(self.fd, data)
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                self.lost = True
        self.dropped = self.dropped or n > 0
        return n


_sinks: dict[int, _Sink] = {}
_incidental = False  # the command's stdout is a courtesy (a run's summary line), not its point


def _open_on_devnull(fd: int) -> bool:
    """Whether `fd` was closed; if so it now holds /dev/null."""
    try:
        os.fstat(fd)
        return False
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        return True


def guard() -> None:
    """Standard input, output and error that are open, and writes to them that cannot fail."""
    _open_on_devnull(0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        closed = _open_on_devnull(fd)
        old = getattr(sys, name)
        sink = _Sink(fd, closed)
        _sinks[fd] = sink
        if old is not None:
            old.flush()
        setattr(sys, name, io.TextIOWrapper(
            io.BufferedWriter(sink), encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict"),
            line_buffering=bool(getattr(old, "line_buffering", fd == 2)),
            write_through=bool(getattr(old, "write_through", False))))


def incidental() -> None:
    """This command's stdout is a courtesy: where nobody can read it, the command still succeeds."""
    global _incidental
    _incidental = True


def output_lost() -> bool:
    """Whether the command wrote its output to a stdout that was closed before it started."""
    sink = _sinks.get(1)
    if sink is None or _incidental:
        return False
    sys.stdout.flush()
    return sink.closed_at_start and sink.dropped
