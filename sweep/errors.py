"""The one exception type for bad user input in `sweep/`; the CLI prints it as one line, exit 2."""


class SweepError(Exception):
    """A user-facing error: one line, no traceback, nothing written to the storage."""
