"""A training worker process: loads the data set once, then trains trial after trial.

It never touches the storage. It receives jobs (trial number, hyperparameters, device), streams
each epoch's record to the coordinator and waits for the prune verdict, sends the result, and
then the coordinator's word on the weights (save them to a path, or not). Living across trials
keeps the data loaded once per worker; a worker that dies takes only its own trials with it.

A fused worker (engine "fused") trains its jobs as one group (model.FusedTrainer): jobs that
arrive while the group trains join it at the next epoch boundary, and a member whose schedule
ends, that is pruned or diverges leaves there. A multi or graph worker (engines "multi" and
"graph") trains jobs of any hyperparameters side by side (model.MultiTrainer; graph: each trial's
step replayed as a CUDA graph): a job joins as soon as it arrives, and each member's epochs end on
their own. Messages are the same as a plain worker's, one per member, and a "note" with a line for
the user (a trial whose step could not be captured).

A CUDA out-of-memory (cuBLAS's and cuDNN's allocation failures too) is never a trial's failure:
the worker says "oom" and the coordinator shrinks its group. A CUDA error that leaves the
process's CUDA context unusable ends the worker, for a fresh one to take over.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import asdict

from . import worker_failures as failures
from .worker_failures import Faults, first_claim, one_line


def _result_message(number: int, result, call_s: float, extra: dict) -> tuple:
    out = asdict(result)
    out.pop("model", None)
    out["call_s"] = call_s  # all of train() (its share, fused): what the orchestration benchmark subtracts
    out.update(extra)
    return ("done", number, out)


def _save(conn, number: int, model, reply: tuple) -> None:
    """Answer the coordinator's word on a finished trial's weights."""
    import torch

    if reply[0] == "save":
        try:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, reply[2])
        except Exception:  # noqa: BLE001 - a full disk (torch says RuntimeError): the trial goes on without weights
            with contextlib.suppress(OSError):
                os.remove(reply[2])
            conn.send(("saved", number, None))
            return
        conn.send(("saved", number, reply[2]))


def _die_with_coordinator(conn) -> None:
    """A thread that ends this process as soon as the coordinator's end of the pipe closes (it
    exited or was killed, even with kill -9), whatever the training is doing: an orphan would keep
    its share of the CPU or its GPU memory until its next message."""
    import select
    import threading

    hangup = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)

    def watch() -> None:
        poller = select.poll()
        poller.register(conn.fileno(), hangup)
        while True:
            if any(events & hangup for _, events in poller.poll(500)):
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="sweep-coordinator-watch").start()


def worker_main(conn, data_args: dict, threads: int, env: dict, compile: str = "off", engine: str = "plain",
                auto: dict | None = None) -> None:
    """Process entry point. Messages out: ready, epoch, done, saved, oom, error.

    Engine auto: before `ready` the worker measures the candidates (`auto`: device, probe config,
    fusable) and says in `ready` which engine and K it trains with, and what it measured.

    `compile` is the engine option of `model.train`; the worker lives across trials, so a compiled
    graph is built by its first trial and reused by every later one of the same shapes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    _die_with_coordinator(conn)
    os.environ.clear()
    os.environ.update(env)  # before anything reads it: CUDA_VISIBLE_DEVICES, SWEEP_CACHE
    # Fault injection for the test suite: SWEEP_FAULT_DIE_STARTING=FLAGFILE kills the first worker
    # that starts (as the OOM killer would, while it loads the data), once (the flag file records it).
    if env.get("SWEEP_FAULT_DIE_STARTING") and first_claim(env["SWEEP_FAULT_DIE_STARTING"]):
        os.kill(os.getpid(), signal.SIGKILL)
    import torch

    from data import load_dataset

    torch.set_num_threads(max(1, threads))
    try:
        dataset = load_dataset(**data_args)
    except Exception as e:  # the coordinator loaded the same data already: report, don't hang
        conn.send(("error", None, f"worker could not load the data: {e}"))
        return
    k, choice = None, None
    if engine == "auto":
        from model import TrainConfig, choose_engine

        try:
            choice = choose_engine(dataset, TrainConfig(**auto["probe"]), auto["device"], fusable=auto["fusable"])
            engine, k = choice["engine"], choice["k"]
            if engine not in ("plain", "fused", "multi", "graph"):  # never said ready with an engine it cannot train
                raise ValueError(f"no engine {engine!r}")
        except Exception as e:  # noqa: BLE001 - a measurement that fails costs the speed-up, not the run
            engine, k, choice = "plain", 1, {"error": one_line(e)}
    conn.send(("ready", os.getpid(), dataset.content_hash, engine, k, choice))
    try:
        loops = {"plain": _plain_loop, "fused": _fused_loop, "multi": _multi_loop,
                 "graph": lambda *a: _multi_loop(*a, graphs=True)}
        loops[engine](conn, dataset, compile, Faults(env))
    except (BrokenPipeError, EOFError, ConnectionResetError, OSError):
        return  # the coordinator is gone


