"""The graph engine (`--engine graph:K`): trials side by side, each trial's step captured once as a
CUDA graph and replayed. On a CPU it runs its eager form; a stand-in for the capture (a "graph"
that replays the step it was given, checked by model.capture_check on every replay) drives the
engine's capture path here: warm-up, capture, replay, fallback, out of memory, slots handed on.
Only `graphed.capture` itself, a dozen lines of CUDA calls, is left for a CUDA machine."""

from __future__ import annotations

import pytest
import torch

from data import load_dataset
from model import TrainConfig, train
from model import graphed
from model.capture_check import CaptureCheck
from model.multi_train import MultiTrainer, train_multi
from tests.test_multi import assert_identical, mixed


@pytest.fixture(scope="module")
def faces():
    return load_dataset("synthetic", n_images=240, seed=5)


class StandInGraph:
    """What a captured step does on a replay, on a CPU: the step, on the random streams the
    capture bound (the trial's), checked to be the same operators on the same storages as the
    replay before."""

    def __init__(self, run, rng, log):
        self.run, self.rng, self.log = run, rng, log
        self.check = CaptureCheck(run.dev, [run.gen])
        self.replays = 0

    def replay(self):
        with graphed.installed(self.rng, self.run.dev), self.check.step():
            self.run.step()
        self.replays += 1

    def reset(self):
        self.log.append(("reset", self.run.cfg.seed))


@pytest.fixture
def stand_in(monkeypatch):
    """Turns the capture path on for a CPU trainer: `graphed.capture` returns a StandInGraph."""
    log, graphs = [], []
    monkeypatch.setattr(MultiTrainer, "capture", True, raising=False)

    def capture(run, slot):
        trainer_member = next(m for m in _trainers[-1].members if m.run is run)
        assert trainer_member.graph.eager_steps == graphed.WARMUP_STEPS  # warmed up on its slot first
        g = StandInGraph(run, trainer_member.rng, log)
        graphs.append(g)
        log.append(("capture", run.cfg.seed, id(slot)))
        return g

    monkeypatch.setattr(graphed, "capture", capture)
    original = MultiTrainer.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.capture = True
        _trainers.append(self)

    monkeypatch.setattr(MultiTrainer, "__init__", init)
    return log, graphs


_trainers: list[MultiTrainer] = []


@pytest.mark.parametrize("channels_last, precision", [(False, "fp32"), (True, "bf16")], ids=["nchw-fp32", "cl-bf16"])
def test_the_cpu_form_is_each_trial_alone_bit_for_bit(faces, channels_last, precision):
    configs = mixed(precision)
    results = train_multi(faces, configs, device="cpu", keep_model=True, channels_last=channels_last, graphs=True)
    for cfg, result in zip(configs, results):
        assert_identical(result, train(faces, cfg, device="cpu", keep_model=True, channels_last=channels_last))
        assert result.cuda_graph is False and result.graph_fallback is None  # nothing captured on a CPU


def test_captured_trials_replay_their_own_steps_and_hand_their_slots_on(faces, stand_in):
    log, graphs = stand_in
    a, b, c, d = mixed()
    trainer = MultiTrainer(faces, device="cpu", graphs=True)
    for key, cfg in (("a", a), ("b", b), ("c", c)):
        trainer.add(key, cfg)
    done = {}
    while len(trainer):
        for key, record in trainer.advance().items():
            if record["epoch"] == trainer.config(key).epochs:
                done[key] = trainer.finish(key, "completed", keep_model=True)
            if key == "c":
                trainer.add("d", d)  # joins as c (one epoch) leaves: into a slot a member left
    for key, cfg in zip("abcd", (a, b, c, d)):
        assert_identical(done[key], train(faces, cfg, device="cpu", keep_model=True))
        assert done[key].cuda_graph is True
    assert len(trainer.slots) == 3 and not any(s.busy for s in trainer.slots)  # d took the slot of one that left
    captures = {seed: slot for kind, seed, *slot in log if kind == "capture"}
    assert len(captures) == 4  # once per trial, every epoch after the first replays
    assert captures[d.seed] in [captures[cfg.seed] for cfg in (a, b, c)]
    assert sorted(e[1] for e in log if e[0] == "reset") == sorted(cfg.seed for cfg in (a, b, c, d))
    for g in graphs:  # every step but the warm-up replayed the graph, the same operators each time
        assert g.replays == sum(g.run.n_steps for _ in g.run.history) - graphed.WARMUP_STEPS
        assert len(g.check.traces) == g.replays


def test_a_capture_that_fails_trains_eagerly_and_says_so_once(faces, stand_in, monkeypatch):
    said = []

    def refuse(run, slot):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(graphed, "capture", refuse)
    configs = mixed()[:2]
    trainer = MultiTrainer(faces, device="cpu", graphs=True, say=said.append)
    for i, cfg in enumerate(configs):
        trainer.add(i, cfg)
    results = {}
    while len(trainer):
        for key, record in trainer.advance().items():
            if record["epoch"] == trainer.config(key).epochs:
                results[key] = trainer.finish(key, "completed", keep_model=True)
    for i, cfg in enumerate(configs):
        assert results[i].cuda_graph is False
        assert results[i].graph_fallback == "RuntimeError: operation not permitted when stream is capturing"
        assert_identical(results[i], train(faces, cfg, device="cpu", keep_model=True))
    assert len(said) == 2 and all("could not be captured" in line and "\n" not in line for line in said)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")])
def test_out_of_memory_at_capture_goes_up_for_the_worker_to_halve_its_group(faces, stand_in, monkeypatch, error):
    def oom(run, slot):
        raise error

    monkeypatch.setattr(graphed, "capture", oom)
    trainer = MultiTrainer(faces, device="cpu", graphs=True)
    trainer.add(0, mixed()[0])
    with pytest.raises(type(error)):
        trainer.advance()
    assert graphed.out_of_memory(error)


