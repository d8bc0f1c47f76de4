"""What goes wrong in a worker, and what the worker does about it.

A CUDA out-of-memory (cuBLAS's and cuDNN's allocation failures too) is never a trial's failure:
the worker says "oom" and the coordinator shrinks its group; the memory is given back only once
nothing refers to the failed trainer. A CUDA error that leaves the process's CUDA context
unusable ends the worker, for a fresh one to take over. Any other error is its trial's.
Fault injection for the test suite lives here too.
"""

from __future__ import annotations

import os
import sys
import traceback

def first_claim(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


EXIT_CUDA_POISONED = 70  # EX_SOFTWARE: the worker's CUDA context is unusable; the coordinator replaces it


class Faults:
    """Fault injection for the test suite: SWEEP_FAULT_OOM_ONCE="NUMBERS:FLAGFILE" makes the first
    attempt at each listed trial raise a CUDA out-of-memory, once across all workers (the flag
    file records it)."""

    def __init__(self, env: dict):
        numbers, _, self.flag = env.get("SWEEP_FAULT_OOM_ONCE", "").partition(":")
        self.numbers = {int(n) for n in numbers.split(",") if n.strip()}

    def check(self, numbers) -> None:
        import torch

        for n in numbers:
            if n in self.numbers and first_claim(f"{self.flag}.{n}"):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")


def one_line(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}"[:500]


def failure(e: BaseException) -> str | None:
    """What a training error means for the worker: a CUDA out-of-memory (its one-line text: the
    group shrinks, no trial fails), None for any other error of the trial; a CUDA error that
    leaves this process's context unusable ends the process (a fresh worker takes over)."""
    from model.graphed import out_of_memory

    exit_if_poisoned(e)
    if out_of_memory(e):
        return str(e).splitlines()[0] if str(e) else "out of memory"
    return None


def group_failed(conn, e: BaseException, numbers) -> str | None:
    """A group's step failed (which member's is unknown): None once every member's error is sent,
    or the out-of-memory text, for `group_oom` once the except block is left."""
    oom = failure(e)
    if oom is None:
        trace = traceback.format_exc(limit=3)[-2000:]
        for n in numbers:
            conn.send(("error", n, one_line(e), trace))
    return oom


def group_oom(conn, oom: str, numbers) -> None:
    """The group ran out of memory: the memory goes back, and the coordinator shrinks the group."""
    release_cuda()
    conn.send(("oom", None, oom, numbers))


def exit_if_poisoned(e: BaseException) -> None:
    from model.graphed import poisoned

    if poisoned(e):
        print(f"sweep: worker {os.getpid()}: a CUDA error ended this worker ({one_line(e)}); its trials are "
              "failed and queued again, and a fresh worker takes over", file=sys.stderr, flush=True)
        os._exit(EXIT_CUDA_POISONED)


def release_cuda() -> None:
    """Give the cached GPU memory back, once nothing refers to the failed trainer any more."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