def _plain_loop(conn, dataset, compile: str, faults: Faults) -> None:
    from model import TrainConfig, train

    last: tuple[int, object] | None = None  # (trial number, model) of the last finished trial
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] in ("save", "nosave"):  # the coordinator's word on the last trial's weights
            if last is not None and last[0] == msg[1]:
                _save(conn, msg[1], last[1], msg)
            last = None
            continue
        _, number, config, device = msg
        last = None

        def on_epoch(record: dict) -> bool:
            conn.send(("epoch", number, record))
            return conn.recv() == "prune"

        oom = None
        try:
            faults.check([number])
            t0 = time.perf_counter()
            result = train(dataset, TrainConfig(**config), device=device, on_epoch=on_epoch, keep_model=True,
                           compile=compile)
            call_s = time.perf_counter() - t0
        except (BrokenPipeError, EOFError, ConnectionResetError):
            raise
        except Exception as e:  # noqa: BLE001 - a trial's crash is reported, the worker lives on
            oom = failures.failure(e)
            if oom is None:
                conn.send(("error", number, one_line(e), traceback.format_exc(limit=3)[-2000:]))
                continue
        if oom is not None:  # out of the except block: its traceback no longer holds the trial's tensors
            failures.release_cuda()
            conn.send(("oom", number, oom))
            continue
        last = (number, result.model)
        conn.send(_result_message(number, result, call_s, {"engine": "plain", "concurrent": 1}))


def _fused_loop(conn, dataset, compile: str, faults: Faults) -> None:
    from model import FusedTrainer, TrainConfig, fuse_key, outcome

    inbox = _Inbox(conn)
    jobs = inbox.jobs  # (number, config, device) not yet in the group
    trainer: FusedTrainer | None = None
    groups = 0  # groups this worker has formed: with the pid, a group's id

    while True:
        if (trainer is None or not len(trainer)) and not jobs:
            if not inbox.take(conn.recv()):
                return
        while conn.poll():
            if not inbox.take(conn.recv()):
                return
        while jobs:  # joiners: a group forms around the first; the coordinator sends matching ones
            number, config, device = jobs[0]
            cfg = TrainConfig(**config)
            if trainer is not None and len(trainer) and fuse_key(cfg) != trainer.key:
                break  # (a member the coordinator dropped is still leaving): it joins the next group
            jobs.popleft()
            try:
                if trainer is None or not len(trainer):
                    groups += 1
                    trainer = FusedTrainer(dataset, batch_size=cfg.batch_size, width=cfg.width,
                                           optimizer=cfg.optimizer, precision=cfg.precision, device=device,
                                           compile=compile, seed=cfg.seed)
                trainer.add(number, cfg)
            except Exception as e:  # noqa: BLE001 - this trial cannot train here; the group goes on
                conn.send(("error", number, one_line(e), traceback.format_exc(limit=3)[-2000:]))
        if trainer is None or not len(trainer):
            continue
        numbers = [m.key for m in trainer.members] + [m.key for m in trainer._joining]
        oom = None
        try:
            faults.check(numbers)
            records = trainer.run_epoch()
        except Exception as e:  # noqa: BLE001 - the group's step failed: every member fails with it
            trainer = None  # out of memory: dropped whole; the coordinator shrinks the group and sends it again
            oom = failures.group_failed(conn, e, numbers)
            if oom is None:
                continue
        if oom is not None:  # out of the except block: its traceback no longer holds the group
            failures.group_oom(conn, oom, numbers)
            continue
        group = f"{os.getpid()}.{groups}"
        for number, record in records.items():
            conn.send(("epoch", number, record))
            end = outcome(record, trainer.config(number), inbox.reply() == "prune")
            if end is None:
                continue
            result = trainer.finish(number, end, keep_model=True)
            conn.send(_result_message(number, result, _share_s(result),
                                      {"engine": "fused", "concurrent": _mean_concurrent(result), "fused_group": group}))
            _save(conn, number, result.model, inbox.reply())


