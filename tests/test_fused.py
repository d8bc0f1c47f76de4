"""Fused trials: a member of a fused group trains as the same trial alone would.

Exactness is checked with the random layers made deterministic (dropout off, RReLU at a fixed
slope) and on noise images: drawn faces have flat regions whose max-pool ties break differently
under a grouped convolution's rounding, which is float noise, not a different experiment.

Two tensors are left out of the weight comparison: the convolutions' biases and BatchNorm's
running means. A convolution's bias feeds a BatchNorm that subtracts it again, so its gradient
is zero in exact arithmetic and pure rounding noise in floats; SGD leaves such noise at 1e-9,
but Adam and RMSprop divide it by its own size and move the bias by about lr either way. It
changes no output (BatchNorm removes it), and the running means carry it.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from data import load_dataset
from model import FERNet, TrainConfig, train
from model.fused_net import FusedFERNet
from model.fused_train import FusedTrainer, train_fused
from tests.conftest import make_rows, write_csv

BASE = dict(batch_size=32, width=0.0625, precision="fp32")


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    images, labels, usage = make_rows((96, 20, 20), seed=0)
    return load_dataset(write_csv(tmp_path_factory.mktemp("noise") / "noise.csv", images, labels, usage))


@pytest.fixture
def deterministic_layers(monkeypatch):
    rrelu, dropout = torch.nn.RReLU.__init__, torch.nn.Dropout.__init__
    monkeypatch.setattr(torch.nn.RReLU, "__init__", lambda self, lower=0, upper=0, inplace=False:
                        rrelu(self, 0.2, 0.2, inplace))
    monkeypatch.setattr(torch.nn.Dropout, "__init__", lambda self, p=0.5, inplace=False: dropout(self, 0.0, inplace))


def compared(state: dict) -> dict:
    return {n: t for n, t in state.items() if t.dtype.is_floating_point and not (
        (n.startswith("features.") and n.endswith(".bias") and n.split(".")[1] in ("0", "4", "8"))
        or n.endswith("running_mean"))}


WEIGHT_SCALE = 1e-2  # RMS below which a tensor's differences count as absolute (conv weights start at std 0.04)


def weight_difference(x, y) -> float:
    """The largest difference between two trained models' compared tensors, relative to each
    tensor's size, or to WEIGHT_SCALE where it is smaller (BatchNorm biases start at zero)."""
    a, b = compared(x.model.state_dict()), compared(y.model.state_dict())
    assert a.keys() == b.keys()
    return max(((a[n] - b[n]).norm() / max(b[n].norm().item(), WEIGHT_SCALE * b[n].numel() ** 0.5)).item()
               for n in a)


# Float tolerance of the weights after a few steps. Adam and RMSprop divide each gradient by its
# own running size, so where a gradient is a sum that nearly cancels (a BatchNorm bias over a whole
# batch), its relative rounding becomes that share of a whole step: measured up to 7e-4 for the
# adaptive optimizers in fp32 (channels_last rounds otherwise than NCHW), 1e-2 under bf16 autocast
# (a grouped convolution rounds its bf16 products otherwise than k plain ones), against under
# 2e-5 with SGD in either.
WEIGHT_TOL = {"fp32": {"sgd": 2e-5, "adam": 1.5e-3, "adamw": 1.5e-3, "rmsprop": 1.5e-3},
              "bf16": {"sgd": 2e-5, "adam": 2e-2, "adamw": 2e-2, "rmsprop": 2e-2}}
LOSS_RTOL = {"fp32": 1e-4, "bf16": 5e-4}  # measured: under 2e-7 in fp32, 6e-5 in bf16
# Memory layout and precision as CUDA trains (channels_last, bf16 autocast) and as CPUs do: a
# fused path that only CUDA's layout takes once failed on its first GPU step.
ENGINES = [pytest.param(False, "fp32", id="nchw-fp32"), pytest.param(True, "fp32", id="channels_last-fp32"),
           pytest.param(True, "bf16", id="channels_last-bf16")]


def assert_same_trial(fused, data, cfg, channels_last=False):
    """`fused` equals `cfg` trained alone in the same memory layout and precision: the same
    losses and accuracies epoch by epoch, and the same weights, to float tolerance."""
    alone = train(data, cfg, device="cpu", keep_model=True, channels_last=channels_last)
    assert fused.epochs_run == alone.epochs_run and fused.stop_reason == alone.stop_reason
    assert fused.precision == alone.precision == cfg.precision
    for a, b in zip(fused.history, alone.history):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=LOSS_RTOL[cfg.precision]), (a, b)
        assert a["val_acc"] == b["val_acc"] and a["train_acc"] == b["train_acc"]
    diff = weight_difference(fused, alone)
    assert diff < WEIGHT_TOL[cfg.precision][cfg.optimizer], f"weights differ by {diff:.1e}"
    assert fused.test_acc == alone.test_acc


def members(optimizer: str, epochs: int = 1, precision: str = "fp32") -> list[TrainConfig]:
    """Three trials that differ in everything a group does not share: 3 steps an epoch, 1-2 epochs.

    Longer runs stop being comparable, for the plain trainer too: trained alone with another
    memory layout (the same arithmetic, rounded otherwise), these trials already differ by 2-7%
    in their weights after 3 steps, once augmentation's zero borders make max-pool ties."""
    lr = {"sgd": 0.02, "rmsprop": 0.0005}.get(optimizer, 0.002)
    base = {**BASE, "precision": precision}
    return [
        TrainConfig(epochs=epochs, optimizer=optimizer, lr=lr, momentum=0.9, nesterov=optimizer == "sgd",
                    weight_decay=0.01, seed=1, **base),
        TrainConfig(epochs=epochs, optimizer=optimizer, lr=lr / 3, momentum=0.0, weight_decay=0.0, seed=2,
                    label_smoothing=0.1, augment=True, lr_schedule="cosine", **base),
        TrainConfig(epochs=epochs + 1, optimizer=optimizer, lr=lr / 10, momentum=0.5, weight_decay=0.005, seed=3,
                    augment=True, lr_schedule="plateau", **base),
    ]


