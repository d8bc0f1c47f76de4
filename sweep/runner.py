"""Run a sweep: one coordinator owns the study (ask/tell); worker processes train the trials.

The coordinator is the only process here that writes the storage. Each worker (a process that
lives across trials, with the data loaded once) streams every epoch's validation accuracy back;
the coordinator reports it, asks the pruner, answers, and tells the result.

The budget is the study's, not the process's: `trials=50` means the study ends with 50 finished
(COMPLETE + PRUNED) trials, whoever ran them, so rerunning the same command after an interruption
runs only the remainder, and workers on other machines share it. A trial's value is the
validation accuracy of the model the run ends with (the final epoch), never the best epoch's.

Nothing is lost and nothing stays stuck: a worker that dies fails its trial and the trial is
queued again with the same parameters and seed; RUNNING trials of a dead coordinator are found by
pid (same host) or stale heartbeat (any host) and queued again; a CUDA out-of-memory is retried
once alone on its GPU before it counts as a failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import signal
import time
import uuid
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import optuna
from optuna.trial import TrialState

from data import Dataset

from .errors import SweepError
from .locks import budget_lock
from .progress import Progress
from .provenance import git_commit, host, versions_line
from .sampling import distributions, grid_size, make_pruner, make_sampler
from .storage import GRACE_S, HEARTBEAT_S
from .study_file import StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5  # trials failing in a row before the sweep gives up: something is broken
MAX_RETRIES = 2  # re-queues of a trial whose process died (same parameters and seed)
WORKER_START_S = 300  # a worker that is not ready by then (import + data load) is a failure

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a sweep or a confirmation; what was done is stored (running trials FAIL)."""


@dataclass
class RunSummary:
    study_name: str
    target: int
    finished: int
    ran: int  # trials this process started
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_number: int | None
    stopped_by: str  # budget | timeout | grid


def trial_seed(study_seed: int, number: int) -> int:
    """Each trial's training seed: distinct per trial, fixed by the study seed."""
    return (study_seed * 1_000_003 + number) % 2**31


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def study_attrs(spec: StudySpec, data: Dataset, seed: int) -> dict:
    return {
        "study_file": spec.path,
        "definition": json.dumps(spec.raw, default=str),
        "description": spec.description,
        "seed": seed,
        **data.describe(),
        "versions": versions_line(),
        "git_commit": git_commit(),
    }


def open_study(spec: StudySpec, data: Dataset, storage, name: str, seed: int) -> optuna.Study:
    """Create the study, or load it after checking it is the same experiment."""
    with budget_lock(storage, name):
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        if name in existing:
            attrs = existing[name].user_attrs
            wanted = study_attrs(spec, data, seed)
            for key in ("definition", "data_hash", "split", "seed"):
                if key in attrs and attrs[key] != wanted[key]:
                    raise SweepError(f"study '{name}' already exists with a different {key.replace('_', ' ')} "
                                     f"({attrs[key] if key != 'definition' else 'study file changed'}); "
                                     "use --name to start a new study")
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=make_sampler(spec, seed), pruner=make_pruner(spec), load_if_exists=True)
        if name not in existing:
            for k, v in study_attrs(spec, data, seed).items():
                study.set_user_attr(k, v)
            for params in spec.enqueue:
                study.enqueue_trial(params, skip_if_exists=True)
    return study


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Queue a failed trial again with its parameters and seed, a bounded number of times."""
    retries = int(trial.user_attrs.get("retries", 0))
    if retries < MAX_RETRIES and trial.params:
        study.enqueue_trial(trial.params, user_attrs={"seed": trial.user_attrs.get("seed"), "retries": retries + 1,
                                                      "retry_of": trial.number, "retry_reason": reason[:500]})


def requeue_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """RDBStorage's callback for a trial failed by `fail_stale_trials` (stale heartbeat)."""
    requeue(study, trial, f"abandoned: no heartbeat for {GRACE_S} s (process on {trial.user_attrs.get('host', '?')} "
                          "died or lost the database)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_abandoned(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials of dead processes: by pid on this host, by heartbeat elsewhere."""
    me = host()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != me or not isinstance(pid, int) or _pid_alive(pid):
            continue
        reason = f"abandoned: process {pid} on {me} died"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        requeue(study, t, reason)
        recovered.append(t.number)
    optuna.storages.fail_stale_trials(study)
    return recovered


class InterruptOnce:
    """`with InterruptOnce():` around a run: the first Ctrl-C or SIGTERM stops it (KeyboardInterrupt);
    later ones are ignored, so they cannot cut short the clean-up that records what was done.
    `timeout` sends two SIGTERMs at once (to the run, then to its process group): on a GPU machine
    the second one left trials RUNNING. On leaving, the previous handlers come back; once
    interrupted, both signals stay ignored instead until the process ends (Python drops its own
    handlers while it shuts down, and a late SIGTERM would then kill it)."""

    def __enter__(self):
        self.fired = False
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __call__(self, signum, frame):
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_IGN if self.fired else handler)


