"""`synthetic`: a built-in, FER-shaped data set of procedurally drawn faces.

48x48 grayscale faces whose 7 classes differ the way expressions do: mouth curve, openness and
width, brow height and angle, eye openness, and a lopsided mouth with a wrinkled nose for
Disgust. Each face gets its own pose, scale, lighting, skin tone and noise, the class features
are jittered so neighbouring classes overlap, and a few labels are flipped, so a good network
lands well under 100%. Class frequencies follow FER2013's (Disgust is rare there too).

It exists so that a fresh clone runs a real sweep in minutes without the real data. It is never
called FER2013: its name is `synthetic` everywhere it is recorded.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .classes import IMAGE_SIZE, N_CLASSES, USAGE_CODES
from .sources import Source

# FER2013's Training class frequencies (Angry .. Neutral).
CLASS_FREQ = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965], dtype=np.float64)
CLASS_FREQ /= CLASS_FREQ.sum()

# Per-class feature means, one column per class (Angry, Disgust, Fear, Happy, Sad, Surprise,
# Neutral). Units are pixels of a 48x48 face at scale 1, or unitless shape factors.
FEATURES = {
    #                 Ang   Dis   Fea   Hap   Sad   Sur   Neu
    "eye_open":     [0.60, 0.55, 1.45, 0.85, 0.80, 1.55, 1.00],  # eye height factor
    "brow_raise":   [-1.6, -1.0, 1.6, 0.2, 0.6, 2.6, 0.0],  # px up from rest
    "brow_tilt":    [0.45, 0.30, -0.40, 0.0, -0.50, -0.05, 0.0],  # inner end down (+) or up (-)
    "mouth_curve":  [-0.8, -1.6, -0.6, 2.6, -2.4, 0.0, 0.0],  # corners up (+), px
    "mouth_open":   [0.1, 0.4, 1.0, 0.7, 0.05, 2.8, 0.0],  # px of opening at the centre
    "mouth_width":  [5.0, 5.0, 7.0, 7.5, 5.5, 3.8, 6.0],  # half-width, px
    "mouth_skew":   [0.0, 1.6, 0.0, 0.0, 0.0, 0.0, 0.0],  # one corner raised, px
    "nose_wrinkle": [0.2, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # darkness of the wrinkle lines
}
# Per-feature jitter (standard deviation), wide enough that classes overlap.
JITTER = {
    "eye_open": 0.22, "brow_raise": 0.9, "brow_tilt": 0.22, "mouth_curve": 1.0,
    "mouth_open": 0.45, "mouth_width": 0.9, "mouth_skew": 0.6, "nose_wrinkle": 0.3,
}
LABEL_NOISE = 0.05  # fraction of labels replaced by a random class
VAL_FRACTION = 0.15  # PublicTest share of the generated rows
TEST_FRACTION = 0.15  # PrivateTest share


def _soft(d: np.ndarray, edge: float = 0.6) -> np.ndarray:
    """1 inside (d < 0), 0 outside, with an anti-aliased edge `edge` px wide."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -30, 30)))


