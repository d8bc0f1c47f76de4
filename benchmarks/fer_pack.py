"""Carry FER2013 to a GPU machine or cluster node in fewer bytes, and back into a Kaggle CSV there.

    python -m benchmarks.fer_pack pack data/fer2013.csv.gz .gpu/fer2013.xz
    python -m benchmarks.fer_pack unpack .gpu/fer2013.xz /tmp/fer2013.csv
    python -m benchmarks.fer_pack synthetic 700 /tmp/tiny.xz   # N synthetic faces, packed the same way

`synthetic` packs the built-in synthetic faces with their Training/PublicTest/PrivateTest usage,
so that `benchmarks/gpu.sh` can be tried end to end on a machine without FER2013.

The Kaggle csv.gz is 84 MB; its images as raw uint8 under xz about 55 MB. `unpack` writes the same rows (emotion, pixels, Usage) as a plain Kaggle
CSV, which `sweep` reads like the original: the images, labels and usage are identical, only the
file (and so the data hash stored with each trial) differs.
"""

from __future__ import annotations

import lzma
import sys

import numpy as np

from data.classes import USAGE_CODES

USAGE_NAMES = {code: name for name, code in USAGE_CODES.items()}
MAGIC = b"FER2013v1"


def pack(src: str, out: str) -> None:
    from data import read_source

    _write(read_source(src), out)


def pack_synthetic(n: str, out: str) -> None:
    from data import make_synthetic

    _write(make_synthetic(int(n)), out)


def _write(s, out: str) -> None:
    n = len(s.labels)
    with lzma.open(out, "wb", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(MAGIC + n.to_bytes(4, "little"))
        f.write(s.labels.astype(np.uint8).tobytes())
        f.write(s.usage.astype(np.uint8).tobytes())
        f.write(np.ascontiguousarray(s.images, dtype=np.uint8).tobytes())
    print(f"{out}: {n} images")


def unpack(src: str, out: str) -> None:
    with lzma.open(src, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            sys.exit(f"{src}: not a file made by fer_pack")
        n = int.from_bytes(head[len(MAGIC):], "little")
        labels = np.frombuffer(f.read(n), np.uint8)
        usage = np.frombuffer(f.read(n), np.uint8)
        images = np.frombuffer(f.read(n * 48 * 48), np.uint8).reshape(n, 48 * 48)
    with open(out, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for label, use, img in zip(labels, usage, images):
            f.write(f"{label},{' '.join(map(str, img.tolist()))},{USAGE_NAMES[int(use)]}\n")
    print(f"{out}: {n} rows")


if __name__ == "__main__":
    commands = {"pack": pack, "unpack": unpack, "synthetic": pack_synthetic}
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2], sys.argv[3])