def test_errors_that_end_a_cuda_context_are_told_apart():
    assert graphed.poisoned(RuntimeError("CUDA error: device-side assert triggered"))
    assert graphed.poisoned(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not graphed.poisoned(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not graphed.out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))


def test_the_graph_engine_refuses_compiled_steps(faces):
    with pytest.raises(ValueError, match="does not go with compile"):
        MultiTrainer(faces, device="cpu", graphs=True, compile="on")


def test_torch_compiles_cuda_graphs_are_refused_beside_other_trials_by_the_trainer_itself(faces):
    """Whoever builds the trainer (a worker, `train_multi`, `sweep bench --multi`) gets the refusal."""
    for graphs in (False, True):
        with pytest.raises(ValueError, match="cannot train trials side by side"):
            MultiTrainer(faces, device="cpu", graphs=graphs, compile="cudagraphs")
    with pytest.raises(ValueError, match="cannot train trials side by side"):
        train_multi(faces, mixed()[:1], device="cpu", compile="cudagraphs")


class _Conn:
    """The coordinator's end of a worker's pipe, scripted: what the worker receives, in order."""

    def __init__(self, incoming):
        self.incoming, self.sent = list(incoming), []

    def recv(self):
        return self.incoming.pop(0)

    def poll(self, timeout=0):
        return False

    def send(self, msg):
        self.sent.append(msg)


@pytest.mark.parametrize("loop", ["plain", "graph"])
def test_out_of_memory_lets_go_of_the_trainer_before_giving_memory_back(monkeypatch, loop):
    """The memory is given back (empty_cache) only once nothing refers to the failed trainer: not
    from inside the except block, whose traceback still holds the trainer's frames."""
    import gc
    import weakref

    import model
    from model.trial_run import TrialRun
    from sweep import worker, worker_failures

    made, alive_at_release = [], []
    original_init = TrialRun.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        made.append(weakref.ref(self))

    def oom_in_a_step(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    def release():
        gc.collect()
        alive_at_release.append(any(r() is not None for r in made))

    monkeypatch.setattr(TrialRun, "__init__", init)
    monkeypatch.setattr(TrialRun, "step", oom_in_a_step)
    monkeypatch.setattr(worker_failures, "release_cuda", release)
    data = load_dataset("synthetic", n_images=240, seed=5)
    cfg = TrainConfig(width=0.0625, batch_size=16, epochs=1).to_dict()
    if loop == "plain":
        conn = _Conn([("train", 7, cfg, "cpu"), ("stop",)])
        worker._plain_loop(conn, data, "off", worker.Faults({}))
        assert conn.sent == [("oom", 7, "CUDA out of memory. Tried to allocate 1.00 GiB")]
    else:
        conn = _Conn([("train", 7, cfg, "cpu"), ("train", 8, cfg, "cpu"), ("stop",)])
        monkeypatch.setattr(_Conn, "poll", lambda self, timeout=0: len(self.incoming) > 1)
        worker._multi_loop(conn, data, "off", worker.Faults({}), graphs=True)
        assert conn.sent == [("oom", None, "CUDA out of memory. Tried to allocate 1.00 GiB", [7, 8])]
    assert made and alive_at_release == [False]
    assert model.graphed.out_of_memory(torch.cuda.OutOfMemoryError("x"))


def test_a_worker_whose_cuda_context_is_poisoned_ends_for_a_fresh_one(monkeypatch, capsys):
    """After a device-side assert or an illegal address every later CUDA call fails: the worker
    ends (the coordinator fails and re-queues its trials and starts a fresh worker) instead of
    failing every trial it is given from then on."""
    from model.trial_run import TrialRun
    from sweep import worker, worker_failures

    def poisoned_step(self):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    class Ended(Exception):
        pass

    def exit_(code):
        raise Ended(code)

    monkeypatch.setattr(TrialRun, "step", poisoned_step)
    monkeypatch.setattr(worker_failures.os, "_exit", exit_)
    data = load_dataset("synthetic", n_images=240, seed=5)
    conn = _Conn([("train", 3, TrainConfig(width=0.0625, batch_size=16, epochs=1).to_dict(), "cpu"), ("stop",)])
    with pytest.raises(Ended) as ended:
        worker._multi_loop(conn, data, "off", worker.Faults({}), graphs=True)
    assert ended.value.args == (worker_failures.EXIT_CUDA_POISONED,) and conn.sent == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a CUDA error ended this worker" in err and "illegal memory access" in err


def test_training_turns_cudnns_autotuner_on_for_cuda_only(monkeypatch):
    from model import device

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    device.autotune(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    device.autotune(torch.device("cuda"))  # only sets the flag: no CUDA needed
    assert torch.backends.cudnn.benchmark is True


def test_evaluation_counts_without_bincount(faces, monkeypatch):
    """bincount sizes its output from the data: on CUDA a wait for the GPU at every eval batch."""
    from model.trial_run import evaluate

    def refuse(*a, **kw):
        raise AssertionError("bincount called")

    monkeypatch.setattr(torch, "bincount", refuse)
    model_ = train(faces, TrainConfig(width=0.0625, batch_size=32, epochs=1), device="cpu", keep_model=True).model
    x, y = torch.from_numpy(faces.x_val), torch.from_numpy(faces.y_val)
    acc, confusion = evaluate(model_, x, y, __import__("contextlib").nullcontext)
    assert confusion.sum().item() == len(y) and acc == confusion.trace().item() / len(y)
