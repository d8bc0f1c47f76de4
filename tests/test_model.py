import pytest
import torch

from data import load_dataset
from model import FERNet, TrainConfig, count_params, forward_flops, train


def test_paper_network_has_the_papers_parameter_count_and_flops():
    assert count_params(FERNet(1.0)) == 42_582_919
    assert abs(forward_flops(1.0) / 1e6 - 257) < 1


def test_paper_network_layout():
    net = FERNet(1.0)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    linears = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(9216, 4096), (4096, 1024), (1024, 256), (256, 7)]
    assert sum(isinstance(m, torch.nn.RReLU) for m in net.modules()) == 6
    assert [m.p for m in net.classifier if isinstance(m, torch.nn.Dropout)] == [0.2, 0.5]
    # conv weights ~ N(0, 0.04): the sample std of 295k weights is within 2% of 0.04
    assert abs(convs[2].weight.std().item() - 0.04) < 0.0008


@pytest.mark.parametrize("width", [0.0625, 0.25])
def test_forward_shapes_gradients_and_no_nan(width):
    torch.manual_seed(0)
    net = FERNet(width)
    x = torch.rand(5, 1, 48, 48)
    out = net(x)
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_width_scales_the_network():
    assert count_params(FERNet(0.5)) < count_params(FERNet(1.0)) / 3
    with pytest.raises(ValueError):
        FERNet(0)


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset("synthetic", n_images=300, seed=1)


def test_training_learns_and_records_history(tiny_data):
    r = train(tiny_data, epochs=4, batch_size=32, lr=2e-3, optimizer="adam", width=0.125, seed=0, precision="fp32")
    assert r.epochs_run == 4 and r.stop_reason == "completed"
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    for h in r.history:
        assert set(h) == {"epoch", "train_loss", "train_acc", "val_acc", "epoch_s", "images_per_s"}
        assert h["images_per_s"] > 0
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.test_acc is not None and 0 <= r.test_acc <= 1
    assert sum(map(sum, r.val_confusion)) == len(tiny_data.y_val)
    assert r.n_params == count_params(FERNet(0.125))


def test_training_is_reproducible_on_cpu(tiny_data):
    kw = dict(epochs=2, batch_size=32, lr=0.01, optimizer="sgd", momentum=0.9, width=0.0625, seed=5, augment=True)
    a, b = train(tiny_data, **kw), train(tiny_data, **kw)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.val_acc == b.val_acc
    c = train(tiny_data, **{**kw, "seed": 6})
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_on_epoch_can_stop_training(tiny_data):
    seen = []
    r = train(tiny_data, epochs=5, batch_size=64, width=0.0625, on_epoch=lambda rec: seen.append(rec) or rec["epoch"] == 2)
    assert r.epochs_run == 2 and r.stop_reason == "stopped" and len(seen) == 2


def test_divergence_is_detected_not_raised(tiny_data):
    r = train(tiny_data, epochs=3, batch_size=32, lr=1e8, optimizer="sgd", width=0.0625, precision="fp32")
    assert r.stop_reason == "diverged"
    assert r.epochs_run < 3 or r.history[-1]["train_loss"] != r.history[-1]["train_loss"]


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(tiny_data, opt):
    r = train(tiny_data, epochs=1, batch_size=64, lr=1e-3, optimizer=opt, width=0.0625)
    assert r.stop_reason == "completed"


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_lr_schedules_and_label_smoothing_train(tiny_data, schedule):
    r = train(tiny_data, epochs=3, batch_size=64, lr=0.01, optimizer="sgd", momentum=0.9, nesterov=True,
              width=0.0625, lr_schedule=schedule, label_smoothing=0.1, augment=True)
    assert r.stop_reason == "completed" and r.epochs_run == 3
    assert all(h["train_loss"] == h["train_loss"] for h in r.history)  # no NaN


def test_config_rejects_nonsense():
    for bad in [dict(lr=0), dict(optimizer="lbfgs"), dict(epochs=0), dict(nesterov=True, momentum=0.0),
                dict(label_smoothing=1.0), dict(lr_schedule="step")]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)
