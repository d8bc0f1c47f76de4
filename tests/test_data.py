import gzip
import os

import numpy as np
import pytest
import torch
from PIL import Image

import data as fer
from data import DataError, equalize, load_dataset, make_synthetic, read_source, split_indices
from tests.conftest import make_rows, write_csv


def test_kaggle_csv_round_trips_pixels_labels_and_usage(kaggle_csv, rows):
    images, labels, usage = rows
    src = read_source(kaggle_csv)
    assert src.format == "kaggle-csv" and src.name == "fer2013"
    assert np.array_equal(src.images, images)
    assert np.array_equal(src.labels, labels)
    assert list(src.usage) == [fer.sources.USAGE_CODES[u] for u in usage]


def test_gzip_and_icml_and_labelled_formats(tmp_path, rows):
    images, labels, usage = rows
    gz = read_source(write_csv(tmp_path / "a.csv.gz", images, labels, usage, gz=True))
    icml = read_source(write_csv(tmp_path / "icml_face_data.csv", images, labels, usage, icml=True))
    plain = read_source(write_csv(tmp_path / "train.csv", images, labels))
    assert gz.format == "kaggle-csv" and icml.format == "icml-csv" and plain.format == "labelled-csv"
    for src in (gz, icml, plain):
        assert np.array_equal(src.images, images) and np.array_equal(src.labels, labels)
    assert (plain.usage == -1).all()


def test_official_split_uses_usage_and_keeps_private_test(kaggle_csv):
    ds = load_dataset(kaggle_csv, "official")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (14, 7, 7)
    assert ds.describe()["n_test"] == 7


def test_paper_split_takes_the_first_training_rows(kaggle_csv, rows):
    images, labels, usage = rows
    src = read_source(kaggle_csv)
    train, val, test = split_indices(src, "paper", paper_n_train=10)
    assert list(train) == list(range(10)) and list(val) == [10, 11, 12, 13]
    assert len(test) == 14  # PublicTest + PrivateTest
    with pytest.raises(DataError, match="first 24000 Training rows"):
        split_indices(src, "paper")


