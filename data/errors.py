"""The one exception type for bad data input; the CLI turns it into a one-line error."""


class DataError(ValueError):
    """Bad or unreadable data source. The message is one line and names the file (and row)."""
