"""The `sweep` command's entry point: signals first, then the CLI.

Ctrl-C and SIGTERM mean the same from the first instant, imports included: one line and exit
code 130, never a traceback and never a bare 143. Loaded before anything heavy is imported.
"""

from __future__ import annotations

import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        print("sweep: interrupted", file=sys.stderr)
        sys.exit(130)
