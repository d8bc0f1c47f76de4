"""FER2013 readers, splits, the built-in synthetic set, and batch preprocessing.

Small data lives as uint8 arrays, parsed once and cached; the trainer moves them to the device
and batches by index slicing. Nothing here but `data.batches` imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from .classes import CLASSES, IMAGE_SIZE, N_CLASSES
from .errors import DataError
from .preprocess import equalize
from .sources import Source, read_source
from .splits import PAPER_N_TRAIN, SPLITS, Dataset, make_dataset, split_indices
from .synthetic import make_synthetic

SYNTHETIC = "synthetic"
# Where `sweep run` looks for the real data when none is named, in order.
DEFAULT_PATHS = ("data/fer2013.csv", "data/fer2013.csv.gz")


def find_fer2013() -> Path | None:
    """$SWEEP_DATA, else data/fer2013.csv[.gz] under the current directory, else None."""
    env = os.environ.get("SWEEP_DATA")
    if env:
        return Path(env)
    for p in DEFAULT_PATHS:
        if Path(p).exists():
            return Path(p)
    return None


def load_dataset(source: str | os.PathLike, split: str = "official", *, n_images: int = 4000,
                 val_fraction: float = 0.15, seed: int = 0, paper_n_train: int = PAPER_N_TRAIN) -> Dataset:
    """Read `source` ("synthetic" or a FER2013 path) and split it; raises DataError on bad input."""
    if str(source) == SYNTHETIC:
        src = make_synthetic(n_images=n_images, seed=seed)
    else:
        src = read_source(source)
    return make_dataset(src, split, val_fraction=val_fraction, seed=seed, paper_n_train=paper_n_train)


_BATCHES = ("apply_augment", "augment", "augment_draws", "to_float")


def __getattr__(name: str):
    """The batch operations need torch: imported on first use, so that reading data does not."""
    if name in _BATCHES:
        from . import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'data' has no attribute '{name}'")


__all__ = [
    "CLASSES", "IMAGE_SIZE", "N_CLASSES", "SPLITS", "SYNTHETIC", "PAPER_N_TRAIN", "DEFAULT_PATHS",
    "DataError", "Dataset", "Source",
    "apply_augment", "augment", "augment_draws", "equalize", "to_float", "find_fer2013", "load_dataset", "make_dataset", "make_synthetic",
    "read_source", "split_indices",
]
