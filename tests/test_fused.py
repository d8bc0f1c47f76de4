"""Fused trials: a member of a fused group trains as the same trial alone would.

What is compared where (no tolerance below is a number seen on one machine: two computations that
round differently drift apart chaotically, at a pace set by which kernels a host's libraries pick):
- the algebra, in float64, where a fused member and its trial alone agree to ~1e-14 on any host:
  every optimizer, NCHW and channels_last, members joining and leaving;
- the layouts and precisions CUDA trains in (channels_last, bf16 autocast), for what holds
  everywhere: every path runs, the first update lands as close to the exact (float64) one as the
  trial alone's does in the same precision, and training stays finite and learns.

Exactness is checked with the random layers made deterministic (dropout off, RReLU at a fixed
slope) and on noise images: drawn faces have flat regions whose max-pool ties break differently
under a grouped convolution's rounding.

Two tensors are left out of the weight comparison: the convolutions' biases and BatchNorm's
running means. A convolution's bias feeds a BatchNorm that subtracts it again, so its gradient
is zero in exact arithmetic and pure rounding noise in floats, which Adam and RMSprop divide by
its own size into a step of about lr either way. It changes no output (BatchNorm removes it), and
the running means carry it.
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
F64 = torch.float64


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    images, labels, usage = make_rows((96, 20, 20), seed=0)
    return load_dataset(write_csv(tmp_path_factory.mktemp("noise") / "noise.csv", images, labels, usage))


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """32 training images: one step of batch 32 per epoch, so an epoch's weights are the first update's."""
    images, labels, usage = make_rows((32, 8, 8), seed=1)
    return load_dataset(write_csv(tmp_path_factory.mktemp("one") / "one.csv", images, labels, usage))


@pytest.fixture
def deterministic_layers(monkeypatch):
    rrelu, dropout = torch.nn.RReLU.__init__, torch.nn.Dropout.__init__
    monkeypatch.setattr(torch.nn.RReLU, "__init__", lambda self, lower=0, upper=0, inplace=False:
                        rrelu(self, 0.2, 0.2, inplace))
    monkeypatch.setattr(torch.nn.Dropout, "__init__", lambda self, p=0.5, inplace=False: dropout(self, 0.0, inplace))


def compared(state: dict) -> dict:
    return {n: t.double() for n, t in state.items() if t.dtype.is_floating_point and not (
        (n.startswith("features.") and n.endswith(".bias") and n.split(".")[1] in ("0", "4", "8"))
        or n.endswith("running_mean"))}


def weight_difference(x, y) -> float:
    """The largest difference between two trained models' compared tensors, relative to each
    tensor's largest entry (or 1e-3, where a tensor starts at zero)."""
    a, b = compared(x.model.state_dict()), compared(y.model.state_dict())
    assert a.keys() == b.keys()
    return max(((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-3)).item() for n in a)


# In float64 a fused member and its trial alone round differently by ~1e-16 a step; over these few
# steps that stays below 1e-12 (measured: 1e-15 to 1e-13). 1e-9 leaves a thousandfold margin for
# another host's kernels, and any mistake in the algebra (a member's hyperparameter, its data, its
# state) shows as 1e-3 or more.
F64_TOL = 1e-9
# Layouts: as CPUs train (NCHW) and as CUDA trains (channels_last); a fused path that only CUDA's
# layout takes once failed on its first GPU step.
LAYOUTS = [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")]
# Precisions CUDA trains in, each with its layout: (channels_last, precision)
CUDA_LIKE = [pytest.param(True, "fp32", id="channels_last-fp32"), pytest.param(True, "bf16", id="channels_last-bf16")]


def assert_same_trial(fused, data, cfg, channels_last=False):
    """`fused` equals `cfg` trained alone in float64 and the same memory layout: the same losses and
    accuracies epoch by epoch, and the same weights, to the algebra's float64 rounding."""
    alone = train(data, cfg, device="cpu", keep_model=True, channels_last=channels_last, dtype=F64)
    assert fused.epochs_run == alone.epochs_run and fused.stop_reason == alone.stop_reason
    assert fused.precision == alone.precision == "fp64"
    for a, b in zip(fused.history, alone.history):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=F64_TOL), (a, b)
        assert a["val_acc"] == b["val_acc"] and a["train_acc"] == b["train_acc"]
    diff = weight_difference(fused, alone)
    assert diff < F64_TOL, f"weights differ by {diff:.1e}"
    assert fused.test_acc == alone.test_acc


def members(optimizer: str, epochs: int = 1, precision: str = "fp32") -> list[TrainConfig]:
    """Three trials that differ in everything a group does not share: 3 steps an epoch, 1-2 epochs."""
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


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_each_member_equals_its_trial_trained_alone(noise, deterministic_layers, optimizer, channels_last):
    configs = members(optimizer)
    fused = train_fused(noise, configs, device="cpu", keep_model=True, channels_last=channels_last, dtype=F64)
    for cfg, f in zip(configs, fused):
        assert_same_trial(f, noise, cfg, channels_last)
    assert [r.epochs_run for r in fused] == [1, 1, 2]  # the longer member went on alone
    assert [h["concurrent"] for h in fused[2].history] == [3, 1]


