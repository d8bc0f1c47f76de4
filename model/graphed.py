"""What trials stepped side by side need from CUDA: a stream and a memory pool per slot, their own
random streams, and one CUDA graph per trial's step. The only CUDA-only code of the engines.

A trial's step (`TrialRun.step`) is graph-safe (model/capture_check.py checks it on a CPU), so a
graph captured once replays every later step of the trial: one launch instead of the host issuing
130-170 kernels. What this relies on, from PyTorch's CUDA graph API:

- `CUDAGraph.capture_begin(pool)` / `capture_end()` on a side stream after warm-up steps there
  (cuDNN and cuBLAS set up their handles and workspaces, and the autotuner picks its algorithms,
  outside the capture); capturing does not run the step, it records it.
- A graph registers the default CUDA generator's *current state object* when its capture begins,
  and every generator passed to `register_generator_state` (the trial's own: augmentation draws);
  each replay advances the registered states' offsets. So a trial's dropout and RReLU draws come
  from its own state object, installed with `Generator.graphsafe_set_state` while its graph is
  captured and while it steps eagerly, and left to the graph afterwards: replays need no swap.
- Replays run on the stream current when `replay()` is called: each slot's own, so the graphs of
  different trials can overlap on the GPU.
- A pool passed to the next capture in a slot reuses the memory of the slot's last graph once that
  graph is reset and its tensors are gone: a finished trial strands nothing.

On a CPU the same engine runs every step eagerly, with the CPU random state swapped around each
step instead (a CPU generator has no state objects to install).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .trial_run import TrialRun

WARMUP_STEPS = 2  # eager steps of a trial before its capture, on the stream it is captured on


@dataclass
class Slot:
    """Where one trial at a time steps: its CUDA stream and graph memory pool (None on a CPU)."""
    stream: object | None
    pool: object | None
    busy: bool = False


@dataclass
class Rng:
    """A trial's global random streams between its steps: the CPU state (swapped by copy) and,
    on CUDA, its own state object of the default CUDA generator."""
    cpu: torch.Tensor
    cuda: object | None = None


@dataclass
class Graph:
    """A trial's captured step, or why it steps eagerly."""
    graph: object | None = None
    eager_steps: int = 0  # eager steps taken towards the warm-up
    failed: str | None = field(default=None)  # the capture failed: why (the trial goes on eagerly)


def new_slot(dev: torch.device) -> Slot:
    if dev.type != "cuda":
        return Slot(None, None)
    return Slot(torch.cuda.Stream(dev), torch.cuda.graph_pool_handle())


def on(slot: Slot):
    return torch.cuda.stream(slot.stream) if slot.stream is not None else contextlib.nullcontext()


def trial_rng(dev: torch.device) -> Rng:
    """The global random streams as they are now (just seeded by a new TrialRun), as the trial's own."""
    if dev.type != "cuda":
        return Rng(torch.get_rng_state())
    return Rng(torch.get_rng_state(), _default_generator(dev).clone_state())


@contextlib.contextmanager
def installed(rng: Rng, dev: torch.device):
    """The trial's random streams for the duration, saved back after."""
    outer_cpu = torch.get_rng_state()
    torch.set_rng_state(rng.cpu)
    gen = _default_generator(dev) if rng.cuda is not None else None
    outer_cuda = gen.graphsafe_get_state() if gen is not None else None
    if gen is not None:
        gen.graphsafe_set_state(rng.cuda)
    try:
        yield
    finally:
        rng.cpu = torch.get_rng_state()
        torch.set_rng_state(outer_cpu)
        if gen is not None:
            gen.graphsafe_set_state(outer_cuda)


def _default_generator(dev: torch.device):
    return torch.cuda.default_generators[dev.index if dev.index is not None else torch.cuda.current_device()]


def capture(run: TrialRun, slot: Slot) -> object:
    """The trial's step as a CUDA graph, captured on the slot's stream into the slot's pool; the
    trial's random streams must be installed. Raises what the capture raised, the capture ended."""
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(run.gen)
    torch.cuda.current_stream(run.dev).synchronize()  # its warm-up steps are done before recording starts
    with torch.cuda.stream(slot.stream):
        graph.capture_begin(pool=slot.pool)
        try:
            run.step()
        except BaseException:
            with contextlib.suppress(Exception):
                graph.capture_end()
            with contextlib.suppress(Exception):
                graph.reset()
            raise
        graph.capture_end()
    return graph


def out_of_memory(e: BaseException) -> bool:
    """A CUDA out-of-memory, also where cuBLAS or cuDNN report theirs as a plain error."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e)
    return any(s in text for s in ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                                   "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "out of memory"))


# Errors after which this process's CUDA context is unusable: every later call fails too.
POISONED = ("device-side assert", "illegal memory access", "unspecified launch failure", "illegal instruction",
            "misaligned address", "uncorrectable ECC", "an illegal address", "CUDA error: unknown error",
            "hardware stack error", "invalid program counter")


def poisoned(e: BaseException) -> bool:
    """A CUDA error that leaves the context unusable: the process must end for a fresh one."""
    text = str(e)
    return any(s in text for s in POISONED)
