"""The `sweep` command's entry point: signals first, then the CLI.

Ctrl-C and SIGTERM mean the same from the first instant, imports included: one line and exit
code 130, never a traceback and never a bare 143. Loaded before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    """Exit 130 now. An interrupt that landed inside an extension's import can leave Python to
    re-raise it while it shuts down (seen once in a few hundred: exit -2 after the line), and the
    run has already stopped its workers and recorded its trials by the time this is called."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    from .streams import guard

    guard()  # before anything can print or open a file: see sweep.streams
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        print("sweep: interrupted", file=sys.stderr)
        _exit_interrupted()
    except SystemExit as e:
        if e.code == 130:
            _exit_interrupted()
        raise