# ---------------------------------------------------------------- workers


@dataclass
class _Worker:
    index: int
    device: str  # what the worker's train() is given: cpu, cuda (its one visible GPU), mps
    gpu: int | None  # physical GPU index, when on a GPU
    proc: mp.Process
    conn: object
    ready: bool = False
    started: float = field(default_factory=time.perf_counter)
    trial: optuna.Trial | None = None
    config: dict | None = None
    epochs: int = 0
    last_heartbeat: float = 0.0


class _Pool:
    def __init__(self, n: int, devices: list[tuple[str, int | None]], data_args: dict, threads: int,
                 compile: str = "off"):
        # forkserver: torch is imported once in a clean server process (which never runs a kernel
        # or touches CUDA), and each worker forks from it, so starting and restarting workers is
        # cheap and safe. Workers get this process's environment explicitly: the server's is old.
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["torch", "data", "model", "sweep.worker"])
        self.data_args = data_args
        self.threads = threads
        self.compile = compile
        self.workers: list[_Worker] = []
        for i in range(n):
            self.workers.append(self._spawn(i, *devices[i % len(devices)]))

    def _spawn(self, index: int, device: str, gpu: int | None) -> _Worker:
        from .worker import worker_main

        env = dict(os.environ)
        if gpu is not None:  # the worker sees exactly its GPU (read when CUDA initialises, in the worker)
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, args=(child, self.data_args, self.threads, env, self.compile),
                                daemon=True, name=f"sweep-worker-{index}")
        proc.start()
        child.close()
        return _Worker(index, device, gpu, proc, parent)

    def respawn(self, w: _Worker) -> _Worker:
        with contextlib.suppress(OSError, EOFError, ValueError):
            w.conn.close()
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        fresh = self._spawn(w.index, w.device, w.gpu)
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


