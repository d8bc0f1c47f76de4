"""A training worker process: loads the data set once, then trains trial after trial.

It never touches the storage. It receives a job (trial number, hyperparameters, device), streams
each epoch's record to the coordinator, waits for the prune verdict, and sends back the result.
Living across trials keeps the data loaded once per worker; a worker that dies takes only its
own trial with it.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import asdict


def _first_claim(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def worker_main(conn, data_args: dict, threads: int, env: dict, compile: str = "off") -> None:
    """Process entry point. Messages out: ready, epoch, done, oom, error.

    `compile` is the engine option of `model.train`; the worker lives across trials, so a compiled
    graph is built by its first trial and reused by every later one of the same shapes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    os.environ.clear()
    os.environ.update(env)  # before anything reads it: CUDA_VISIBLE_DEVICES, SWEEP_CACHE
    # Fault injection for the test suite: "NUMBERS:FLAGFILE" makes the first attempt at each listed
    # trial raise a CUDA out-of-memory, once across all workers (the flag file records it).
    fault_oom_once = env.get("SWEEP_FAULT_OOM_ONCE", "")
    import torch

    from data import load_dataset
    from model import TrainConfig, train

    torch.set_num_threads(max(1, threads))
    try:
        dataset = load_dataset(**data_args)
    except Exception as e:  # the coordinator loaded the same data already: report, don't hang
        conn.send(("error", None, f"worker could not load the data: {e}"))
        return
    conn.send(("ready", os.getpid(), dataset.content_hash))
    last: tuple[int, object] | None = None  # (trial number, model) of the last finished trial
    oom_numbers, _, oom_flag = fault_oom_once.partition(":")
    oom_once = {int(n) for n in oom_numbers.split(",") if n.strip()}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the coordinator is gone
        if msg[0] == "stop":
            return
        if msg[0] == "save":  # the coordinator keeps this trial's weights (it ranks in the top K)
            _, number, path = msg
            if last is not None and last[0] == number:
                torch.save({k: v.detach().cpu() for k, v in last[1].state_dict().items()}, path)
                conn.send(("saved", number, path))
            else:
                conn.send(("saved", number, None))
            continue
        _, number, config, device = msg
        last = None

        def on_epoch(record: dict) -> bool:
            conn.send(("epoch", number, record))
            return conn.recv() == "prune"

        try:
            if number in oom_once and _first_claim(f"{oom_flag}.{number}"):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            t0 = time.perf_counter()
            result = train(dataset, TrainConfig(**config), device=device, on_epoch=on_epoch, keep_model=True,
                           compile=compile)
            call_s = time.perf_counter() - t0
        except (BrokenPipeError, EOFError, ConnectionResetError):
            return
        except torch.cuda.OutOfMemoryError as e:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            conn.send(("oom", number, str(e).splitlines()[0] if str(e) else "out of memory"))
            continue
        except Exception as e:  # noqa: BLE001 - a trial's crash is reported, the worker lives on
            first = str(e).splitlines()[0] if str(e) else ""
            conn.send(("error", number, f"{type(e).__name__}: {first}"[:500],
                       traceback.format_exc(limit=3)[-2000:]))
            continue
        last = (number, result.model)
        result.model = None
        out = asdict(result)
        out["call_s"] = call_s  # all of train(): what the orchestration benchmark subtracts
        conn.send(("done", number, out))
