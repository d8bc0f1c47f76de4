"""Ceilings on every number and text a user gives: the command line and the study file.

A value past its ceiling is a typo, or asks for more than the machine or the storage's format can
hold (a seed numpy cannot take, a description stored twice in every study, workers until the
machine refuses to fork). Each is refused with one line that names the option or key and the
ceiling, before anything is read or written.
"""

from __future__ import annotations

import math
import os
import unicodedata

from .errors import SweepError

MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2^32-1
MAX_TRIALS = 1_000_000  # a study's budget; 200x the largest study measured (docs/benchmarks.md)
MAX_TIMEOUT_S = 366 * 24 * 3600  # a year; leave --timeout out for no limit
WORKERS_PER_CORE = 4  # --workers: each worker is a process with torch and the data loaded
MIN_MAX_WORKERS = 8  # ... but at least this many on a small machine
MAX_PER_GPU = 64  # --per-gpu: trainings packed on one GPU
MAX_CONCURRENT = 256  # --engine fused:K / multi:K, bench --fuse / --multi: trials one worker trains at once
MAX_N_IMAGES = 100_000  # data.n_images: synthetic faces drawn (FER2013 has 35,887); 230 MB of pixels
MAX_ROWS = 10_000_000  # data.paper_n_train: rows of a data file (FER2013 has 35,887)
MAX_CHOICES = 1_000  # entries of one searched parameter's choices
MAX_DESCRIPTION = 10_000  # characters of a study's description (stored twice in the study)
MAX_STUDY_FILE_BYTES = 1 << 20  # a study file is a few hundred bytes; 1 MiB holds any sane one
MAX_PATH = 4096  # characters of a path (Linux's PATH_MAX)
MAX_HOST = 253  # characters of a host name (DNS)
MAX_IMAGES = 10_000  # images one `sweep predict` reads
MAX_SEEDS = 100  # `sweep confirm --seeds`
MAX_STEPS = 100_000  # `sweep bench --steps`
MAX_REPEATS = 100  # `sweep bench --repeats`
MAX_COUNTS = 64  # entries of a list option (--gpus, --pack, --fuse, --multi lists)


def max_workers() -> int:
    """The most worker processes one run may start on this machine: 4 per usable core, at least 8."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(MIN_MAX_WORKERS, WORKERS_PER_CORE * cores)


def at_most(what: str, value, ceiling, why: str = "") -> None:
    """Refuse `value` above `ceiling`, naming `what` (an option or a study-file key) and the ceiling."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SweepError(f"{what} {value}: must be a finite number, at most {ceiling:,}{why}")
    if value > ceiling:
        raise SweepError(f"{what} {_short(value)}: at most {ceiling:,}{why}")


def seed(what: str, value: int) -> None:
    if not 0 <= value <= MAX_SEED:
        raise SweepError(f"{what} {_short(value)}: a seed is a whole number in 0..{MAX_SEED:,} (2^32-1)")


def text(what: str, value: str, ceiling: int) -> None:
    if len(value) > ceiling:
        raise SweepError(f"{what}: {len(value):,} characters; at most {ceiling:,}")


# Characters that change how a name prints rather than what it says: C0/C1 controls (newline, tab,
# escape sequences), line and paragraph separators, surrogates, and the bidirectional overrides
# that make text read in another order than it is stored.
BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters nobody sees, so that two names differing only in them look the same in every listing:
# format characters (zero-width space and joiners, word joiner, soft hyphen, byte-order mark),
# spaces other than the plain one, and Unicode's other default-ignorable characters (the combining
# grapheme joiner, fillers, variation selectors).
_IGNORABLE = set("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in BIDI_CONTROLS


def _is_invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return (category == "Cf" or (category == "Zs" and ch != " ") or ch in _IGNORABLE
            or "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef")


def control_char(value: str) -> str | None:
    """The first control character in `value`, as U+XXXX, or None."""
    for ch in value:
        if _is_control(ch):
            return f"U+{ord(ch):04X}"
    return None


def invisible_char(value: str) -> str | None:
    """The first character of `value` that prints as nothing (or as a plain space), as U+XXXX, or None."""
    for ch in value:
        if _is_invisible(ch):
            return f"U+{ord(ch):04X}"
    return None


def printable(message: str) -> str:
    """`message` with its control and invisible characters written as \\xNN or \\uNNNN: a path or
    name holding a newline or an escape sequence stays one line and cannot drive the terminal, and
    one holding a zero-width space shows it."""
    if control_char(message) is None and invisible_char(message) is None:
        return message
    return "".join(ch.encode("unicode_escape").decode("ascii") if _is_control(ch) or _is_invisible(ch) else ch
                   for ch in message)


def name(what: str, value: str) -> None:
    """A study name: printed in tables, exports and reports, so no control characters, and none
    that cannot be seen."""
    bad = control_char(value) or invisible_char(value)
    if bad is not None:
        raise SweepError(f"{what}: a study name cannot hold control characters or invisible ones (found {bad}); "
                         "use letters, digits, spaces and punctuation")


def _short(value) -> str:
    s = f"{value:,}" if isinstance(value, int) else str(value)
    return s if len(s) <= 40 else s[:37] + "..."


def options(**given) -> None:
    """Check the command-line values given (None: not given) against their ceilings, by option
    name: `options(trials=50, seed=None, workers=100000)` refuses --workers."""
    from model.config import MAX_BATCH_SIZE, MAX_WIDTH

    ceilings = {
        "trials": (MAX_TRIALS, ""), "keep_top": (MAX_TRIALS, ""), "top": (MAX_TRIALS, ""),
        "timeout": (MAX_TIMEOUT_S, " s (366 days; leave --timeout out for no limit)"),
        "workers": (max_workers(), f" on this machine ({WORKERS_PER_CORE} per usable core, at least {MIN_MAX_WORKERS})"),
        "per_gpu": (MAX_PER_GPU, ""), "seeds": (MAX_SEEDS, ""), "steps": (MAX_STEPS, ""),
        "repeats": (MAX_REPEATS, ""), "batch_size": (MAX_BATCH_SIZE, ""), "width": (MAX_WIDTH, ""),
    }
    for key, value in given.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "seed":
            seed(flag, value)
        elif key == "name":  # its length: storage.MAX_STUDY_NAME, checked where it is used
            name(flag, value)
        elif key in ("study", "data", "artifact_dir", "output", "storage"):
            text(flag, str(value), MAX_PATH)
            if "\0" in str(value):
                raise SweepError(f"{flag}: a path cannot hold a NUL character")
        elif key == "host":
            text(flag, value, MAX_HOST)
        elif key in ("images", "studies"):
            what, ceiling = ("IMAGE", MAX_IMAGES) if key == "images" else ("--study", MAX_COUNTS)
            if len(value) > ceiling:
                raise SweepError(f"{what}: {len(value):,} given; at most {ceiling:,}")
        else:
            ceiling, why = ceilings[key]
            at_most(flag, value, ceiling, why)


def counts(option: str, ks: list[int], ceiling: int) -> None:
    """A list option (--gpus, --pack, --fuse, --multi): at most MAX_COUNTS entries, each at most `ceiling`."""
    if len(ks) > MAX_COUNTS:
        raise SweepError(f"{option}: {len(ks):,} entries; at most {MAX_COUNTS}")
    for k in ks:
        at_most(option, k, ceiling)
