"""Preprocessing as in the paper: histogram equalisation, once per data set, on the uint8 arrays
(vectorised over all images). Scaling and augmentation per batch are in `data.batches`."""

from __future__ import annotations

import numpy as np


def equalize(images: np.ndarray) -> np.ndarray:
    """Histogram-equalise each uint8 image of an (N, H, W) array (OpenCV's equalizeHist mapping).

    A constant image has nothing to spread and is returned unchanged.
    """
    n = len(images)
    if n == 0:
        return images.copy()
    flat = images.reshape(n, -1)
    total = flat.shape[1]
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    hist = np.bincount((flat + offsets).ravel(), minlength=n * 256).reshape(n, 256)
    cdf = np.cumsum(hist, axis=1)
    # cdf_min: the count at the darkest level that occurs (OpenCV's definition).
    first = np.argmax(hist > 0, axis=1)
    cdf_min = cdf[np.arange(n), first][:, None]
    denom = total - cdf_min
    constant = denom[:, 0] == 0
    lut = np.rint((cdf - cdf_min) * 255.0 / np.maximum(denom, 1)).clip(0, 255).astype(np.uint8)
    out = np.take_along_axis(lut, flat.astype(np.int64), axis=1).astype(np.uint8)
    out[constant] = flat[constant]
    return out.reshape(images.shape)