@pytest.mark.parametrize("channels_last, precision", ENGINES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_each_member_equals_its_trial_trained_alone(noise, deterministic_layers, optimizer, channels_last, precision):
    configs = members(optimizer, precision=precision)
    fused = train_fused(noise, configs, device="cpu", keep_model=True, channels_last=channels_last)
    for cfg, f in zip(configs, fused):
        assert_same_trial(f, noise, cfg, channels_last)
    assert [r.epochs_run for r in fused] == [1, 1, 2]  # the longer member went on alone
    assert [h["concurrent"] for h in fused[2].history] == [3, 1]


@pytest.mark.parametrize("channels_last, precision", ENGINES)
def test_joining_and_leaving_do_not_change_a_members_trajectory(noise, deterministic_layers, channels_last,
                                                                  precision):
    a, b, c = members("sgd", precision=precision)
    a = TrainConfig(**{**a.to_dict(), "epochs": 2})
    b = TrainConfig(**{**b.to_dict(), "epochs": 2})
    trainer = FusedTrainer(noise, batch_size=32, width=0.0625, optimizer="sgd", precision=precision, device="cpu",
                           channels_last=channels_last)
    trainer.add("a", a)
    trainer.run_epoch()  # a alone
    trainer.add("b", b)
    trainer.add("c", c)
    trainer.run_epoch()  # a, b and c
    result = trainer.finish("a", "completed", keep_model=True)  # a's schedule ends
    trainer.finish("c", "stopped")  # c is pruned: it leaves too
    records = trainer.run_epoch()  # b goes on alone
    assert set(records) == {"b"} and records["b"]["concurrent"] == 1
    assert [h["concurrent"] for h in result.history] == [1, 3]
    assert_same_trial(result, noise, a, channels_last)
    late = trainer.finish("b", "completed", keep_model=True)  # joined at a's second epoch
    assert [h["concurrent"] for h in late.history] == [3, 1]
    assert_same_trial(late, noise, b, channels_last)
    assert len(trainer) == 0


def test_with_random_layers_on_a_fused_trial_is_the_same_experiment():
    """Dropout and RReLU draw from the group's stream: not bit-identical, but the mean accuracy
    over seeds agrees with training alone within the seeds' own spread."""
    data = load_dataset("synthetic", n_images=600, seed=4)
    configs = [TrainConfig(epochs=4, batch_size=32, lr=2e-3, optimizer="adam", width=0.125, precision="fp32", seed=s)
               for s in range(3)]
    fused = [r.val_acc for r in train_fused(data, configs, device="cpu")]
    alone = [train(data, c, device="cpu").val_acc for c in configs]
    spread = max(statistics.stdev(fused), statistics.stdev(alone), 0.02)
    assert abs(statistics.mean(fused) - statistics.mean(alone)) < 3 * spread, (fused, alone)
    assert min(fused) > 1.5 / 7  # every member learned: well above chance


def test_fused_network_mirrors_the_plain_one():
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(FERNet(0.125).eval())
    fused = FusedFERNet.from_members(nets).eval()
    assert list(fused.state_dict()) == list(nets[0].state_dict())  # the same names, layer for layer
    x = torch.rand(3, 5, 1, 48, 48)
    out = fused(x.squeeze(2).transpose(0, 1))
    assert out.shape == (3, 5, 7)
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net(x[i]), rtol=1e-5, atol=1e-6)
        back = fused.member(i).state_dict()
        assert all(torch.equal(back[n], t) for n, t in net.state_dict().items())


def test_fused_network_gradients_and_no_nan():
    torch.manual_seed(0)
    fused = FusedFERNet(4, 0.0625)
    for m in fused.features:
        if isinstance(m, torch.nn.Module) and hasattr(m, "weight") and m.weight.dim() == 4:
            torch.nn.init.normal_(m.weight, 0, 0.04)
    for m in fused.classifier:
        if hasattr(m, "weight"):
            torch.nn.init.normal_(m.weight, 0, 0.05)
    out = fused(torch.rand(6, 4, 48, 48))
    assert out.shape == (4, 6, 7) and torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in fused.parameters())


def test_a_diverging_member_leaves_and_the_others_go_on(noise):
    good = TrainConfig(epochs=2, optimizer="sgd", lr=0.01, seed=1, **BASE)
    bad = TrainConfig(epochs=2, optimizer="sgd", lr=1e9, seed=2, **BASE)
    fused = train_fused(noise, [good, bad], device="cpu")
    assert fused[1].stop_reason == "diverged" and fused[1].epochs_run == 1
    assert fused[0].stop_reason == "completed" and fused[0].epochs_run == 2
    assert all(math.isfinite(h["train_loss"]) for h in fused[0].history)


def test_only_matching_trials_share_a_group(noise):
    trainer = FusedTrainer(noise, batch_size=32, width=0.0625, optimizer="sgd", precision="fp32", device="cpu")
    with pytest.raises(ValueError, match="cannot join this group"):
        trainer.add(1, TrainConfig(epochs=1, optimizer="sgd", batch_size=64, width=0.0625, precision="fp32"))
    with pytest.raises(ValueError, match="cannot join this group"):
        trainer.add(2, TrainConfig(epochs=1, optimizer="adam", batch_size=32, width=0.0625, precision="fp32"))
