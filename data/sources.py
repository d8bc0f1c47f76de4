"""Read FER2013 in the formats people actually have, into uint8 arrays, parsed once and cached.

Formats (told apart by content, not by name):
- Kaggle `fer2013.csv` / `.csv.gz`: `emotion,pixels,Usage`
- `icml_face_data.csv`: the same columns, with leading spaces in the names
- a labelled `train.csv`: `emotion,pixels` (no Usage)
- image folders: `ROOT/train|test/<emotion>/*.png|jpg` (any case), or `ROOT/<emotion>/*`;
  `Training_` / `PublicTest_` / `PrivateTest_` file-name prefixes give the split when present.

The cache is keyed by the source's content hash, so an edited file is parsed again and a
renamed or copied one is not.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import FOLDER_ALIASES, IMAGE_SIZE, N_CLASSES, N_PIXELS, USAGE_CODES, USAGE_NONE, USAGE_TEST
from .errors import DataError

CACHE_VERSION = 2  # bump when the cached arrays' meaning changes (2: 16-bit images scaled, not clipped)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Source:
    """A parsed data source: raw (not yet equalised) images with labels and Usage codes."""

    name: str  # "fer2013" for files in a FER2013 format, "synthetic" for the built-in set
    path: str  # where it was read from ("synthetic" for the built-in set)
    format: str  # kaggle-csv | icml-csv | labelled-csv | image-folders | synthetic
    content_hash: str  # sha256 of the content, first 16 hex digits
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) uint8 in 0..6
    usage: np.ndarray  # (N,) int8, see classes.USAGE_*


def cache_dir() -> Path:
    return Path(os.environ.get("SWEEP_CACHE") or Path.home() / ".cache" / "sweep")


def read_source(path: str | os.PathLike) -> Source:
    """Read a FER2013 file or image-folder tree, from the cache when its content was seen before."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file or directory") from None
    except OSError as e:  # a symbolic link loop, a path through a file, no permission
        raise DataError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
    except ValueError:  # a NUL byte in the path
        raise DataError(f"{p!r}: not a usable path") from None
    # What it is, before reading: a FIFO waits for a writer forever, /dev/zero never ends.
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise DataError(f"{p}: {_kind(st.st_mode)}, not a data file or folder")
    if not os.access(p, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
        raise DataError(f"{p}: cannot be read (permission denied)")
    if p.is_dir():
        try:
            files = _image_files(p)
        except OSError as e:  # a folder inside that cannot be listed
            raise DataError(f"{e.filename or p}: cannot be read ({e.strerror or type(e).__name__})") from None
        digest = _hash_tree(p, files)
    else:
        digest = _hash_file(p)
    cached = _cache_load(digest)
    if cached is not None:
        fmt, images, labels, usage = cached
    elif p.is_dir():
        fmt, (images, labels, usage) = "image-folders", _read_folders(p, files)
        _cache_store(digest, fmt, images, labels, usage)
    else:
        fmt, images, labels, usage = _read_csv(p)
        _cache_store(digest, fmt, images, labels, usage)
    return Source("fer2013", str(p), fmt, digest, images, labels, usage)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


# ---------------------------------------------------------------- hashing and cache

def _hash_file(p: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped for something else since checked
                raise DataError(f"{p}: not a regular file")
            while chunk := f.read(1 << 22):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    return h.hexdigest()[:16]


def _hash_tree(root: Path, files: list[tuple[Path, str, int]]) -> str:
    h = hashlib.sha256()
    for f, _, _ in files:
        h.update(str(f.relative_to(root)).encode())
        try:
            h.update(f.read_bytes())
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e.strerror or type(e).__name__})") from None
    return h.hexdigest()[:16]


def _cache_path(digest: str) -> Path:
    return cache_dir() / f"fer-v{CACHE_VERSION}-{digest}.npz"


def _cache_load(digest: str):
    """The arrays cached for `digest`, or None. The cache is a hint: whatever is wrong with a file
    there (missing, truncated, another program's, arrays of the wrong shape or type) means the
    source is parsed again, and the file replaced."""
    p = _cache_path(digest)
    try:
        if not stat.S_ISREG(p.stat().st_mode):  # np.load would wait on a FIFO forever
            return None
        with np.load(p, allow_pickle=False) as z:
            fmt, images, labels, usage = str(z["format"]), z["images"], z["labels"], z["usage"]
    except Exception:  # noqa: BLE001 - a damaged zip raises BadZipFile, EOFError, ValueError, ...
        return None
    n = len(labels)
    whole = (images.dtype == np.uint8 and images.shape == (n, IMAGE_SIZE, IMAGE_SIZE) and labels.dtype == np.uint8
             and labels.shape == (n,) and usage.dtype == np.int8 and usage.shape == (n,) and n > 0
             and int(labels.max()) < N_CLASSES)
    return (fmt, images, labels, usage) if whole else None


def _cache_store(digest: str, fmt: str, images, labels, usage) -> None:
    p = _cache_path(digest)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
        # Uncompressed: loading must stay well under a second for the full data set.
        np.savez(tmp, format=fmt, images=images, labels=labels, usage=usage)
        os.replace(tmp, p)
    except OSError:
        pass  # a read-only cache only costs speed


# ---------------------------------------------------------------- CSV formats

