"""Several trials of any hyperparameters trained side by side in one process (model.MultiTrainer):
each equals its trial trained alone, bit for bit, random layers included, in every memory layout
and precision a device trains in, however members join and leave."""

from __future__ import annotations

import itertools

import pytest
import torch

from data import load_dataset
from model import TrainConfig, train
from model.multi_train import MultiTrainer, train_multi

SMALL = dict(width=0.0625, epochs=2)


@pytest.fixture(scope="module")
def faces():
    return load_dataset("synthetic", n_images=240, seed=5)


def mixed(precision: str = "fp32") -> list[TrainConfig]:
    """Trials that could never share a fused group: batch size, optimizer, width, schedule and
    epochs all differ, so their epochs end at different rounds."""
    return [
        TrainConfig(batch_size=32, optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True, seed=1,
                    precision=precision, **SMALL),
        TrainConfig(batch_size=64, optimizer="adam", lr=2e-3, augment=True, label_smoothing=0.1, seed=2,
                    lr_schedule="cosine", precision=precision, **SMALL),
        TrainConfig(batch_size=16, optimizer="rmsprop", lr=5e-4, momentum=0.5, width=0.125, epochs=1, seed=3,
                    precision=precision),
        TrainConfig(batch_size=48, optimizer="adamw", lr=1e-3, weight_decay=0.01, augment=True, epochs=3, seed=4,
                    lr_schedule="plateau", precision=precision, width=0.0625),
    ]


def assert_identical(result, alone):
    assert result.stop_reason == alone.stop_reason and result.epochs_run == alone.epochs_run
    for a, b in zip(result.history, alone.history):
        assert (a["train_loss"], a["train_acc"], a["val_acc"]) == (b["train_loss"], b["train_acc"], b["val_acc"])
    assert (result.test_acc, result.val_confusion, result.precision) == \
        (alone.test_acc, alone.val_confusion, alone.precision)
    got, want = result.model.state_dict(), alone.model.state_dict()
    assert all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("channels_last, precision", [(False, "fp32"), (True, "fp32"), (True, "bf16")],
                         ids=["nchw-fp32", "channels_last-fp32", "channels_last-bf16"])
def test_each_member_is_its_trial_alone_bit_for_bit(faces, channels_last, precision):
    configs = mixed(precision)
    results = train_multi(faces, configs, device="cpu", keep_model=True, channels_last=channels_last)
    for cfg, result in zip(configs, results):
        assert_identical(result, train(faces, cfg, device="cpu", keep_model=True, channels_last=channels_last))
    assert [r.epochs_run for r in results] == [2, 2, 1, 3]


def test_members_join_and_leave_at_any_round(faces):
    a, b, c, d = mixed()
    trainer = MultiTrainer(faces, device="cpu")
    trainer.add("a", a)
    first = trainer.advance()  # a alone until its first epoch ends
    assert set(first) == {"a"} and first["a"]["concurrent"] == 1
    trainer.add("b", b)
    trainer.add("c", c)  # joining in the middle of nobody's epoch: each begins its own
    done, concurrency = {}, {}
    while len(trainer):
        for key, record in trainer.advance().items():
            concurrency.setdefault(key, []).append(record["concurrent"])
            cfg = trainer.config(key)
            if key == "b" and record["epoch"] == 1:
                trainer.add("d", d)  # joins while a and b are mid-epoch
            if record["epoch"] == cfg.epochs:
                done[key] = trainer.finish(key, "completed", keep_model=True)
    for key, cfg in zip("abcd", (a, b, c, d)):
        assert_identical(done[key], train(faces, cfg, device="cpu", keep_model=True))
    assert max(concurrency["b"]) >= 3  # b shared its rounds with others
    assert [h["concurrent"] for h in done["b"].history] == concurrency["b"]  # its history says so too


def test_a_stopped_and_a_diverging_member_leave_and_the_rest_go_on(faces):
    good = TrainConfig(batch_size=32, optimizer="sgd", lr=0.01, seed=1, **SMALL)
    bad = TrainConfig(batch_size=64, optimizer="sgd", lr=1e12, seed=2, **SMALL)
    pruned = TrainConfig(batch_size=32, optimizer="adam", lr=1e-3, seed=3, **SMALL)
    results = train_multi(faces, [good, bad, pruned], device="cpu", on_epoch=lambda key, record: key == 2)
    assert [r.stop_reason for r in results] == ["completed", "diverged", "stopped"]
    assert [r.epochs_run for r in results] == [2, 1, 1]
    assert results[0].val_acc == train(faces, good, device="cpu").val_acc


# ---------------------------------------------------------------- --engine auto


def test_auto_keeps_the_fastest_engine_only_where_it_beats_plain_and_caches_it(faces, tmp_path, monkeypatch):
    import json

    from model import auto_engine
    from model.engine_speed import Speed

    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    probe = TrainConfig(width=0.0625, batch_size=16, epochs=4)
    speeds = {"plain": 100.0, "graph:1": 105.0, "graph:2": 150.0, "graph:4": 200.0, "graph:8": 190.0,
              "multi:2": 150.0, "multi:4": 240.0, "fused:4": 180.0, "fused:16": 300.0}
    measured = []

    def fake(engine, k, data, cfg, device):
        measured.append((engine, k))
        assert cfg == probe and len(data.x_train) == 4 * 16  # the probe's shape, on the worker's own images
        return Speed(speeds[engine if engine == "plain" else f"{engine}:{k}"], 0.0, 2)

    monkeypatch.setattr(auto_engine, "_measure", fake)
    choice = auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=4)
    assert (choice["engine"], choice["k"], choice["cached"]) == ("multi", 4, False)  # fused not tried: not fusable
    assert not any(e == "fused" for e, _ in measured) and len(measured) == 7 * auto_engine.AUTO_ROUNDS
    # the rounds alternate: every candidate once before any twice
    assert measured[:7] == measured[7:14] and len(set(measured[:7])) == 7
    assert choice["figures"]["multi:4"] == 240.0
    assert auto_engine.choose_engine(faces, probe, "cpu", fusable=True, steps=4)["engine"] == "fused"  # other key
    measured.clear()
    again = auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=4)
    assert (again["engine"], again["k"], again["cached"]) == ("multi", 4, True) and not measured
    assert len(json.loads((tmp_path / "engines.json").read_text())) == 2

    speeds.update({"graph:2": 100.0, "graph:4": 100.0, "graph:8": 0.0, "multi:2": 105.0, "multi:4": 109.0})
    assert auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=4, use_cache=False)["engine"] == "plain"


