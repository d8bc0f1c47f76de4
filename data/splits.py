"""Train / val / test splits of a parsed source, and the equalised arrays a trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import N_CLASSES, USAGE_CODES, USAGE_NONE, USAGE_TEST
from .errors import DataError
from .preprocess import equalize
from .sources import Source

SPLITS = ("official", "paper", "stratified")
PAPER_N_TRAIN = 24_000  # the paper trained on the first 24,000 Training rows, validated on the rest


@dataclass(frozen=True)
class Dataset:
    """Equalised uint8 images and labels, split. `x_test` is empty when the source has no test rows."""

    name: str  # "fer2013" | "synthetic"
    source: str  # path, or "synthetic"
    format: str
    content_hash: str
    split: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def describe(self) -> dict:
        """Small scalars for study and trial attributes."""
        return {
            "data_name": self.name,
            "data_source": self.source,
            "data_format": self.format,
            "data_hash": self.content_hash,
            "split": self.split,
            "n_train": int(len(self.y_train)),
            "n_val": int(len(self.y_val)),
            "n_test": int(len(self.y_test)),
        }


def _stratified(labels: np.ndarray, idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (rest, held) with `fraction` of each class held out, seeded."""
    rng = np.random.default_rng(seed)
    held = []
    for c in range(N_CLASSES):
        members = idx[labels[idx] == c]
        k = int(round(len(members) * fraction))
        if len(members) > 1:
            k = min(max(k, 1), len(members) - 1)
        held.append(rng.permutation(members)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], np.int64)
    rest_idx = np.setdiff1d(idx, held_idx)
    return rest_idx, held_idx


def split_indices(src: Source, split: str, *, val_fraction: float = 0.15, seed: int = 0,
                  paper_n_train: int = PAPER_N_TRAIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test) into `src` for one of SPLITS."""
    usage = src.usage
    every = np.arange(len(usage))
    training = every[usage == USAGE_CODES["Training"]]
    public = every[usage == USAGE_CODES["PublicTest"]]
    private = every[usage == USAGE_CODES["PrivateTest"]]
    unlabelled_test = every[usage == USAGE_TEST]
    no_usage = every[usage == USAGE_NONE]

    if split == "official":
        if len(no_usage) == len(usage):
            raise DataError(f"{src.path}: the official split needs a Usage column (or train/test folders); "
                            "use split 'stratified'")
        # Image-folder copies often merge PublicTest and PrivateTest into one test/ folder: it
        # then serves as validation, as those copies' users treat it.
        val = public if len(public) else unlabelled_test
        train, test = training, private
    elif split == "paper":
        pool = training if len(training) else no_usage
        if len(pool) <= paper_n_train:
            raise DataError(f"{src.path}: the paper split takes the first {paper_n_train} Training rows "
                            f"for training and validates on the rest, but there are only {len(pool)}")
        train, val = pool[:paper_n_train], pool[paper_n_train:]
        test = np.sort(np.concatenate([public, private, unlabelled_test]))
    elif split == "stratified":
        pool = np.sort(np.concatenate([training, no_usage]))
        if len(pool) < 2 * N_CLASSES:
            raise DataError(f"{src.path}: too few rows ({len(pool)}) for a stratified split")
        train, val = _stratified(src.labels, pool, val_fraction, seed)
        test = np.sort(np.concatenate([public, private, unlabelled_test]))
    else:
        raise DataError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{src.path}: split '{split}' leaves {len(train)} training and {len(val)} validation rows")
    return train, val, test


def make_dataset(src: Source, split: str = "official", *, val_fraction: float = 0.15, seed: int = 0,
                 paper_n_train: int = PAPER_N_TRAIN) -> Dataset:
    train, val, test = split_indices(src, split, val_fraction=val_fraction, seed=seed,
                                     paper_n_train=paper_n_train)
    images = equalize(src.images)
    labels = src.labels.astype(np.int64)
    return Dataset(src.name, src.path, src.format, src.content_hash, split,
                   images[train], labels[train], images[val], labels[val], images[test], labels[test])