def _render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    n = len(labels)
    s = IMAGE_SIZE
    feat = {k: np.asarray(v, np.float32)[labels] + rng.normal(0, JITTER[k], n).astype(np.float32)
            for k, v in FEATURES.items()}
    col = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731

    # Pose: centre shift, scale and in-plane rotation, then face coordinates (u right, v down).
    cx = col(s / 2 + rng.uniform(-3.5, 3.5, n))
    cy = col(s / 2 + rng.uniform(-3.0, 3.0, n))
    scale = col(rng.uniform(0.82, 1.12, n))
    ang = np.deg2rad(rng.uniform(-14, 14, n))
    cos, sin = col(np.cos(ang)), col(np.sin(ang))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    dx, dy = xx[None] - cx, yy[None] - cy
    u = (cos * dx + sin * dy) / scale
    v = (-sin * dx + cos * dy) / scale

    background = col(rng.uniform(20, 140, n))
    skin = col(rng.uniform(110, 215, n))
    face = _soft(np.sqrt((u / 16.0) ** 2 + (v / 20.0) ** 2) * 16.0 - 16.0, 1.0)
    img = background + (skin - background) * face
    ink = skin * 0.75  # how much darker than the skin a feature is drawn

    # Eyes: ellipses at (+-6, -4), their height set by eye_open.
    eye_h = col(np.clip(2.0 * feat["eye_open"], 0.4, 4.0))
    for ex in (-6.0, 6.0):
        d = np.sqrt(((u - ex) / 3.0) ** 2 + ((v + 4.0) / eye_h) ** 2) - 1.0
        img = img - ink * _soft(d * 2.0, 0.5)

    # Brows: short thick segments above the eyes; tilt moves the inner end.
    raise_ = col(feat["brow_raise"])
    tilt = col(feat["brow_tilt"])
    for side in (-1.0, 1.0):
        t = np.clip((u * side - 2.0) / 7.0, 0.0, 1.0)  # 0 at the inner end, 1 at the outer
        by = -9.5 - raise_ + tilt * 3.0 * (1.0 - t)
        inside = (u * side > 1.5) & (u * side < 9.5)
        img = img - 0.8 * ink * _soft(np.abs(v - by) - 0.9, 0.5) * inside

    # Nose: a faint vertical line, and for Disgust wrinkle lines beside it.
    img = img - 0.35 * ink * _soft(np.abs(u) - 0.6, 0.5) * _soft(np.abs(v - 2.0) - 3.0, 0.5)
    wrinkle = col(np.clip(feat["nose_wrinkle"], 0, 1.5))
    for side in (-1.0, 1.0):
        w = _soft(np.abs(v - 0.5) - 0.5, 0.4) * _soft(np.abs(u - 2.6 * side) - 1.2, 0.4)
        img = img - 0.5 * ink * wrinkle * w

    # Mouth: a curve v = 9 - curve * (u / width)^2 + skew * (u / width), opened at the centre.
    mw = col(np.clip(feat["mouth_width"], 2.5, 10.0))
    r = np.clip(u / mw, -1.3, 1.3)
    centre = 9.5 - col(feat["mouth_curve"]) * r**2 + col(feat["mouth_skew"]) * r
    half_open = 0.7 + col(np.clip(feat["mouth_open"], 0, 4.0)) * np.clip(1.0 - r**2, 0.0, 1.0)
    mouth = _soft(np.abs(v - centre) - half_open, 0.5) * _soft(np.abs(u) - mw, 0.6)
    img = img - ink * mouth

    # Lighting: a linear gradient across the image, then sensor noise.
    phi = rng.uniform(0, 2 * np.pi, n)
    strength = col(rng.uniform(0, 45, n))
    grad = (col(np.cos(phi)) * (xx[None] - s / 2) + col(np.sin(phi)) * (yy[None] - s / 2)) / (s / 2)
    img = img + strength * grad
    img = img + rng.normal(0, 1, img.shape).astype(np.float32) * col(rng.uniform(3, 14, n))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_synthetic(n_images: int = 4000, seed: int = 0) -> Source:
    """Generate `n_images` faces, deterministically from `seed`, with a Kaggle-style Usage."""
    if n_images < N_CLASSES * 3:
        raise ValueError(f"synthetic: n_images must be at least {N_CLASSES * 3}")
    rng = np.random.default_rng(seed)
    labels = rng.choice(N_CLASSES, size=n_images, p=CLASS_FREQ).astype(np.uint8)
    images = np.concatenate([_render(rng, labels[i:i + 2048]) for i in range(0, n_images, 2048)])
    noisy = rng.random(n_images) < LABEL_NOISE
    labels[noisy] = rng.integers(0, N_CLASSES, int(noisy.sum()))
    n_val = int(round(n_images * VAL_FRACTION))
    n_test = int(round(n_images * TEST_FRACTION))
    usage = np.full(n_images, USAGE_CODES["Training"], np.int8)
    usage[n_images - n_val - n_test:n_images - n_test] = USAGE_CODES["PublicTest"]
    usage[n_images - n_test:] = USAGE_CODES["PrivateTest"]
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return Source("synthetic", "synthetic", "synthetic", digest, images, labels, usage)
