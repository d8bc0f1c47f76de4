"""Several trials of any hyperparameters trained side by side in one process (model.MultiTrainer):
each equals its trial trained alone, bit for bit, random layers included, in every memory layout
and precision a device trains in, however members join and leave."""

from __future__ import annotations

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
