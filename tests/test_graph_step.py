"""The graph-safe training step: the same trial as before it was made graph-safe, and safe to
capture, checked on a CPU over every optimizer, lr schedule, augmentation, label smoothing,
precision and memory layout.

What is compared where (no tolerance below is a number seen on one machine):
- the algebra, in float64: whole runs of the new step and the old one (tests/legacy_trial.py)
  agree to 1e-10, where each step rounds differently by ~1e-16;
- the precisions CUDA trains in (fp32, bf16 autocast, channels_last): the first step's loss is
  the same bits (the same operators on the same numbers), and every weight after the first update
  is within the rounding of the update's few operations (`ROUNDINGS`);
- capture safety: `CaptureCheck` passes on every combination, and catches each fault it claims to.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from data import load_dataset
from model import TrainConfig
from model.capture_check import CaptureCheck, CaptureUnsafe
from model.trial_run import DeviceData, TrialRun
from tests.conftest import make_rows, write_csv
from tests.legacy_trial import LegacyTrialRun, make_optimizer

CPU = torch.device("cpu")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "plateau")
# (precision, channels_last): how CPUs train, and how CUDA trains (channels_last, bf16 autocast)
ENGINES = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
# Rounded operations an update passes through, at most, in either implementation (Adam: sqrt,
# division by the bias correction, + eps, division, x step size, subtraction).
ROUNDINGS = 6


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    images, labels, usage = make_rows((48, 8, 8), seed=0)
    return load_dataset(write_csv(tmp_path_factory.mktemp("noise") / "noise.csv", images, labels, usage))


def config(optimizer: str, schedule: str = "constant", extras: bool = True, precision: str = "fp32",
           epochs: int = 2) -> TrainConfig:
    lr = {"sgd": 0.02, "rmsprop": 0.0005}.get(optimizer, 0.002)
    return TrainConfig(epochs=epochs, batch_size=16, width=0.0625, optimizer=optimizer, lr=lr, momentum=0.9,
                       nesterov=optimizer == "sgd", weight_decay=0.01, augment=extras, label_smoothing=0.1 * extras,
                       lr_schedule=schedule, precision=precision, seed=3)


def trained(cls, data, cfg: TrainConfig, channels_last: bool, dtype=torch.float32):
    run = cls(DeviceData.of(data, CPU), cfg, CPU, channels_last=channels_last, dtype=dtype)
    for _ in range(cfg.epochs):
        run.begin_epoch()
        for i in range(run.n_steps):
            run.step(i) if cls is LegacyTrialRun else run.step()
        run.end_epoch()
    return run


def compared(state: dict) -> dict:
    """Every float tensor but the convolutions' biases and BatchNorm's running means: a bias
    before a BatchNorm has a gradient of zero in exact arithmetic, so what it gets is rounding
    noise, which Adam divides by its own size (about eps) into a step of lr x noise / eps; the
    running means carry it. It changes no output (BatchNorm subtracts it)."""
    return {n: t for n, t in state.items() if t.dtype.is_floating_point and not (
        (n.startswith("features.") and n.endswith(".bias") and n.split(".")[1] in ("0", "4", "8"))
        or n.endswith("running_mean"))}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("extras", [False, True], ids=["plain-data", "augment+smoothing"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_step_is_the_old_step_in_float64(noise, optimizer, schedule, extras, channels_last):
    cfg = config(optimizer, schedule, extras)
    old = trained(LegacyTrialRun, noise, cfg, channels_last, torch.float64)
    new = trained(TrialRun, noise, cfg, channels_last, torch.float64)
    for a, b in zip(old.history, new.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        # accuracies count argmaxes: a flip needs two logits within ~1e-14 of each other
        assert (a["train_acc"], a["val_acc"]) == (b["train_acc"], b["val_acc"])
    want, got = compared(old.model.state_dict()), compared(new.model.state_dict())
    for name in want:
        scale = want[name].abs().max().clamp_min(1e-3)
        assert ((want[name] - got[name]).abs().max() / scale).item() < 1e-10, name


@pytest.mark.parametrize("precision, channels_last", ENGINES, ids=[f"{p}-{'cl' if c else 'nchw'}" for p, c in ENGINES])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_first_step_in_every_precision(noise, optimizer, precision, channels_last):
    """The same loss to the bit, and every weight within the rounding of the update."""
    cfg = config(optimizer, precision=precision, epochs=1)
    old = LegacyTrialRun(DeviceData.of(noise, CPU), cfg, CPU, channels_last=channels_last)
    before = {n: t.clone() for n, t in old.model.state_dict().items()}
    old.begin_epoch()
    old.step(0)
    new = TrialRun(DeviceData.of(noise, CPU), cfg, CPU, channels_last=channels_last)  # reseeds the global stream
    assert all(torch.equal(before[n], t) for n, t in new.model.state_dict().items())
    new.begin_epoch()
    new.step()
    assert new.bf16 == (precision == "bf16") and new.loss_sum.item() == old.loss_sum.item()
    u = torch.finfo(torch.float32).eps / 2
    for name, w in old.model.state_dict().items():
        if w.dtype.is_floating_point:
            bound = 2 * ROUNDINGS * u * (before[name].abs() + (w - before[name]).abs())
            assert ((new.model.state_dict()[name] - w).abs() <= bound).all(), name


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_lr_schedule_writes_what_pytorchs_schedulers_compute(noise, schedule):
    cfg = config("sgd", schedule, epochs=12)
    run = TrialRun(DeviceData.of(noise, CPU), cfg, CPU)
    reference = make_optimizer(cfg, [torch.zeros(1, requires_grad=True)])
    from model.trial_run import make_lr_schedule

    scheduler = make_lr_schedule(cfg, reference)
    flat = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]  # plateau halves twice
    lrs = []
    for val_acc in flat:
        run.lr_schedule.step(val_acc)
        if scheduler is not None:
            reference.step()
            scheduler.step(val_acc) if schedule == "plateau" else scheduler.step()
        want = reference.param_groups[0]["lr"]
        assert run.optimizer.lr.item() == torch.tensor(want, dtype=torch.float32).item()
        assert run.optimizer.lr64.item() == want
        lrs.append(want)
    assert len(set(lrs)) == {"constant": 1, "cosine": 12, "plateau": 3}[schedule]


def test_capture_check_passes_on_every_combination(noise):
    data = DeviceData.of(noise, CPU)
    combos = list(itertools.product(OPTIMIZERS, SCHEDULES, (False, True), (0.0, 0.1), ENGINES))
    for optimizer, schedule, augment, smoothing, (precision, channels_last) in combos:
        cfg = TrainConfig(**{**config(optimizer, schedule, precision=precision).to_dict(), "augment": augment,
                             "label_smoothing": smoothing})
        run = TrialRun(data, cfg, CPU, channels_last=channels_last)
        check = CaptureCheck(CPU, [run.gen])
        run.begin_epoch()
        for _ in range(run.n_steps):  # 3: the second and third are compared with the one before
            with check.step():
                run.step()
        assert len(check.traces) == 3 and len(check.traces[0]) > 100  # forward, backward and update seen
    assert len(combos) == 192


FAULTS = {
    "host sync": [lambda r: float(r.loss_sum), lambda r: bool(r.correct > 0), lambda r: r.perm.nonzero(),
                  lambda r: r.perm.tolist(), lambda r: r.perm[r.perm > 3], lambda r: r.correct.item(),
                  lambda r: torch.bincount(r.perm[:4], minlength=8)],
    "host data": [lambda r: r.loss_sum.add_(torch.tensor([1.0]).sum()), lambda r: r.loss_sum.to("cpu"),
                  lambda r: r.loss_sum.cpu()],
    "foreign generator": [lambda r: torch.rand(4, generator=torch.Generator().manual_seed(0), device=r.dev)],
    "another device": [lambda r: r.loss_sum.add_(torch.zeros(()))],  # made without device=
    "cast cache": [lambda r: _cached_autocast(r)],
}


def _cached_autocast(run: TrialRun) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run.model(torch.zeros(2, 1, 48, 48, device=run.dev))


@pytest.mark.parametrize("kind, i", [(k, i) for k, fs in FAULTS.items() for i in range(len(fs))])
def test_capture_check_catches_each_fault(noise, kind, i):
    run = TrialRun(DeviceData.of(noise, CPU), config("sgd"), CPU)
    check = CaptureCheck(CPU, [run.gen])
    run.begin_epoch()
    with pytest.raises(CaptureUnsafe) as caught:
        with check.step():
            run.step()
            FAULTS[kind][i](run)
    assert caught.value.kind == kind, caught.value


def test_capture_check_catches_what_changes_between_steps(noise):
    data = DeviceData.of(noise, CPU)
    # the old step slices its batch by a Python step number: a graph would replay batch 0 forever
    old = LegacyTrialRun(data, config("sgd"), CPU)
    check = CaptureCheck(CPU, [old.gen])
    old.begin_epoch()
    with check.step():
        old.step(0)
    with pytest.raises(CaptureUnsafe, match="changed between steps.*slice"):
        with check.step():
            old.step(1)
    # a tensor made afresh outside each step: a graph would keep reading the first one's memory
    run = TrialRun(data, config("sgd"), CPU)
    check = CaptureCheck(CPU, [run.gen])
    run.begin_epoch()
    keep = []
    with pytest.raises(CaptureUnsafe, match="changed between steps.*outside"):
        for step in range(3):
            keep.append(torch.full((), float(step), device=CPU))
            with check.step():
                run.step()
                run.loss_sum.add_(keep[-1])
    # and the old step under bf16 autocast keeps its cast cache on
    old = LegacyTrialRun(data, config("sgd", precision="bf16"), CPU)
    old.begin_epoch()
    with pytest.raises(CaptureUnsafe) as caught:
        with CaptureCheck(CPU, [old.gen]).step():
            old.step(0)
    assert caught.value.kind == "cast cache"
