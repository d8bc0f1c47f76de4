"""Caches are hints: a data cache cut short or overwritten, an engines.json naming an engine that
does not exist, are ignored and replaced, never fatal."""

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from data.sources import _cache_path, read_source
from model import TrainConfig
from sweep.cli import app

runner = CliRunner()


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut to half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "another program's arrays":  # a valid file holding what no parse produced
        np.savez(path.with_suffix(""), format="kaggle-csv", images=np.zeros((3, 4), np.float64),
                 labels=np.full(5, 9, np.uint8), usage=np.zeros(2, np.int8))


@pytest.mark.parametrize("how", ["cut to half", "garbage", "empty", "another program's arrays"])
def test_a_damaged_data_cache_is_parsed_again_and_replaced(kaggle_csv, how):
    first = read_source(kaggle_csv)
    cached = _cache_path(first.content_hash)
    damage(cached, how)
    again = read_source(kaggle_csv)
    assert np.array_equal(again.images, first.images) and np.array_equal(again.labels, first.labels)
    with np.load(cached) as z:  # replaced by a whole one
        assert np.array_equal(z["images"], first.images)


def test_a_run_over_a_data_cache_cut_to_half_goes_on(kaggle_csv, tmp_path):
    first = read_source(kaggle_csv)
    damage(_cache_path(first.content_hash), "cut to half")
    r = runner.invoke(app, ["run", "--data", str(kaggle_csv), "--trials", "1", "--timeout", "0", "--storage",
                            str(tmp_path / "s.db"), "-q"])
    assert r.exit_code == 0 and "Traceback" not in r.output and r.output.count("\n") == 1, r.output


BAD_ENTRIES = {
    "an engine that does not exist": {"engine": "warp", "k": 4},
    "K of 0": {"engine": "multi", "k": 0},
    "K below 0": {"engine": "multi", "k": -3},
    "K as text": {"engine": "multi", "k": "4"},
    "K as a bool": {"engine": "multi", "k": True},
    "K past the ceiling": {"engine": "graph", "k": 100_000},
    "plain with several trials": {"engine": "plain", "k": 3},
    "fused where trials cannot fuse": {"engine": "fused", "k": 4},
    "no object": ["multi", 4],
}


def cpu_key(probe: TrainConfig) -> str:
    from model import auto_engine
    from model.device import device_name, resolve_device

    return auto_engine.cache_key(device_name(resolve_device("cpu")), torch.__version__, probe, False)


def fake_speeds(monkeypatch, winner: str = "multi:4") -> list:
    """auto's measurement, stubbed: `winner` is fastest by far; returns the list of what was measured."""
    from model import auto_engine

    measured = []

    from model.engine_speed import Speed

    def fake(engine, k, data, cfg, device):
        name = engine if engine == "plain" else f"{engine}:{k}"
        measured.append(name)
        return Speed(1000.0 if name == winner else 100.0, 0.0, 2)

    monkeypatch.setattr(auto_engine, "_measure", fake)
    return measured


@pytest.mark.parametrize("what", list(BAD_ENTRIES))
def test_a_cached_engine_choice_that_cannot_be_is_measured_again_and_replaced(tmp_path, monkeypatch, what):
    from model import auto_engine

    faces = __import__("data").load_dataset("synthetic", n_images=240, seed=5)
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    probe = TrainConfig(width=0.0625, batch_size=16)
    cache = tmp_path / "engines.json"
    cache.write_text(json.dumps({cpu_key(probe): BAD_ENTRIES[what]}))
    measured = fake_speeds(monkeypatch)
    choice = auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=2)
    assert (choice["engine"], choice["k"], choice["cached"]) == ("multi", 4, False) and measured
    stored = json.loads(cache.read_text())[cpu_key(probe)]
    assert (stored["engine"], stored["k"]) == ("multi", 4)


def test_an_engines_cache_that_is_no_json_is_measured_again_and_replaced(tmp_path, monkeypatch):
    from model import auto_engine

    faces = __import__("data").load_dataset("synthetic", n_images=240, seed=5)
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    probe = TrainConfig(width=0.0625, batch_size=16)
    cache = tmp_path / "engines.json"
    cache.write_text('{"cpu | torch": {"engine": "mul')  # cut short by a full disk, say
    fake_speeds(monkeypatch)
    assert auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=2)["cached"] is False
    assert json.loads(cache.read_text())[cpu_key(probe)]["engine"] == "multi"


def test_an_auto_worker_over_a_bad_cache_entry_says_ready_with_an_engine_it_trains(tmp_path, monkeypatch):
    """The worker process itself (forked: it keeps the stubbed measurement): it measures instead of
    trusting the entry, says so in `ready`, and trains its job."""
    from sweep.worker import worker_main

    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    probe = TrainConfig(width=0.0625, batch_size=16, epochs=1)
    (tmp_path / "engines.json").write_text(json.dumps({cpu_key(probe): {"engine": "warp", "k": 4}}))
    fake_speeds(monkeypatch, winner="plain")
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=worker_main, daemon=True, args=(
        child, {"source": "synthetic", "n_images": 240, "seed": 5}, 1, dict(os.environ), "off", "auto",
        {"device": "cpu", "probe": probe.to_dict(), "fusable": False}))
    proc.start()
    try:
        assert parent.poll(120)
        ready = parent.recv()
        assert ready[0] == "ready" and ready[3:5] == ("plain", 1) and ready[5]["cached"] is False, ready
        parent.send(("train", 1, probe.to_dict(), "cpu"))
        while True:
            assert parent.poll(120)
            msg = parent.recv()
            if msg[0] != "epoch":
                break
            parent.send("go")
        assert msg[0] == "done" and msg[2]["engine"] == "plain", msg
        parent.send(("nosave", 1))
    finally:
        parent.send(("stop",))
        proc.join(10)
        if proc.is_alive():
            proc.kill()
