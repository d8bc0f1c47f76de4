"""The fast path: same accuracy as a plain fp32 reference, and a bench that runs (no timing asserted)."""

import json
import math
import statistics

import pytest
import torch
from typer.testing import CliRunner

from data import load_dataset
from model import FERNet, cpu_has_fast_bf16, train
from model.reference import PixelStringDataset, to_pixel_strings
from sweep.cli import app


@pytest.fixture(scope="module")
def small():
    return load_dataset("synthetic", n_images=1000, seed=2)


# Seed-to-seed spread of this short run's val accuracy, measured at 6 seeds on 2,000 images:
# std 0.06 (fp32 mean 0.646, bf16 mean 0.669). With 3 seeds a side the standard error of the
# difference of means is ~0.05, so 0.12 is ~2.5 standard errors.
SEED_TOLERANCE = 0.12


def test_fast_path_matches_plain_fp32_accuracy(small):
    """bf16 + channels_last against plain fp32 on the same seeds: the mean accuracies agree within
    the seeds' own noise, and both learn."""
    kw = dict(epochs=5, batch_size=32, lr=1e-3, optimizer="adam", width=0.125)
    seeds = range(3)

    def late_acc(r):  # mean val accuracy of the last two epochs: less jumpy than the last alone
        return statistics.mean(h["val_acc"] for h in r.history[-2:])

    plain = [late_acc(train(small, precision="fp32", channels_last=False, seed=s, **kw)) for s in seeds]
    fast_runs = [train(small, precision="bf16", channels_last=True, seed=s, **kw) for s in seeds]
    fast = [late_acc(r) for r in fast_runs]
    assert all(r.precision == "bf16" for r in fast_runs)
    assert abs(statistics.mean(fast) - statistics.mean(plain)) <= SEED_TOLERANCE, (plain, fast)
    assert statistics.mean(plain) > 0.4 and statistics.mean(fast) > 0.4  # majority class is ~0.25


def test_bf16_gradients_point_the_same_way_as_fp32():
    """One step from the same weights on the same batch: the bf16 autocast gradient of every layer
    is nearly parallel to the fp32 one, so the fast path optimises the same objective."""
    torch.manual_seed(0)
    net = FERNet(0.25).eval()  # eval: dropout and RReLU fixed, so both passes see the same network
    x, y = torch.rand(64, 1, 48, 48), torch.randint(0, 7, (64,))

    def grads(bf16: bool):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        return [p.grad.flatten().clone() for p in net.parameters()]

    for g32, g16 in zip(grads(False), grads(True)):
        assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.98


def test_auto_precision_follows_the_cpu(small):
    r = train(small, epochs=1, batch_size=64, width=0.0625)
    assert r.precision == ("bf16" if cpu_has_fast_bf16() else "fp32")


def test_reference_dataset_decodes_and_equalises_like_the_trainer(small):
    from data import equalize

    raw = (torch.arange(2304).reshape(48, 48) % 200).numpy().astype("uint8")[None]
    ds = PixelStringDataset(to_pixel_strings(raw), [3])
    x, y = ds[0]
    assert y == 3 and x.shape == (1, 48, 48)
    assert torch.equal(x, torch.from_numpy(equalize(raw)).float().div(255))


