"""Images of every kind for `sweep predict` and for image-folder data: 16-bit images scaled as their
8-bit twins (not clipped to white), palette and alpha images read as their gray, images whose scale
cannot be known refused by their mode, and one past Pillow's size limit refused in one line."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from data import read_source
from sweep.cli import app
from sweep.predict import load_image
from tests.test_limits import one_line_error

runner = CliRunner()


@pytest.fixture
def twins(tmp_path) -> dict:
    """The same face saved in several ways: 8-bit gray, 16-bit gray, palette, gray with alpha, RGBA."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (60, 50), dtype=np.uint8)
    noise = rng.integers(0, 128, gray.shape)  # below half a step of 257: each pixel scales back to its 8-bit value
    sixteen = np.minimum(gray.astype(np.int64) * 257 + noise, 65535).astype(np.uint16)
    files = {"8-bit": Image.fromarray(gray), "16-bit": Image.fromarray(sixteen), "palette": Image.fromarray(gray).convert("P"),
             "gray and alpha": Image.fromarray(gray).convert("LA"), "rgba": Image.fromarray(gray).convert("RGBA")}
    out = {}
    for name, im in files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.png"
        im.save(path)
        out[name] = path
    assert Image.open(out["16-bit"]).mode in ("I;16", "I") and Image.open(out["palette"]).mode == "P"
    return out


def test_every_kind_of_image_reads_as_its_8_bit_twin(twins):
    eight = load_image(twins["8-bit"])
    for name, path in twins.items():
        assert np.array_equal(load_image(path), eight), name


def test_image_folders_of_16_bit_images_train_on_what_the_8_bit_ones_hold(tmp_path):
    rng = np.random.default_rng(1)
    faces = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(4)]
    for root, to_file in (("eight", lambda a: Image.fromarray(a)),
                          ("sixteen", lambda a: Image.fromarray(a.astype(np.uint16) * 257))):
        for i, face in enumerate(faces):
            folder = tmp_path / root / "train" / ("happy" if i % 2 else "sad")
            folder.mkdir(parents=True, exist_ok=True)
            to_file(face).save(folder / f"{i}.png")
    eight, sixteen = read_source(tmp_path / "eight"), read_source(tmp_path / "sixteen")
    assert eight.content_hash != sixteen.content_hash and np.array_equal(eight.images, sixteen.images)


def test_predict_gives_a_16_bit_or_palette_face_the_answer_of_its_8_bit_twin(made_study, twins):
    url, _ = made_study
    r = runner.invoke(app, ["predict", *map(str, twins.values()), "--storage", url, "--json"])
    assert r.exit_code == 0, r.output
    answers = [p["probabilities"] for p in json.loads(r.stdout)["predictions"]]
    assert all(a == answers[0] for a in answers)


def test_images_whose_scale_cannot_be_known_are_refused_by_their_mode(made_study, tmp_path):
    url, _ = made_study
    floats, wide = tmp_path / "floats.tiff", tmp_path / "wide.tiff"
    Image.fromarray(np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48)).save(floats)
    Image.fromarray(np.full((48, 48), 10**6, np.int32)).save(wide)
    one_line_error(runner.invoke(app, ["predict", str(floats), "--storage", url]),
                   f"{floats}: a floating-point image (mode F): its scale is unknown")
    one_line_error(runner.invoke(app, ["predict", str(wide), "--storage", url]),
                   f"{wide}: a 32-bit integer image (mode I) with values beyond 16 bits")


def test_an_image_past_the_size_limit_is_one_line_of_our_own(made_study, tmp_path):
    url, _ = made_study
    big = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000)).save(big, compress_level=1)  # 100 megapixels, 0.4 MB
    line = one_line_error(runner.invoke(app, ["predict", str(big), "--storage", url]),
                          f"{big}: 10,000x10,000 is 100,000,000 pixels; at most 89,478,485 are read")
    assert "DecompressionBomb" not in line