def _open_text(p: Path) -> io.TextIOBase:
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def _read_csv(p: Path):
    import pandas as pd

    try:
        with _open_text(p) as f:
            header = f.readline()
            f.seek(0)
            df = pd.read_csv(f, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: empty file") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{p}: not a readable CSV file ({type(e).__name__})") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None

    raw_names = list(df.columns)
    names = [c.strip().lower() for c in raw_names]
    df.columns = names
    if "pixels" not in names:
        if "image name" in names and "neutral" in names:
            raise DataError(f"{p}: this is a FER+ votes file (fer2013new.csv); it has no pixels, "
                            "pass the matching fer2013.csv instead")
        raise DataError(f"{p}: no 'pixels' column (columns: {','.join(c.strip() for c in raw_names)}); "
                        "expected emotion,pixels[,Usage]")
    if "emotion" not in names:
        raise DataError(f"{p}: no 'emotion' column, so no labels (columns: "
                        f"{','.join(c.strip() for c in raw_names)}); expected emotion,pixels[,Usage]")
    if len(df) == 0:
        raise DataError(f"{p}: no data rows")
    has_usage = "usage" in names
    fmt = "labelled-csv"
    if has_usage:
        fmt = "icml-csv" if any(c != c.lstrip() for c in header.rstrip("\r\n").split(",")) else "kaggle-csv"

    labels = _parse_labels(p, df["emotion"])
    images = _parse_pixels(p, df["pixels"])
    if has_usage:
        usage_col = df["usage"].str.strip()
        usage = usage_col.map(USAGE_CODES)
        bad = usage.isna().to_numpy().nonzero()[0]
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{p}: row {i + 2}: Usage '{usage_col.iloc[i]}' is not one of "
                            "Training, PublicTest, PrivateTest")
        usage = usage.to_numpy().astype(np.int8)
    else:
        usage = np.full(len(df), USAGE_NONE, np.int8)
    return fmt, images, labels, usage


def _parse_labels(p: Path, col) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(col.str.strip(), errors="coerce").to_numpy()
    ok = np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (values < N_CLASSES)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{p}: row {i + 2}: emotion '{col.iloc[i]}' is not a label in 0-{N_CLASSES - 1}")
    return values.astype(np.uint8)


def _parse_pixels(p: Path, col) -> np.ndarray:
    n = len(col)
    stripped = col.str.strip()
    counts = (stripped.str.count(r"\s+") + 1).to_numpy().copy()
    empty = (stripped.str.len() == 0).to_numpy()
    counts[empty] = 0
    bad = np.flatnonzero(counts != N_PIXELS)
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{p}: row {i + 2}: {counts[i]} pixel values, expected {N_PIXELS} (48x48)")
    text = " ".join(stripped.tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, not raises, when it stops at a bad token
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            values = None
    if values is None or values.size != n * N_PIXELS:
        _raise_bad_pixel_row(p, stripped)
    values = values.reshape(n, N_PIXELS)
    out_of_range = (values < 0) | (values > 255)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        v = int(values[i][out_of_range[i]][0])
        raise DataError(f"{p}: row {i + 2}: pixel value {v} is outside 0-255")
    return values.astype(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE)


def _raise_bad_pixel_row(p: Path, col) -> None:
    for i, s in enumerate(col):
        for tok in s.split():
            if not tok.isdigit():
                raise DataError(f"{p}: row {i + 2}: pixel value '{tok[:20]}' is not an integer in 0-255")
    raise DataError(f"{p}: pixel column could not be parsed")


# ---------------------------------------------------------------- image folders

def _label_of_folder(name: str) -> int | None:
    return FOLDER_ALIASES.get(name.strip().lower())


def _image_files(root: Path) -> list[tuple[Path, str, int]]:
    """(file, split folder name or '', label) for every image, in a stable order."""
    found: list[tuple[Path, str, int]] = []

    def scan(split_dir: Path, split: str) -> None:
        for d in sorted(split_dir.iterdir()):
            if not d.is_dir():
                continue
            label = _label_of_folder(d.name)
            if label is None:
                raise DataError(f"{d}: folder name '{d.name}' is not an emotion "
                                "(angry, disgust, fear, happy, sad, surprise, neutral)")
            for f in sorted(d.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, split, label))

    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    split_dirs = [(subdirs[k], k) for k in ("train", "test", "val", "validation") if k in subdirs]
    if split_dirs:
        for d, split in split_dirs:
            scan(d, split)
    elif any(_label_of_folder(k) is not None for k in subdirs):
        scan(root, "")
    else:
        raise DataError(f"{root}: expected train/ and test/ folders, or one folder per emotion")
    if not found:
        raise DataError(f"{root}: no image files (.png, .jpg) found")
    return found


def _usage_of(file: Path, split: str) -> int:
    stem = file.name
    for prefix, code in USAGE_CODES.items():
        if stem.startswith(prefix + "_"):
            return code
    if split == "train":
        return USAGE_CODES["Training"]
    if split in ("val", "validation"):
        return USAGE_CODES["PublicTest"]
    if split == "test":
        return USAGE_TEST
    return USAGE_NONE


def _read_folders(root: Path, files):
    from PIL import UnidentifiedImageError

    from .images import ImageError, read_gray48

    n = len(files)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels = np.empty(n, np.uint8)
    usage = np.empty(n, np.int8)
    for i, (f, split, label) in enumerate(files):
        try:
            images[i] = read_gray48(f)
        except ImageError as e:
            raise DataError(f"{f}: {e}") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{f}: unreadable image ({type(e).__name__})") from None
        labels[i] = label
        usage[i] = _usage_of(f, split)
    return images, labels, usage
