"""Numbers from what a user types: plain ASCII digits, and nothing else Python would also read.

`int()` and `float()` take more than a person means by a number: '4_0' is 40 (digit separators),
' 4' and '+4' are 4, a full-width '４' is 4, and `float()` reads 'nan' and 'infinity'. A typo must
not become a number, so every number given on the command line (options, --engine K, list options,
a storage URL's port) is read here. A list option refuses an empty entry ('1,,2') rather than
quietly reading it as '1,2'.
"""

from __future__ import annotations

import re

from .errors import SweepError
from .limits import printable

# A minus sign is allowed: a negative number says what it means, and its range check refuses it.
_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _shown(text: str) -> str:
    text = printable(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def whole(text: str, what: str, example: str = "4") -> int:
    """A whole number written in plain digits; anything else is refused naming `what`."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise SweepError(f"{what} {_shown(str(text))}: expected a whole number written in plain digits, like {example}")
    return int(text)


def decimal(text: str, what: str, example: str = "1.5") -> float:
    """A number written in plain digits, with a decimal point or an exponent if any."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise SweepError(f"{what} {_shown(str(text))}: expected a number written in plain digits, like {example}")
    return float(text)


def whole_list(text: str, what: str, example: str) -> list[int]:
    """Comma-separated whole numbers ('1,2,4'); an empty entry is refused, not skipped."""
    entries = text.split(",")
    for i, entry in enumerate(entries):
        if not entry:
            raise SweepError(f"{what} {_shown(text)}: entry {i + 1} is empty; expected numbers separated by commas, "
                             f"like {example}")
    return [whole(entry, what, example) for entry in entries]


def option(kind: type, low: float | None = None, high: float | None = None):
    """A Typer `parser=` for a numeric option: `kind` (int or float) from plain digits, in
    low..high (None: no bound here; sweep.limits holds the ceilings). Typer hands it the default
    as a number, which passes as it is."""
    import typer

    read = whole if kind is int else decimal

    def parse(value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        try:
            number = read(value, "")
        except SweepError:
            what = "a whole number" if kind is int else "a number"
            raise typer.BadParameter(f"{_shown(str(value))} is not {what} written in plain digits") from None
        if low is not None and number < low and high is None:
            raise typer.BadParameter(f"{value} is less than {low:g}")
        if (low is not None and number < low) or (high is not None and number > high):
            raise typer.BadParameter(f"{value} is not between {low:g} and {high:g}")
        return number

    return parse
