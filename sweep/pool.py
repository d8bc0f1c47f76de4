"""The worker processes of a run: how many, on which devices, with how many trials each.

Workers live across trials (each loads the data once) and are started from a forkserver: torch
is imported once in a clean server process that never touches CUDA, and each worker forks from
it, so starting and replacing workers is cheap and safe.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import optuna

from .errors import SweepError

# How a worker trains (--engine): plain, one trial at a time; fused, up to K trials that share
# model.FUSE_KEYS as one network (model.FusedTrainer); multi, up to K trials of any hyperparameters
# side by side, a step each in turn, each on a CUDA stream of its own (model.MultiTrainer); graph,
# the same with each trial's step captured once as a CUDA graph and replayed (eager on a CPU).
# auto: on a GPU each worker measures the candidates at its start (model.auto_engine) and trains
# with the fastest, never slower than plain; elsewhere it is plain.
ENGINES = ("plain", "fused", "multi", "graph", "auto")
ENGINE_FORMS = "auto, plain, fused[:K], multi[:K] or graph[:K]"
# K where --engine names none. fused: 16 measured 1.22x one plain trial on an H200 (docs/benchmarks.md);
# multi and graph: unmeasured on GPUs so far, and each member holds a whole network and optimizer state.
DEFAULT_CONCURRENT = {"fused": 16, "multi": 4, "graph": 4}


@dataclass
class Running:
    """A trial a worker trains (or will, once its group reaches an epoch boundary)."""
    trial: optuna.Trial
    config: dict  # its TrainConfig, kept with the trial for retries on another worker
    epochs: int = 0
    dropped: bool = False  # taken over by another process: answered "stop" until its worker lets go


@dataclass
class Worker:
    index: int
    device: str  # what the worker trains on: cpu, cuda (its one visible GPU), mps
    gpu: int | None  # physical GPU index, when on a GPU
    proc: mp.Process
    conn: object
    capacity: int = 1  # trials at once: its fused group's or multi trainer's size (1: one plain trial)
    engine: str = "plain"  # one of ENGINES; auto until the worker says what it measured fastest
    ready: bool = False
    started: float = field(default_factory=time.perf_counter)
    running: dict[int, Running] = field(default_factory=dict)  # trial number -> trial
    last_heartbeat: float = 0.0

    @property
    def group_key(self) -> tuple | None:
        """What a trial must share to join this worker's group (None: anything: it is empty, or
        its engine trains any trials side by side)."""
        from model import FUSE_KEYS

        if not self.running or self.engine in ("multi", "graph"):
            return None
        c = next(iter(self.running.values())).config
        return tuple(c[k] for k in FUSE_KEYS)


# What the fork server imports once for every worker. First the workers' OpenMP wait policy, which
# OpenMP reads only as torch loads it (sweep/openmp.py). torch._dynamo too: every torch optimizer
# imports it when first built, which took 2.2 s of each worker's first trial on a CPU.
PRELOAD = ["sweep.openmp_preload", "torch", "torch._dynamo", "data", "model", "sweep.worker"]


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


@contextlib.contextmanager
def fork_server():
    """`with fork_server():` around a run's set-up and run: the workers' fork server starts now
    and imports torch (3 s on a CPU) while this process opens the storage and loads the data,
    instead of after; it is stopped on the way out, trained or not."""
    from multiprocessing import forkserver

    _context()
    # Started with Ctrl-C ignored, as the workers it forks run (Ctrl-C is the coordinator's): a
    # terminal's Ctrl-C reaches the whole process group, and one landing while the server imported
    # torch printed a traceback beside the run's one line.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()  # returns at once: the server imports in the background
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    try:
        yield
    finally:
        stop_fork_server()


def stop_fork_server() -> None:
    """The helpers go now rather than at interpreter exit: the fork server (each worker's parent)
    and the resource tracker."""
    from multiprocessing import forkserver, resource_tracker

    with contextlib.suppress(Exception):
        # Killed, not asked: it holds nothing to save, and shutting down its interpreter (torch
        # loaded) took a second of every run's exit.
        pid = forkserver._forkserver._forkserver_pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        forkserver._forkserver._stop()
    with contextlib.suppress(Exception):
        resource_tracker._resource_tracker._stop()


class Pool:
    def __init__(self, n: int, devices: list[tuple[str, int | None]], data_args: dict, threads: int,
                 compile: str = "off", engine: str = "plain", concurrent: int = 1, auto: dict | None = None):
        """`auto` (engine auto): the study's `probe` configuration and whether its trials are
        `fusable`, for the worker's measurement."""
        self.ctx = _context()
        self.data_args, self.threads, self.compile = data_args, threads, compile
        self.engine, self.concurrent, self.auto = engine, concurrent, auto
        self.workers: list[Worker] = [self._spawn(i, *devices[i % len(devices)]) for i in range(n)]

    def _spawn(self, index: int, device: str, gpu: int | None, capacity: int | None = None) -> Worker:
        from .openmp import worker_openmp_env
        from .worker import worker_main

        env = worker_env(os.environ, gpu)  # given explicitly: the forkserver's own environment is old
        env.update(worker_openmp_env(env))  # as the fork server's OpenMP has it, for what the worker starts
        parent, child = self.ctx.Pipe()
        auto = {**self.auto, "device": device} if self.engine == "auto" else None
        proc = self.ctx.Process(target=worker_main, args=(child, self.data_args, self.threads, env, self.compile,
                                                          self.engine, auto), daemon=True, name=f"sweep-worker-{index}")
        proc.start()
        child.close()
        return Worker(index, device, gpu, proc, parent, capacity=capacity or self.concurrent, engine=self.engine)

    def respawn(self, w: Worker) -> Worker:
        with contextlib.suppress(OSError, EOFError, ValueError):
            w.conn.close()
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        fresh = self._spawn(w.index, w.device, w.gpu, w.capacity)
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def close(self, graceful: bool = True) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, EOFError, ValueError):
                if graceful:
                    w.conn.send(("stop",))
                else:
                    w.proc.kill()
        deadline = time.time() + 5
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.time()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
        stop_fork_server()