def test_stratified_split_is_seeded_and_covers_each_class(tmp_path):
    images, labels, _ = make_rows((70, 0, 0))
    src = read_source(write_csv(tmp_path / "train.csv", images, labels))
    a = split_indices(src, "stratified", val_fraction=0.2, seed=1)
    b = split_indices(src, "stratified", val_fraction=0.2, seed=1)
    c = split_indices(src, "stratified", val_fraction=0.2, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert sorted(np.bincount(labels[a[1]])) == [2] * 7
    assert len(np.intersect1d(a[0], a[1])) == 0 and len(a[0]) + len(a[1]) == 70
    with pytest.raises(DataError, match="Usage column"):
        split_indices(src, "official")


def _save(path, img, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).convert(mode).save(path)


def test_image_folders_any_case_with_and_without_prefixes(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (48, 48), dtype=np.uint8)  # noqa: E731
    root = tmp_path / "fer"
    _save(root / "train" / "Happy" / "Training_1.png", img())
    _save(root / "train" / "angry" / "a.png", img())
    _save(root / "train" / "SURPRISE" / "b.jpg", img(), "RGB")
    _save(root / "test" / "neutral" / "PrivateTest_9.png", img())
    _save(root / "test" / "sad" / "PublicTest_3.png", img())
    _save(root / "test" / "disgust" / "plain.png", img())
    src = read_source(root)
    assert src.format == "image-folders" and src.images.shape == (6, 48, 48)
    got = {(int(l), int(u)) for l, u in zip(src.labels, src.usage)}
    assert got == {(3, 0), (0, 0), (5, 0), (6, 2), (4, 1), (1, 3)}
    png = read_source(root).images[list(src.labels).index(3)]
    assert np.array_equal(png, np.asarray(Image.open(root / "train" / "Happy" / "Training_1.png")))


def test_image_folder_errors(tmp_path):
    root = tmp_path / "fer"
    (root / "train" / "joy").mkdir(parents=True)
    with pytest.raises(DataError, match="not an emotion"):
        read_source(root)
    root2 = tmp_path / "fer2"
    (root2 / "train" / "happy").mkdir(parents=True)
    (root2 / "train" / "happy" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png: unreadable image"):
        read_source(root2)


BAD_CSVS = {
    "wrong columns": ("a,b\n1,2\n", "no 'pixels' column"),
    "no labels": ("pixels,Usage\n" + " ".join(["1"] * 2304) + ",Training\n", "no 'emotion' column"),
    "short row": ("emotion,pixels\n0," + " ".join(["1"] * 2303) + "\n", "row 2: 2303 pixel values"),
    "pixel out of range": ("emotion,pixels\n0," + " ".join(["1"] * 2303 + ["256"]) + "\n", "row 2: pixel value 256"),
    "pixel not a number": ("emotion,pixels\n0," + " ".join(["1"] * 2303 + ["x1"]) + "\n", "row 2: pixel value 'x1'"),
    "label out of range": ("emotion,pixels\n7," + " ".join(["1"] * 2304) + "\n", "row 2: emotion '7'"),
    "bad usage": ("emotion,pixels,Usage\n1," + " ".join(["1"] * 2304) + ",Holdout\n", "row 2: Usage 'Holdout'"),
    "empty file": ("", "empty file"),
    "header only": ("emotion,pixels,Usage\n", "no data rows"),
    "ferplus votes": ("Usage,Image name,neutral,happiness\nTraining,fer0.png,4,0\n", "FER\\+ votes"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_gets_one_line_error_naming_file_and_row(tmp_path, case):
    text, expected = BAD_CSVS[case]
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=expected) as e:
        read_source(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_second_bad_row_is_named(tmp_path, rows):
    images, labels, usage = rows
    p = write_csv(tmp_path / "f.csv", images, labels, usage)
    lines = p.read_text().splitlines()
    lines[5] = lines[5].replace(" 1", " 999", 1) if " 1" in lines[5] else lines[5][:-20] + " 999" + lines[5][-20:]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 6"):
        read_source(p)


def test_binary_and_missing_files(tmp_path):
    b = tmp_path / "blob.csv"
    b.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DataError, match="not a readable CSV|no 'pixels'"):
        read_source(b)
    g = tmp_path / "trunc.csv.gz"
    g.write_bytes(gzip.compress(b"emotion,pixels\n")[:10])
    with pytest.raises(DataError, match="trunc.csv.gz"):
        read_source(g)
    with pytest.raises(DataError, match="no such file"):
        read_source(tmp_path / "nope.csv")


def test_parse_once_cache_by_content(tmp_path, rows, monkeypatch):
    images, labels, usage = rows
    p = write_csv(tmp_path / "a.csv", images, labels, usage)
    first = read_source(p)
    calls = []
    monkeypatch.setattr(fer.sources, "_read_csv", lambda path: calls.append(path))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(p.read_bytes())
    again = read_source(copy)  # same content, other name: from the cache
    assert calls == [] and again.content_hash == first.content_hash
    assert np.array_equal(again.images, first.images)
    p.write_text(p.read_text().replace("\n0,", "\n1,", 1))
    with pytest.raises(TypeError):
        read_source(p)  # changed content: parsed again (by the stub, which returns None)
    assert calls == [p]


def test_equalize_matches_the_textbook_mapping():
    rng = np.random.default_rng(0)
    img = rng.integers(50, 100, (48, 48), dtype=np.uint8)
    out = equalize(img[None])[0]
    hist = np.bincount(img.ravel(), minlength=256)
    cdf = hist.cumsum()
    cdf_min = cdf[hist > 0][0]
    expected = np.rint((cdf[img] - cdf_min) * 255 / (img.size - cdf_min)).astype(np.uint8)
    assert np.array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255
    flat = np.full((1, 48, 48), 77, np.uint8)
    assert np.array_equal(equalize(flat), flat)


def test_synthetic_is_deterministic_labelled_and_named():
    a, b, c = make_synthetic(400, seed=1), make_synthetic(400, seed=1), make_synthetic(400, seed=2)
    assert a.name == "synthetic" and a.format == "synthetic"
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (400, 48, 48) and a.images.dtype == np.uint8
    assert set(np.unique(a.labels)) == set(range(7))
    assert {0, 1, 2} == set(np.unique(a.usage))
    ds = load_dataset("synthetic", n_images=400, seed=1)
    assert ds.describe()["data_name"] == "synthetic"


def test_augment_keeps_shape_and_is_seeded():
    x = torch.rand(16, 1, 48, 48)
    a = fer.augment(x, torch.Generator().manual_seed(0))
    b = fer.augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    flipped = fer.augment(x, torch.Generator().manual_seed(0), crop_pad=0, flip=True)
    for i in range(16):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def _real_fer2013():
    """The real FER2013 file where this checkout has one: $SWEEP_DATA as the suite starts (each test
    then runs without it), else data/fer2013.csv[.gz], where the README says to put it."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    found = [Path(p) for p in (os.environ.get("SWEEP_DATA"), repo / "data/fer2013.csv.gz", repo / "data/fer2013.csv") if p]
    return next((p for p in found if p.is_file()), None)


REAL_FER2013 = _real_fer2013()


@pytest.mark.skipif(REAL_FER2013 is None, reason="no FER2013 file here ($SWEEP_DATA or data/fer2013.csv[.gz])")
def test_real_fer2013_loads_with_the_official_sizes(monkeypatch):
    from data import sources

    ds = load_dataset(REAL_FER2013, "official")
    assert (len(ds.y_train), len(ds.y_val)) == (28_709, 3_589)

    def parse_again(*a, **kw):
        raise AssertionError("parsed again: the cache was not used")

    monkeypatch.setattr(sources, "_read_csv", parse_again)
    again = load_dataset(REAL_FER2013, "official")  # from the cache, keyed by the file's content
    assert np.array_equal(again.x_train, ds.x_train) and np.array_equal(again.y_val, ds.y_val)


def test_fer_pack_carries_every_row_to_a_gpu_machine_and_back(tmp_path, kaggle_csv):
    """benchmarks/fer_pack.py (FER2013 packed as uint8 for GPU machines and cluster nodes): the unpacked Kaggle CSV
    reads back to the same images, labels and usage, PrivateTest rows included."""
    from benchmarks.fer_pack import pack, unpack

    pack(str(kaggle_csv), str(tmp_path / "fer.xz"))
    unpack(str(tmp_path / "fer.xz"), str(tmp_path / "fer2013.csv"))
    a, b = read_source(kaggle_csv), read_source(tmp_path / "fer2013.csv")
    assert b.format == "kaggle-csv"
    for x, y in ((a.images, b.images), (a.labels, b.labels), (a.usage, b.usage)):
        assert np.array_equal(x, y)
    assert set(b.usage.tolist()) == {0, 1, 2}