def test_auto_takes_the_median_round_and_charges_each_trials_join(faces, tmp_path, monkeypatch):
    from model import auto_engine
    from model.engine_speed import Speed, effective

    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    probe = TrainConfig(width=0.0625, batch_size=16, epochs=2)
    lucky = itertools.cycle([100.0, 900.0, 100.0])  # one lucky round of graph:1 does not win
    join = {"graph": 60.0}  # seconds each trial costs to join (a capture that slow): not worth it

    def fake(engine, k, data, cfg, device):
        if (engine, k) == ("graph", 1):
            return Speed(next(lucky), 0.0, 2)
        if engine == "graph":
            return Speed(400.0, join["graph"], 2)
        return Speed(100.0, 0.0, 2)

    monkeypatch.setattr(auto_engine, "_measure", fake)
    choice = auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=4, use_cache=False)
    assert choice["engine"] == "plain" and choice["figures"]["graph:1"] == 100.0
    trial_images = 2 * len(faces.x_train)
    assert choice["figures"]["graph:4"] == round(effective(Speed(400.0, 60.0, 2), 4, trial_images), 1) < 110
    join["graph"] = 0.0
    assert auto_engine.choose_engine(faces, probe, "cpu", fusable=False, steps=4, use_cache=False)["engine"] == "graph"


def test_auto_measures_for_real_at_a_tiny_width(faces, tmp_path, monkeypatch):
    from model import auto_engine

    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    monkeypatch.setattr(auto_engine, "AUTO_ROUNDS", 1)
    monkeypatch.setattr(auto_engine, "AUTO_WINDOW_S", 0.0)  # two epochs a candidate: the figures are not the point
    choice = auto_engine.choose_engine(faces, TrainConfig(width=0.0625, batch_size=16), "cpu", fusable=True, steps=2)
    assert set(choice["figures"]) == {"plain", "graph:1", "graph:2", "graph:4", "graph:8", "multi:2", "multi:4",
                                      "fused:4", "fused:16"}
    assert all(v > 0 for v in choice["figures"].values())
    fastest = max(choice["figures"], key=choice["figures"].get)
    assert choice["engine"] == "plain" or f"{choice['engine']}:{choice['k']}" == fastest


def test_an_auto_worker_trains_with_the_engine_it_chose_and_says_which(tmp_path):
    """The worker process itself: it looks the choice up (here cached), says it in `ready`, then
    trains its jobs with that engine."""
    import json
    import multiprocessing as mp
    import os

    from model import auto_engine
    from model.device import device_name, resolve_device
    from sweep.worker import worker_main

    probe = TrainConfig(width=0.0625, batch_size=16, epochs=1)
    key = auto_engine.cache_key(device_name(resolve_device("cpu")), torch.__version__, probe, False)
    (tmp_path / "engines.json").write_text(json.dumps({key: {"engine": "multi", "k": 3, "figures": {"plain": 1.0}}}))
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path)}
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=worker_main, daemon=True, args=(
        child, {"source": "synthetic", "n_images": 240, "seed": 5}, 1, env, "off", "auto",
        {"device": "cpu", "probe": probe.to_dict(), "fusable": False}))
    proc.start()
    try:
        assert parent.poll(120)
        ready = parent.recv()
        assert ready[0] == "ready" and ready[3:5] == ("multi", 3) and ready[5]["cached"] is True
        for n in (1, 2):
            parent.send(("train", n, TrainConfig(width=0.0625, batch_size=16 * n, epochs=1, seed=n).to_dict(), "cpu"))
        done = {}
        while len(done) < 2:
            assert parent.poll(120)
            msg = parent.recv()
            if msg[0] == "epoch":
                parent.send("go")
            elif msg[0] == "done":
                done[msg[1]] = msg[2]
                parent.send(("nosave", msg[1]))
            else:
                raise AssertionError(msg)
        assert {r["engine"] for r in done.values()} == {"multi"}
    finally:
        parent.send(("stop",))
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def test_the_coordinator_takes_an_auto_workers_word_and_says_it_once(capsys):
    from types import SimpleNamespace

    from sweep.coordinator import Coordinator

    c = Coordinator.__new__(Coordinator)
    c.auto_said = False  # as __init__ sets it
    fresh, shrunk = SimpleNamespace(engine="auto", capacity=256), SimpleNamespace(engine="auto", capacity=2)
    c._auto_chosen(fresh, "multi", 4, {"figures": {"plain": 27600.0, "multi:4": 61000.0}, "cached": False})
    c._auto_chosen(shrunk, "multi", 4, {"figures": {}, "cached": True})  # an out-of-memory halved it before
    assert (fresh.engine, fresh.capacity, shrunk.capacity) == ("multi", 4, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--engine auto: multi:4 (measured, images/s: plain 27,600, multi:4 61,000)" in err