@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_joining_and_leaving_do_not_change_a_members_trajectory(noise, deterministic_layers, channels_last):
    a, b, c = members("adam")
    a = TrainConfig(**{**a.to_dict(), "epochs": 2})
    b = TrainConfig(**{**b.to_dict(), "epochs": 3})
    d = TrainConfig(**{**c.to_dict(), "seed": 4, "epochs": 1})
    trainer = FusedTrainer(noise, batch_size=32, width=0.0625, optimizer="adam", precision="fp32", device="cpu",
                           channels_last=channels_last, dtype=F64)
    trainer.add("a", a)
    trainer.run_epoch()  # a alone
    trainer.add("b", b)
    trainer.add("c", c)
    trainer.run_epoch()  # a, b and c
    result = trainer.finish("a", "completed", keep_model=True)  # a's schedule ends
    trainer.add("d", d)  # d takes a's slot in place: the group keeps its size
    net = trainer.net
    records = trainer.run_epoch()  # b, c and d
    assert trainer.net is net and set(records) == {"b", "c", "d"}
    trainer.finish("c", "stopped")  # c is pruned: it leaves
    last = trainer.finish("d", "completed", keep_model=True)
    records = trainer.run_epoch()  # b goes on alone: the group shrinks, rebuilt on the device
    assert set(records) == {"b"} and records["b"]["concurrent"] == 1
    assert [h["concurrent"] for h in result.history] == [1, 3]
    assert_same_trial(result, noise, a, channels_last)
    assert_same_trial(last, noise, d, channels_last)  # joined into a slot that held another trial
    late = trainer.finish("b", "completed", keep_model=True)  # joined at a's second epoch
    assert [h["concurrent"] for h in late.history] == [3, 3, 1]
    assert_same_trial(late, noise, b, channels_last)
    assert len(trainer) == 0


@pytest.mark.parametrize("channels_last, precision", CUDA_LIKE)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_first_update_is_as_exact_as_alone_in_cudas_layout_and_precision(one_step, deterministic_layers,
                                                                             optimizer, channels_last, precision):
    """The first update of each member lands as close to the exact (float64) update as its trial
    alone's does in the same layout and precision: fusing adds no error of its own beyond the
    precision's rounding (measured in this run, on this host's kernels, not a number from another)."""
    configs = [TrainConfig(**{**c.to_dict(), "epochs": 1, "lr_schedule": "constant"})
               for c in members(optimizer, precision=precision)]
    fused = train_fused(one_step, configs, device="cpu", keep_model=True, channels_last=channels_last)
    for cfg, f in zip(configs, fused):
        assert f.precision == precision and math.isfinite(f.history[0]["train_loss"])
        exact = compared(train(one_step, cfg, device="cpu", keep_model=True, dtype=F64).model.state_dict())
        alone = compared(train(one_step, cfg, device="cpu", keep_model=True,
                               channels_last=channels_last).model.state_dict())
        got = compared(f.model.state_dict())
        err = lambda w: torch.cat([(w[n] - exact[n]).ravel() for n in exact]).norm().item()  # noqa: E731
        scale = torch.cat([t.ravel() for t in exact.values()]).norm().item()
        u = 2.0 ** -8 if precision == "bf16" else 2.0 ** -24  # unit roundoff of the precision
        # 4x: the two round the same maths differently (grouped against plain kernels); a fused
        # mistake (another member's data or hyperparameter) lands orders of magnitude further off
        assert err(got) <= 4 * err(alone) + u * scale, (err(got), err(alone))


@pytest.mark.parametrize("channels_last, precision", CUDA_LIKE)
def test_a_fused_group_learns_in_cudas_layout_and_precision(channels_last, precision):
    """Every path CUDA takes runs end to end, joins and leaves included, stays finite and learns."""
    data = load_dataset("synthetic", n_images=600, seed=4)
    configs = [TrainConfig(epochs=e, batch_size=32, lr=lr, optimizer="adam", width=0.125, precision=precision,
                           augment=bool(i % 2), seed=i) for i, (e, lr) in enumerate([(4, 2e-3), (5, 2e-3), (4, 3e-3)])]
    results = train_fused(data, configs, device="cpu", channels_last=channels_last)
    for r in results:
        losses = [h["train_loss"] for h in r.history]
        assert all(math.isfinite(x) for x in losses) and r.precision == precision
        # it learned: its loss fell, below a uniform guess's ln 7 (val accuracy after a few epochs
        # of a tiny network swings by a few images: no bound that holds everywhere)
        assert losses[-1] < losses[0] and losses[-1] < math.log(7)


def test_with_random_layers_on_a_fused_trial_is_the_same_experiment():
    """Dropout and RReLU draw from the group's stream: not bit-identical, but the same experiment.
    Its final training loss (over a whole epoch: steadier than a tiny network's val accuracy, which
    swings by images from host to host) agrees with training alone within the seeds' own spread,
    and every member learned (its loss fell below a uniform guess's ln 7)."""
    data = load_dataset("synthetic", n_images=600, seed=4)
    configs = [TrainConfig(epochs=4, batch_size=32, lr=2e-3, optimizer="adam", width=0.125, precision="fp32", seed=s)
               for s in range(3)]
    fused = [r.history[-1]["train_loss"] for r in train_fused(data, configs, device="cpu")]
    alone = [train(data, c, device="cpu").history[-1]["train_loss"] for c in configs]
    spread = max(statistics.stdev(fused), statistics.stdev(alone), 0.02)
    assert abs(statistics.mean(fused) - statistics.mean(alone)) < 3 * spread, (fused, alone)
    assert max(fused) < math.log(7) and max(alone) < math.log(7)


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