def plan_workers(device: str, workers: int | None, gpus: list[int] | None, per_gpu: int | None,
                 compile: str = "off") -> tuple[int, list[tuple[str, int | None]], int]:
    """(number of workers, [(device, gpu index)] they cycle through, torch threads per worker)."""
    import torch

    from model import COMPILE_MODES

    cores = os.cpu_count() or 1
    if workers is not None and workers < 1:
        raise SweepError("--workers must be at least 1")
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if per_gpu is not None and not on_cuda:
        raise SweepError("--per-gpu needs a GPU (CUDA is not available here, or --device is not cuda)")
    if gpus is not None and not on_cuda:
        raise SweepError("--gpus needs CUDA, which is not available here")
    if compile not in COMPILE_MODES:
        raise SweepError(f"--compile must be one of {', '.join(COMPILE_MODES)}, not '{compile}'")
    if compile == "cudagraphs" and not on_cuda:
        raise SweepError("--compile cudagraphs needs CUDA (CUDA is not available here, or --device is not cuda)")
    if on_cuda:
        count = torch.cuda.device_count()
        if gpus is None:
            gpus = [int(device.split(":")[1])] if ":" in device else list(range(count))
        bad = [g for g in gpus if not 0 <= g < count]
        if bad:
            raise SweepError(f"--gpus {','.join(map(str, bad))}: only {count} GPU(s) here")
        k = per_gpu or 1
        n = workers if workers is not None else len(gpus) * k
        slots = [("cuda", g) for _ in range(k) for g in gpus]
        return n, slots, max(1, cores // n)
    dev = "cpu" if device == "auto" and not _mps() else ("mps" if device == "auto" else device)
    n = workers if workers is not None else 1
    # Workers split the cores: oversubscribed threads measured 26-44% slower here.
    return n, [(dev, None)], max(1, cores // n)


def _mps() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


# ---------------------------------------------------------------- the coordinator


def run_sweep(spec: StudySpec, data: Dataset, storage, *, trials: int, name: str | None = None,
              add: bool = False, device: str = "auto", timeout_s: float | None = None,
              seed: int | None = None, progress: bool = True, workers: int | None = None,
              gpus: list[int] | None = None, per_gpu: int | None = None,
              data_args: dict | None = None, artifact_dir: str | None = None, keep_top: int = 3,
              compile: str = "off") -> RunSummary:
    """Run trials until the study holds its budget of finished ones (`trials`, or `trials` more with `add`)."""
    name = name or spec.name
    seed = spec.seed if seed is None else seed
    n_workers, slots, threads = plan_workers(device, workers, gpus, per_gpu, compile)
    study = open_study(spec, data, storage, name, seed)
    recover_abandoned(study)
    dists = distributions(spec)

    with budget_lock(storage, name):
        already = count_finished(study)
        target = already + trials if add else trials
        size = grid_size(spec)
        stopped_by = "budget"
        if size is not None and target > size:
            target, stopped_by = max(size, already), "grid"
        study.set_user_attr("target_trials", target)

    if data_args is None:  # the workers load the same data the coordinator did (from the cache)
        d = spec.data
        data_args = {"source": data.source, "split": data.split, "n_images": d.n_images,
                     "val_fraction": d.val_fraction, "seed": d.seed, "paper_n_train": d.paper_n_train}
    coordinator = _Coordinator(study, spec, dists, seed, target, timeout_s, progress)
    coordinator.compile = compile
    if artifact_dir is not None and keep_top > 0:
        coordinator.keep_weights(artifact_dir, keep_top)
    coordinator.stopped_by = stopped_by
    with InterruptOnce():
        pool = None
        clean = False
        try:
            pool = _Pool(n_workers, slots, data_args, threads, compile)
            coordinator.loop(pool, data.content_hash)
            clean = True
        except KeyboardInterrupt:
            if pool is not None:
                pool.close(graceful=False)  # stop the training now; the trials are failed below
            coordinator.fail_all_running("interrupted (Ctrl-C or SIGTERM)")
            raise Interrupted() from None
        except BaseException:
            if pool is not None:
                pool.close(graceful=False)
            coordinator.fail_all_running("the coordinator stopped on an error")
            raise
        finally:
            if pool is not None and clean:
                pool.close()
            if coordinator.bar:
                coordinator.bar.close()
    return coordinator.summary(name)


class _Coordinator:
    def __init__(self, study, spec, dists, seed, target, timeout_s, progress):
        self.study, self.spec, self.dists, self.seed = study, spec, dists, seed
        self.target, self.timeout_s = target, timeout_s
        self.run_id = uuid.uuid4().hex[:12]
        self.started = time.perf_counter()
        self.ran = 0
        self.consecutive_failures = 0
        self.stopped_by = "budget"
        self.compile = "off"  # the workers' engine option, recorded with each trial
        self.oom_waiting: dict[int | None, optuna.Trial] = {}  # gpu -> trial to retry alone there
        self.oom_retried: set[int] = set()
        self.pruned: set[int] = set()  # trials the pruner stopped
        self.configs: dict[int, dict] = {}  # trial number -> its TrainConfig, for retries
        self.last_stale_check = 0.0
        best = self._best()
        self.bar = Progress(target, count_finished(study), best[0]) if progress else None

    # ---- weights of the best trials

    def keep_weights(self, artifact_dir: str, keep_top: int) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        path = os.path.abspath(artifact_dir)
        os.makedirs(path, exist_ok=True)
        self.artifact_store = FileSystemArtifactStore(path)
        self.keep_top = keep_top
        with budget_lock(self.study._storage, self.study.study_name):
            if self.study.user_attrs.get("artifact_dir") != path:
                self.study.set_user_attr("artifact_dir", path)

    def _save_if_top(self, w: _Worker, trial: optuna.Trial, value: float) -> None:
        """Upload the weights of a trial that ranks in the top K, before it is told (Optuna
        refuses artifacts on finished trials); drop the files of trials pushed out of the top K."""
        if getattr(self, "artifact_store", None) is None:
            return
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        better = sum(t.value > value for t in done)
        if better >= self.keep_top:
            return
        from optuna.artifacts import upload_artifact

        tmp = os.path.join(self.artifact_store._base_path, f".weights-{self.run_id}-{trial.number}.pt")
        w.conn.send(("save", trial.number, tmp))
        reply = w.conn.recv()
        if reply[0] != "saved" or reply[2] is None:
            return
        try:
            artifact_id = upload_artifact(artifact_store=self.artifact_store, file_path=tmp, study_or_trial=trial,
                                          mimetype="application/x-pytorch")
            trial.set_user_attr("weights_artifact", artifact_id)
        finally:
            os.remove(tmp)
        ranked = sorted(done, key=lambda t: (-t.value, t.number))
        for t in ranked[self.keep_top - 1:]:  # with this trial in, these fall out of the top K
            aid = t.user_attrs.get("weights_artifact")
            if aid and t.value < value:
                try:
                    self.artifact_store.remove(aid)
                except Exception:  # noqa: BLE001 - already removed (ArtifactNotFound) or gone
                    pass

    # ---- budget

    def _out_of_time(self) -> bool:
        if self.timeout_s is not None and time.perf_counter() - self.started >= self.timeout_s:
            self.stopped_by = "timeout"
            return True
        return False

    def _ask(self) -> optuna.Trial | None:
        """A new trial if the study's budget allows one, counting every process's running trials."""
        with budget_lock(self.study._storage, self.study.study_name):
            target = int(self.study.user_attrs.get("target_trials", self.target))
            self.target = target
            trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if len(trials) >= target:
                return None
            with warnings.catch_warnings():
                # Optuna warns that heartbeats expect Study.optimize: here the coordinator writes them.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.study.ask(self.dists)
            self.study._storage.record_heartbeat(trial._trial_id)
        return trial

    # ---- the loop

    def loop(self, pool: _Pool, data_hash: str) -> None:
        while True:
            self._check_stale()
            for w in pool.workers:
                if w.ready and w.trial is None:
                    self._dispatch(pool, w)
            busy = [w for w in pool.workers if w.trial is not None]
            finished = count_finished(self.study)
            if not busy:
                if finished >= self.target or (self._out_of_time() and not self.oom_waiting):
                    return
                if all(w.ready for w in pool.workers):
                    # Nothing runs here, yet the budget is not met: other processes hold the rest
                    # (or a waiting OOM retry). Wait for them, checking for the dead.
                    time.sleep(min(HEARTBEAT_S, 1.0))
            self._heartbeats(busy)
            handles = {}
            for w in pool.workers:
                handles[w.conn] = w
                handles[w.proc.sentinel] = w
            for h in wait(list(handles), timeout=1.0):
                w = handles[h]
                if w not in pool.workers:
                    continue  # respawned while handling an earlier handle
                if h is w.conn:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._worker_died(pool, w)
                        continue
                    self._handle(pool, w, msg, data_hash)
                elif not w.proc.is_alive():
                    self._worker_died(pool, w)
            for w in list(pool.workers):
                if not w.ready and time.perf_counter() - w.started > WORKER_START_S:
                    raise SweepError(f"worker {w.index} did not start within {WORKER_START_S} s")

    def _dispatch(self, pool: _Pool, w: _Worker) -> None:
        waiting = self.oom_waiting.get(w.gpu)
        if waiting is not None:
            if any(o.trial is not None and o.gpu == w.gpu for o in pool.workers):
                return  # the OOM retry runs alone on its GPU: hold this worker back
            del self.oom_waiting[w.gpu]
            w.config = self.configs[waiting.number]  # the retry may land on another worker
            self._send(w, waiting)
            return
        if self._out_of_time():
            return
        trial = self._ask()
        if trial is None:
            return
        self.ran += 1
        seed = trial.user_attrs.get("seed")
        if not isinstance(seed, int):
            seed = trial_seed(self.seed, trial.number)
        attrs = {"run_id": self.run_id, "host": host(), "pid": os.getpid(), "seed": seed}
        if w.gpu is not None:
            attrs["gpu_index"] = w.gpu
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        try:
            config = self.spec.config_for(trial.params, seed)
        except ValueError as e:
            self._finish_fail(trial, f"invalid configuration: {e}")
            return
        w.config = self.configs[trial.number] = config.to_dict()
        self._send(w, trial)

    def _send(self, w: _Worker, trial: optuna.Trial) -> None:
        w.trial, w.epochs, w.last_heartbeat = trial, 0, time.perf_counter()
        trial.set_user_attr("worker", w.index)
        trial.set_user_attr("worker_pid", w.proc.pid)
        try:
            w.conn.send(("train", trial.number, w.config, w.device))
        except (OSError, ValueError):
            pass  # the death shows up on the sentinel next round

    def _heartbeats(self, busy: list[_Worker]) -> None:
        now = time.perf_counter()
        for w in busy:
            if now - w.last_heartbeat >= HEARTBEAT_S:
                self.study._storage.record_heartbeat(w.trial._trial_id)
                w.last_heartbeat = now

    def _check_stale(self) -> None:
        now = time.perf_counter()
        if now - self.last_stale_check >= HEARTBEAT_S:
            optuna.storages.fail_stale_trials(self.study)
            self.last_stale_check = now

    def _handle(self, pool: _Pool, w: _Worker, msg: tuple, data_hash: str) -> None:
        kind = msg[0]
        if kind == "ready":
            if msg[2] != data_hash:
                raise SweepError("a worker loaded different data than the coordinator (the file changed?)")
            w.ready = True
            return
        trial = w.trial
        if trial is None or (msg[1] is not None and msg[1] != trial.number):
            if kind == "error" and msg[1] is None:
                raise SweepError(msg[2])
            if kind == "epoch":
                w.conn.send("prune")  # not a trial we run (any more): never leave a worker waiting
            return
        if kind == "epoch":
            record = msg[2]
            w.epochs = record["epoch"]
            trial.report(record["val_acc"], record["epoch"])
            if self.bar:
                self.bar.epoch(trial.number, record["epoch"], w.config["epochs"], record["val_acc"])
            prune = trial.should_prune()
            if prune:
                self.pruned.add(trial.number)
            w.conn.send("prune" if prune else "go")
        elif kind == "done":
            self._finish(trial, msg[2], w)
            w.trial = None
        elif kind == "oom":
            w.trial = None
            if trial.number in self.oom_retried:
                self._finish_fail(trial, "oom")
            else:
                self.oom_retried.add(trial.number)
                trial.set_user_attr("oom_retry", True)
                self.oom_waiting[w.gpu] = trial
        elif kind == "error":
            w.trial = None
            self._finish_fail(trial, msg[2])

    def _worker_died(self, pool: _Pool, w: _Worker) -> None:
        code = w.proc.exitcode if not w.proc.is_alive() else None
        w.proc.join(1)
        code = w.proc.exitcode if code is None else code
        trial = w.trial
        pool.respawn(w)
        if trial is None:
            if not w.ready:
                raise SweepError(f"a worker died while starting (exit code {code})")
            return
        reason = f"worker died (exit code {code}, signal {-code})" if code is not None and code < 0 else \
            f"worker died (exit code {code})"
        frozen = self.study._storage.get_trial(trial._trial_id)
        trial.set_user_attr("fail_reason", reason)
        self.study.tell(trial, state=TrialState.FAIL)
        requeue(self.study, frozen, reason)
        self._progress(trial.number, TrialState.FAIL, None, reason)

    # ---- telling

    def _finish(self, trial: optuna.Trial, result: dict, w: _Worker) -> None:
        pruned = trial.number in self.pruned
        attrs = {
            "val_acc": result["val_acc"],
            "best_val_acc": result["best_val_acc"],
            "train_s": round(result["train_s"], 3),
            "images_per_s": round(result["images_per_s"], 1),
            "epochs_run": result["epochs_run"],
            "stop_reason": "pruned" if pruned else result["stop_reason"],
            "n_params": result["n_params"],
            "device": result["device"],
            "device_name": result["device_name"],
            "precision": result["precision"],
            "compile": self.compile,
            "data_name": self.study.user_attrs.get("data_name"),
            "data_hash": self.study.user_attrs.get("data_hash"),
            "versions": versions_line(),
            "git_commit": git_commit(),
            "val_confusion": json.dumps(result["val_confusion"]),
            "call_s": round(result["call_s"], 3),
        }
        if result["test_acc"] is not None:
            attrs["test_acc"] = result["test_acc"]
            attrs["test_confusion"] = json.dumps(result["test_confusion"])
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if result["stop_reason"] == "diverged":
            # A hyperparameter's honest outcome, not a crash: it counts and steers the sampler away.
            trial.set_user_attr("fail_reason", "diverged: non-finite training loss")
            if result["epochs_run"] not in self.study._storage.get_trial(trial._trial_id).intermediate_values:
                trial.report(result["val_acc"], result["epochs_run"])
            self._tell(trial, TrialState.PRUNED, result["val_acc"], "diverged")
        elif pruned:
            self._tell(trial, TrialState.PRUNED, result["val_acc"], f"pruned at epoch {result['epochs_run']}")
        elif not math.isfinite(result["val_acc"]):
            self._finish_fail(trial, "non-finite validation accuracy")
        else:
            self._save_if_top(w, trial, result["val_acc"])
            self._tell(trial, TrialState.COMPLETE, result["val_acc"], "")

    def _tell(self, trial, state, value, note):
        if state == TrialState.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)
        self.consecutive_failures = 0
        self._progress(trial.number, state, value, note)

    def _finish_fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason[:500])
        self.study.tell(trial, state=TrialState.FAIL)
        self.consecutive_failures += 1
        self._progress(trial.number, TrialState.FAIL, None, reason)
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{self.consecutive_failures} trials failed in a row (last: {reason}); stopping the sweep")

    def fail_all_running(self, reason: str) -> None:
        """On Ctrl-C: this run's RUNNING trials become FAIL with the reason, never left RUNNING."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("run_id") != self.run_id:
                continue
            try:
                self.study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
                self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

    def _progress(self, number, state, value, note) -> None:
        if self.bar:
            self.bar.done = count_finished(self.study)
            self.bar.total = self.target
            self.bar.best = self._best()[0]
            t = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, number))
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else 0.0
            self.bar.trial_done(number, state.name, value, seconds, note)

    def _best(self) -> tuple[float | None, int | None]:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None, None
        t = max(done, key=lambda t: t.value)
        return t.value, t.number

    def summary(self, name: str) -> RunSummary:
        trials = self.study.get_trials(deepcopy=False)
        by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
        best_value, best_number = self._best()
        return RunSummary(name, self.target, count_finished(self.study), self.ran, by_state[TrialState.COMPLETE],
                          by_state[TrialState.PRUNED], by_state[TrialState.FAIL], best_value, best_number,
                          self.stopped_by)