def test_bench_runs_and_reports_a_ratio():
    r = CliRunner().invoke(app, ["bench", "--steps", "2", "--batch-size", "16", "--width", "0.0625",
                                 "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ratio"] == pytest.approx(out["trainer_median"] / out["reference_median"])
    assert out["trainer_epoch_s"] > 0 and out["steps"] == 2


def test_bench_rejects_cuda_graphs_without_cuda():
    r = CliRunner().invoke(app, ["bench", "--compile", "cudagraphs", "--device", "cpu"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "needs a CUDA device" in r.output


def test_bench_packs_k_trials_on_one_device():
    r = CliRunner().invoke(app, ["bench", "--pack", "1,2", "--steps", "2", "--batch-size", "16", "--width", "0.0625",
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [row["k"] for row in out["rows"]] == [1, 2]
    two = out["rows"][1]
    assert len(two["per_trial_images_per_s"]) == 2 and all(x > 0 for x in two["per_trial_images_per_s"])
    # the aggregate covers the union of the two windows, so it can't beat the sum of the parts
    assert 0 < two["aggregate_images_per_s"] <= sum(two["per_trial_images_per_s"]) * 1.0001
    assert out["rows"][0]["speedup"] == 1.0
    bad = CliRunner().invoke(app, ["bench", "--pack", "0,2"])
    assert bad.exit_code == 2 and "at least 1" in bad.output


@pytest.mark.parametrize("engine, option", [("fused", "--fuse"), ("multi", "--multi"), ("graph", "--graph")])
def test_bench_compares_k_trials_in_one_process_with_one_plain_trial(engine, option):
    r = CliRunner().invoke(app, ["bench", option, "1,3", "--steps", "2", "--batch-size", "16", "--width", "0.0625",
                                 "--repeats", "1", "--window", "0", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["engine"] == engine and [row["k"] for row in out["rows"]] == [0, 1, 3]  # 0: the plain baseline
    assert out["rows"][0]["speedup"] == 1.0
    for row in out["rows"]:
        assert row["aggregate_images_per_s"] > 0 and len(row["repeats"]) == 1
        assert row["speedup"] == pytest.approx(row["aggregate_images_per_s"] / out["rows"][0]["aggregate_images_per_s"])
        assert row["join_s"] >= 0
    both = CliRunner().invoke(app, ["bench", "--fuse", "2", "--graph", "2"])
    assert both.exit_code == 2 and "give one" in both.output


def test_compiled_model_is_built_once_per_process_and_reused_across_trials(small):
    """`compile on`: the first trial in a worker pays for the compilation; a later trial of the same
    shapes (a new model, other hyperparameters and seed) reuses the graph instead of compiling again."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    kw = dict(epochs=2, batch_size=32, width=0.0625)
    first = train(small, lr=1e-3, optimizer="adam", seed=0, compile="on", **kw)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    second = train(small, lr=0.05, optimizer="sgd", seed=1, compile="on", **kw)
    assert counters["stats"]["unique_graphs"] == graphs  # nothing new compiled
    for r in (first, second):
        assert all(math.isfinite(h["train_loss"]) for h in r.history)
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]  # the compiled model learns


def test_compile_is_checked_before_training(small):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(small, epochs=1, compile="cudagraphs", device="cpu")
    with pytest.raises(ValueError, match="compile must be one of"):
        train(small, epochs=1, compile="yes")


def test_profile_benchmark_runs_every_engine_on_a_cpu(tmp_path, capsys):
    """benchmarks.profile, the GPU profile's script, on a CPU at a tiny width: the same code."""
    from benchmarks.profile import main

    report = main(["--device", "cpu", "--width", "0.0625", "--steps", "2", "--cases",
                   "plain:16:1,plain:32:1,fused:16:2,multi:16:2,graph:16:2", "--json", str(tmp_path / "p.json")])
    assert [c["engine"] for c in report["cases"]] == ["plain", "plain", "fused", "multi", "graph"]
    for case in report["cases"]:
        assert case["images_per_s"] > 0 and case["device_busy"] is None  # one CPU: no device time
        assert case["top"] and abs(sum(t["share"] for t in case["top"])) <= 1.0001
        assert any("conv" in t["op"] or "mm" in t["op"] for t in case["top"])
    assert json.loads((tmp_path / "p.json").read_text())["cases"][2]["k"] == 2
    assert "| fused x2, batch 16 |" in capsys.readouterr().out


def test_device_busy_counts_each_kernel_once():
    """A profile lists a CPU operator with its kernels' time (self_device_time_total) and each kernel
    again as a device event: busy time and the top list count the device's own events only."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from benchmarks.profile import device_busy_s, device_events

    events = [SimpleNamespace(key="aten::convolution", device_type=DeviceType.CPU, self_device_time_total=400.0),
              SimpleNamespace(key="aten::mm", device_type=DeviceType.CPU, self_device_time_total=100.0),
              SimpleNamespace(key="sm90_xmma_fprop_kernel", device_type=DeviceType.CUDA, self_device_time_total=400.0),
              SimpleNamespace(key="ampere_sgemm", device_type=DeviceType.CUDA, self_device_time_total=100.0)]
    assert [e.key for e in device_events(events)] == ["sm90_xmma_fprop_kernel", "ampere_sgemm"]
    assert device_busy_s(events) == pytest.approx(500e-6)  # not 1000e-6
