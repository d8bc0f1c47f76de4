"""An image file of any kind as the 48x48 8-bit grayscale the network sees: for training (image
folders) and for `sweep predict` alike.

Pillow's own `convert("L")` clips a 16-bit image to 0-255 instead of scaling it (a 16-bit PNG came
out nearly all white), so 16-bit images are scaled here; images whose range cannot be known (32-bit
integers beyond 16 bits, floating point) are refused by their mode, as are modes Pillow cannot
make gray. An image over Pillow's safety limit against decompression bombs is refused with its
size in one line, instead of Pillow's warning.
"""

from __future__ import annotations

import numpy as np

from .classes import IMAGE_SIZE

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(ValueError):
    """An image that cannot be read as grayscale; the message says why, without the path."""


def max_pixels() -> int:
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS)


def _open(path):
    """The image at `path`, opened lazily (nothing decoded yet), once its size is known to be sane."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:  # Pillow's own check warns (or raises) before we know the size: ours says it in one line
        Image.MAX_IMAGE_PIXELS = None
        im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = im.size
    if limit is not None and width * height > limit:
        im.close()
        raise ImageError(f"{width:,}x{height:,} is {width * height:,} pixels; at most {limit:,} are read (Pillow's "
                         "limit against decompression bombs): scale it down first")
    return im


def to_gray(im) -> np.ndarray:
    """An opened image as 8-bit grayscale of its own size."""
    if im.mode in SIXTEEN_BIT or im.mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"a 32-bit integer image (mode {im.mode}) with values beyond 16 bits: its scale is "
                             "unknown; save it with 8 or 16 bits")
        return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)  # 0..65535 onto 0..255
    if im.mode == "F":
        raise ImageError("a floating-point image (mode F): its scale is unknown; save it with 8 or 16 bits")
    try:
        return np.asarray(im.convert("L"), dtype=np.uint8)
    except ValueError:
        raise ImageError(f"an image of mode {im.mode}, which cannot be made grayscale; save it as RGB or "
                         "grayscale") from None


def read_gray48(path) -> np.ndarray:
    """The image at `path` as (48, 48) uint8 grayscale (bilinear resize where it is another size)."""
    from PIL import Image

    with _open(path) as im:
        gray = to_gray(im)
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        gray = np.asarray(Image.fromarray(gray).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR))
    return gray