def worker_env(environ, gpu: int | None) -> dict:
    """A worker's environment: the coordinator's, where a GPU worker sees exactly its GPU (read when
    CUDA initialises, in the worker). `gpu` is the coordinator's logical index, so it is mapped
    through the coordinator's own CUDA_VISIBLE_DEVICES where one is set (a scheduler's `2,3`, GPU
    UUIDs, MIG instances): logical GPU 1 under `2,3` is physical GPU 3."""
    env = dict(environ)
    if gpu is None:
        return env
    visible = [e.strip() for e in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[gpu] if gpu < len(visible) else str(gpu)
    return env


def parse_engine(engine: str) -> tuple[str, int]:
    """'plain' -> ('plain', 1); 'fused' or 'fused:K', 'multi' or 'multi:K' -> (engine, K)."""
    from .limits import MAX_CONCURRENT, at_most, text
    from .numbers import whole

    text("--engine", engine, 40)
    kind, colon, k = engine.strip().partition(":")
    if kind not in ENGINES or (kind in ("plain", "auto") and colon):
        raise SweepError(f"--engine {engine}: expected {ENGINE_FORMS}")
    if not colon:  # auto: the most its worker may choose, until it has
        return kind, DEFAULT_CONCURRENT.get(kind, MAX_CONCURRENT if kind == "auto" else 1)
    try:
        n = whole(k, "")  # plain digits: int() would read multi:4_0 as 40
    except SweepError:
        raise SweepError(f"--engine {engine}: K must be a whole number in plain digits, as in {kind}:4") from None
    if n < 1:
        raise SweepError(f"--engine {engine}: K must be at least 1 trial per worker")
    at_most(f"--engine {kind}:K, K =", n, MAX_CONCURRENT, " trials per worker")
    return kind, n


def plan_workers(device: str, workers: int | None, gpus: list[int] | None, per_gpu: int | None,
                 compile: str = "off", engine: str = "plain") -> tuple[int, list[tuple[str, int | None]], int, str, int]:
    """(number of workers, [(device, gpu index)] they cycle through, torch threads per worker,
    engine, trials per worker at once)."""
    from model import COMPILE_MODES

    cores = _usable_cores()
    if workers is not None and workers < 1:
        raise SweepError("--workers must be at least 1")
    kind, k_trials = parse_engine(engine)
    # torch only where CUDA must be asked about: a coordinator on the CPU trains nothing itself
    on_cuda = device.startswith("cuda") or (device == "auto" and _cuda_available())
    if per_gpu is not None and not on_cuda:
        raise SweepError("--per-gpu needs a GPU (CUDA is not available here, or --device is not cuda)")
    if gpus is not None and not on_cuda:
        raise SweepError("--gpus needs CUDA, which is not available here")
    if compile not in COMPILE_MODES:
        raise SweepError(f"--compile must be one of {', '.join(COMPILE_MODES)}, not '{compile}'")
    if compile == "cudagraphs" and not on_cuda:
        raise SweepError("--compile cudagraphs needs CUDA (CUDA is not available here, or --device is not cuda)")
    if compile == "cudagraphs" and kind == "multi":
        # torch.compile's graphs replay on the stream they were recorded on; multi gives each trial its own
        raise SweepError("--compile cudagraphs and --engine multi do not go together: use one of them")
    if compile != "off" and kind == "graph":  # it captures the plain step itself
        raise SweepError(f"--compile {compile} and --engine graph do not go together: use one of them")
    if compile != "off" and kind == "auto":  # auto measures eager engines; a compiled run trains one trial at a time
        kind, k_trials = "plain", 1
    if on_cuda:
        import torch

        count = torch.cuda.device_count()
        if gpus is None:
            gpus = [int(device.split(":")[1])] if ":" in device else list(range(count))
        bad = [g for g in gpus if not 0 <= g < count]
        if bad:
            raise SweepError(f"--gpus {','.join(map(str, bad))}: only {count} GPU(s) here")
        k = per_gpu or 1
        n = workers if workers is not None else len(gpus) * k
        slots = [("cuda", g) for _ in range(k) for g in gpus]
        # A worker that runs out of memory halves its group, so too large a K costs one retry.
        return n, slots, max(1, cores // n), kind, k_trials
    if kind == "auto":  # off CUDA, one trial at a time measured fastest (docs/benchmarks.md)
        kind, k_trials = "plain", 1
    dev = "cpu" if device == "auto" and not _mps() else ("mps" if device == "auto" else device)
    n = workers if workers is not None else 1
    # Workers split the cores: oversubscribed threads measured 26-44% slower here.
    return n, [(dev, None)], max(1, cores // n), kind, k_trials


# Device nodes without which no CUDA runtime can reach a GPU on Linux: NVIDIA's, ROCm's (its torch
# speaks CUDA's API) and WSL2's. Without any, the coordinator skips importing torch (1.5 s) to ask.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_possible() -> bool:
    """False where, without asking torch, no GPU can be reached: Linux with no GPU device node."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in GPU_DEVICE_NODES)


def _cuda_available() -> bool:
    if not gpu_possible():
        return False
    import torch

    return torch.cuda.is_available()


def _usable_cores() -> int:
    """The cores this process may run on: a batch scheduler (Slurm) or `taskset` often grants fewer
    than the machine has, and a thread per machine core would then oversubscribe the granted ones."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _mps() -> bool:
    if sys.platform != "darwin":  # Apple's GPUs only
        return False
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