def _share_s(result) -> float:
    """A trial's share of the seconds its worker spent on the epochs it trained in company."""
    return sum(h["epoch_s"] / h["concurrent"] for h in result.history)


def _mean_concurrent(result) -> float:
    sizes = [h["concurrent"] for h in result.history]
    return round(sum(sizes) / len(sizes), 2)


class _Inbox:
    """A grouped worker's messages: jobs kept in arrival order, replies handed back."""

    def __init__(self, conn):
        self.conn, self.jobs = conn, deque()  # (number, config, device) not yet training

    def take(self, msg) -> bool:
        """Take a message that is not a reply; False on stop."""
        if msg[0] == "stop":
            return False
        if msg[0] == "train":
            self.jobs.append(msg[1:])
        return True

    def reply(self) -> object:
        """The coordinator's answer to the last message sent; jobs sent meanwhile are kept."""
        while True:
            msg = self.conn.recv()
            if isinstance(msg, tuple) and msg[0] == "train":
                self.jobs.append(msg[1:])
            elif isinstance(msg, tuple) and msg[0] == "stop":
                raise EOFError
            else:
                return msg


def _multi_loop(conn, dataset, compile: str, faults: Faults, graphs: bool = False) -> None:
    """Engines multi and graph (`graphs`): trials of any hyperparameters side by side."""
    from model import MultiTrainer, TrainConfig, outcome

    inbox = _Inbox(conn)
    trainer: MultiTrainer | None = None
    engine = "graph" if graphs else "multi"
    say = lambda line: conn.send(("note", None, line))  # noqa: E731 - the coordinator prints it
    while True:
        if (trainer is None or not len(trainer)) and not inbox.jobs:
            if not inbox.take(conn.recv()):
                return
        while conn.poll():
            if not inbox.take(conn.recv()):
                return
        while inbox.jobs:  # a job joins at once, whatever its hyperparameters
            number, config, device = inbox.jobs.popleft()
            try:
                if trainer is None:
                    trainer = MultiTrainer(dataset, device=device, compile=compile, graphs=graphs, say=say)
                trainer.add(number, TrainConfig(**config))
            except Exception as e:  # noqa: BLE001 - this trial cannot train here; the others go on
                failures.exit_if_poisoned(e)
                conn.send(("error", number, one_line(e), traceback.format_exc(limit=3)[-2000:]))
        if trainer is None or not len(trainer):
            continue
        numbers = [m.key for m in trainer.members]
        oom = None
        try:
            faults.check(numbers)
            records = trainer.advance()
        except Exception as e:  # noqa: BLE001 - a step failed: which member's is unknown, so all fail
            trainer.close()
            trainer = None  # out of memory: every member is dropped; the coordinator shrinks the group and sends them again
            oom = failures.group_failed(conn, e, numbers)
            if oom is None:
                continue
        if oom is not None:  # out of the except block: its traceback no longer holds the trainer
            failures.group_oom(conn, oom, numbers)
            continue
        for number, record in records.items():
            conn.send(("epoch", number, record))
            end = outcome(record, trainer.config(number), inbox.reply() == "prune")
            if end is None:
                continue
            result = trainer.finish(number, end, keep_model=True)
            conn.send(_result_message(number, result, _share_s(result),
                                      {"engine": engine, "concurrent": _mean_concurrent(result)}))
            _save(conn, number, result.model, inbox.reply())
