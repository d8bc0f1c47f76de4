"""`sweep`: hyperparameter sweeps of the paper's facial-emotion CNN, stored in Optuna."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from data import SYNTHETIC, DataError, find_fer2013, load_dataset

from . import limits, numbers, paths, streams
from .errors import SweepError
from .proxy import DEFAULT_CONNECTIONS, DEFAULT_PORT
from .storage import DEFAULT_STORAGE, MAX_STUDY_NAME, check_storage, mask, normalize, open_storage
from .study_file import StudySpec, load_study_file
from .usage import OneLineUsage

app = typer.Typer(cls=OneLineUsage, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)

StorageOpt = Annotated[str, typer.Option("--storage", metavar="URL",
                                         help="Optuna storage: sqlite:///FILE, a file path, postgresql://USER@HOST/DB, or grpc://HOST:PORT (a `sweep proxy`).")]
ServedStorageOpt = Annotated[str, typer.Option("--storage", metavar="URL",
                                               help="The database to serve: sqlite:///FILE, a file path or postgresql://USER@HOST/DB (not another proxy's grpc://).")]
StoredStudyOpt = Annotated[Optional[str], typer.Option("--study", metavar="NAME",
                                                       help="A study in the storage, as `sweep studies` lists it [default: the only one].")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[Optional[int], typer.Option(parser=numbers.option(int), metavar="N", help="Worker processes training at once [default: one per GPU, or 1].")]
GpusOpt = Annotated[Optional[str], typer.Option(metavar="LIST", help="GPU indices to use, e.g. 0,1 [default: all].")]
PerGpuOpt = Annotated[Optional[int], typer.Option(parser=numbers.option(int, 1), metavar="K", help="Worker processes on each GPU [default: 1].")]
TimeoutOpt = Annotated[Optional[float], typer.Option(parser=numbers.option(float, 0), metavar="SECONDS", help="Start no new trial after this many seconds.")]
KeepTopOpt = Annotated[int, typer.Option(parser=numbers.option(int, 0), metavar="K", help="Keep the weights of the K best trials; 0 keeps none.")]
CompileOpt = Annotated[str, typer.Option(metavar="MODE", help="off, on (torch.compile, once per worker) or cudagraphs (CUDA only); speed only, see docs/benchmarks.md.")]
EngineOpt = Annotated[str, typer.Option(metavar="plain|auto|graph[:K]|multi[:K]|fused[:K]", help="How a worker trains: plain, one trial at a time; graph, up to K trials (4) of any hyperparameters side by side, each trial's step replayed as one CUDA graph (eager on a CPU); multi, the same without graphs; fused, up to K trials (16) that share batch size, width, optimizer and precision as one network; auto, on a GPU the fastest of these as each worker measures it at its start (plain elsewhere). See docs/engines.md.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress: only warnings, errors (one line each) and the final summary line.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (keys in docs/results.md) instead of text.")]


def _version(value: bool) -> None:
    if value:
        import re

        from .provenance import DISTRIBUTION, git_commit, sweep_version

        commit = git_commit()  # in a checkout: its HEAD (+dirty); anything else names no commit
        at = f" (commit {commit})" if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{7,64}(\+dirty)?", commit) else ""
        typer.echo(f"{DISTRIBUTION} {sweep_version()}{at}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the distribution, its version and, in a checkout, the commit; then exit.")] = False) -> None:
    """Hyperparameter sweeps of the facial-emotion CNN of Qu, Dhakal & Carrillo (2023) on FER2013,
    stored in Optuna.

    Start with `sweep run`; then look with `sweep studies`, `sweep best`, `sweep dashboard`,
    `sweep export` and `sweep report`."""


def _say(text: str, err: bool = False) -> None:
    """Text made of what a storage holds (names, attributes): each line with its control and
    invisible characters written out, as a study name given to `sweep run` may not hold them."""
    typer.echo("\n".join(limits.printable(line) for line in text.split("\n")), err=err)


def _fail(message: str, code: int = 2):
    typer.echo(f"sweep: error: {limits.printable(message)}", err=True)
    raise typer.Exit(code)


_interrupted_said = False


def _say_interrupted(line: str):
    """The one line for an interrupted command, then exit 130."""
    global _interrupted_said
    _interrupted_said = True
    typer.echo(line, err=True)
    raise typer.Exit(130)


def _check_torch() -> None:
    """A torch older than the oldest tested fails in one line, before anything is read or written."""
    from .provenance import torch_too_old

    line = torch_too_old()
    if line is not None:
        raise SweepError(line)


def _import_torch() -> None:
    """Import torch with Ctrl-C and SIGTERM held back: an interrupt that lands inside torch's C++
    import code aborts the whole process (a C++ terminate, exit -6) instead of raising. A signal
    that came meanwhile is acted on right after."""
    _check_torch()
    import signal

    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        importlib.import_module("torch")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt


def _check_device(device: str) -> None:
    """A device that is not here fails before anything is read or written. torch is imported only
    where a GPU may be asked for: on the CPU a coordinator trains nothing itself (its workers do),
    and importing torch cost it 1.5 s of start-up."""
    _check_torch()
    from .pool import gpu_possible

    if device == "cpu" or (device == "auto" and not gpu_possible()):
        return
    _import_torch()
    from model import resolve_device

    try:
        resolve_device(device)
    except ValueError as e:
        raise SweepError(str(e)) from None


def friendly(fn):
    """Bad input ends as one line on stderr and exit 2, never a traceback. A storage that turns
    out damaged while it is read ends the same way (commands that write check it before)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import sqlite3

        from sqlalchemy.exc import DatabaseError

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM before a command's own handling took over
            _say_interrupted("sweep: interrupted")
        except (SweepError, DataError) as e:
            _fail(str(e))
        except BrokenPipeError:  # a pipe to a process of sweep's own (its output streams never raise it)
            _fail("a pipe to one of this command's own processes broke: the process at its other end died")
        except (DatabaseError, sqlite3.DatabaseError) as e:
            first = str(getattr(e, "orig", e) or type(e).__name__).strip().splitlines()[0]
            _fail(f"the storage cannot be read: {mask(first)[:300]} (damaged, or not an Optuna storage)")
        except Exception as e:
            from .proxy import lost_proxy_line

            from .storage import storage_error_line

            line = lost_proxy_line(e) or storage_error_line(e)
            if line is None:
                raise
            _fail(line)
    return wrapper


def _resolve(study: Optional[str], data: Optional[str]) -> tuple[StudySpec, str, str | None]:
    """The study file and data source a `sweep run` uses, and a notice to show once the other
    arguments are checked."""
    if study is None:
        if data is None:
            found = find_fer2013()
            if found is None:
                return load_study_file("quick"), SYNTHETIC, (
                    "No FER2013 at data/fer2013.csv[.gz] or $SWEEP_DATA: running the 'quick' study on the "
                    "built-in synthetic data set instead.")
            return load_study_file("default"), str(found), None
        return load_study_file("quick" if data == SYNTHETIC else "default"), data, None
    spec = load_study_file(study)
    if data is not None:
        return spec, data, None
    if spec.data.source == "fer2013":
        found = find_fer2013()
        if found is None:
            raise SweepError(f"study '{spec.name}' runs on FER2013: put fer2013.csv (or .csv.gz) in data/, "
                             "set $SWEEP_DATA, or pass --data PATH")
        return spec, str(found), None
    return spec, spec.data.source, None


@app.command(short_help="Run a sweep until the study holds --trials finished trials.")
@friendly
def run(
    trials: Annotated[int, typer.Option(parser=numbers.option(int, 1), metavar="N", help="Finished trials (complete + pruned) the study should hold: the study's budget, not this process's.")] = 50,
    study: Annotated[Optional[str], typer.Option(metavar="FILE|NAME", help="Study file: a .toml path, or a shipped name (quick, default, paper, beyond) [default: default with FER2013 in place, else quick].")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Name of the study in the storage [default: the study file's name].")] = None,
    data: Annotated[Optional[str], typer.Option(metavar="PATH|synthetic", help="FER2013 file or image folder, or 'synthetic' [default: the study file's; fer2013 is data/fer2013.csv[.gz] or $SWEEP_DATA].")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
    seed: Annotated[Optional[int], typer.Option(parser=numbers.option(int), metavar="N", help="Study seed [default: the study file's].")] = None,
    add: Annotated[bool, typer.Option("--add", help="Run --trials more on top of those already finished.")] = False,
    workers: WorkersOpt = None,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = None,
    artifact_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="Where the best trials' weights are kept [default: NAME-artifacts/ beside a SQLite file NAME.db, else ./artifacts].")] = None,
    keep_top: KeepTopOpt = 3,
    compile: CompileOpt = "off",
    engine: EngineOpt = "plain",
    quiet: QuietOpt = False,
):
    """Run a sweep until the study holds --trials finished trials.

    A rerun of the same command resumes and never overshoots; Ctrl-C marks the running trials FAIL
    and exits 130."""
    streams.incidental()  # the training and what it stores are the point, not the closing line
    from .locks import budget_lock, sqlite_writer_lock
    from .pool import fork_server
    from .runner import Interrupted, plan_workers, refuse_foreign, run_sweep

    limits.options(trials=trials, seed=seed, workers=workers, per_gpu=per_gpu, timeout=timeout, keep_top=keep_top,
                   name=name, study=study, data=data, storage=storage, artifact_dir=artifact_dir)
    spec, source, notice = _resolve(study, data)
    if name is None:  # the study file's name is the study's
        limits.name(f"study file {spec.path!r}", spec.name)
    if name is not None and not name.strip():
        raise SweepError("--name: a study name cannot be empty")
    if name is not None and len(name) > MAX_STUDY_NAME:
        raise SweepError(f"--name: {len(name)} characters; a study name holds at most {MAX_STUDY_NAME}")
    _check_device(device)
    gpu_list = _parse_gpus(gpus)
    plan_workers(device, workers, gpu_list, per_gpu, compile, engine)  # bad options fail before anything is read or written
    url = normalize(storage)
    check_storage(url, create=True)
    if keep_top > 0:  # a file where the weights' folder belongs is refused before the storage is written
        paths.folder(Path(artifact_dir or _default_artifact_dir(url)), "--artifact-dir ")
    if notice:  # only once the arguments are known to be good: one mistake, one line
        typer.echo(notice, err=True)
    with fork_server():  # the workers' torch loads while the data and the storage do
        dataset = load_dataset(source, spec.data.split, n_images=spec.data.n_images,
                               val_fraction=spec.data.val_fraction, seed=spec.data.seed,
                               paper_n_train=spec.data.paper_n_train)
        d = dataset.describe()
        banner = (f"study '{name or spec.name}' ({spec.path}) on {d['data_name']} [{d['data_source']}, "
                  f"{d['split']} split: {d['n_train']} train / {d['n_val']} val / {d['n_test']} test] -> {mask(url)}")
        try:
            with sqlite_writer_lock(url):
                st = open_storage(url, create=True, checked=True)  # checked above, before the data was read
                with budget_lock(st, name or spec.name):  # a run creating the study holds it until it is whole
                    found = next((x for x in st.get_all_studies() if x.study_name == (name or spec.name)), None)
                if found is not None:  # another tool's study: refused before a word of the run is said
                    refuse_foreign(st, found)
                if not quiet:
                    typer.echo(banner, err=True)
                summary = run_sweep(spec, dataset, st, trials=trials, name=name, add=add, device=device,
                                    timeout_s=timeout, seed=seed, workers=workers, gpus=gpu_list, per_gpu=per_gpu,
                                    artifact_dir=artifact_dir or _default_artifact_dir(url), keep_top=keep_top,
                                    compile=compile, engine=engine, announce=lambda line: typer.echo(line, err=True),
                                    progress=not quiet)
        except Interrupted:
            _say_interrupted("sweep: interrupted; trials in training were marked FAIL, trials not yet trained wait "
                             "for the next run. Run the same command to resume.")
    best = (f"best val {summary.best_value:.2%} (trial {summary.best_number})"
            if summary.best_value is not None else "no complete trial")
    stop = {"timeout": " (stopped by --timeout)", "grid": " (the grid is exhausted)"}.get(summary.stopped_by, "")
    typer.echo(f"study '{summary.study_name}': {_finished(summary)}{stop} "
               f"({summary.complete} complete, {summary.pruned} pruned, {summary.failed} failed); {best}")
    if not quiet:
        typer.echo(f"browse it: {how_to_call()} dashboard{'' if storage == DEFAULT_STORAGE else ' --storage ' + mask(url)}")


def _finished(summary) -> str:
    """'7/10 finished', or, where a lowered budget is below what the study holds, that said plainly."""
    if summary.finished > summary.target:
        return (f"{summary.finished} finished, more than its budget of {summary.target} (the budget is below "
                f"what the study holds{'; nothing was run' if not summary.ran else ''})")
    return f"{summary.finished}/{summary.target} finished"


def how_to_call() -> str:
    """How to run sweep again from this shell: `sweep` where that is this command on PATH, else the
    command as it was invoked (`.venv/bin/sweep` after the README's set-up, or `python -m sweep`)."""
    import os
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    if name == "__main__.py":  # python -m sweep
        exe = sys.executable
        rel = os.path.relpath(exe)
        return f"{rel if not rel.startswith('..') else exe} -m sweep"
    if name != "sweep":  # called from Python (a test, a notebook): the plain name
        return "sweep"
    found = shutil.which("sweep")
    try:
        if found and os.path.samefile(found, argv0):
            return "sweep"
    except OSError:
        pass
    return argv0 if os.sep in argv0 else os.path.abspath(argv0)


def _default_artifact_dir(url: str) -> str:
    from .storage import sqlite_path

    path = sqlite_path(url)
    return str(path.with_name(f"{path.stem}-artifacts")) if path is not None else "artifacts"


def _parse_gpus(gpus: Optional[str]) -> Optional[list[int]]:
    if gpus is None:
        return None
    out = numbers.whole_list(gpus, "--gpus", "0,1")
    if min(out) < 0:
        raise SweepError(f"--gpus {gpus}: expected GPU indices like 0,1")
    limits.counts("--gpus", out, limits.MAX_COUNTS - 1)
    return out


@app.command(short_help="Join a stored study and train its trials until its budget is met.")
@friendly
def worker(
    study: Annotated[str, typer.Option(metavar="NAME", help="The study in the storage to join (made by `sweep run`).")],
    storage: StorageOpt = DEFAULT_STORAGE,
    data: Annotated[Optional[str], typer.Option(metavar="PATH", help="The study's data on this machine [default: the path the study recorded].")] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = None,
    timeout: TimeoutOpt = None,
    artifact_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="Where the best trials' weights are kept [default: the study's].")] = None,
    keep_top: KeepTopOpt = 3,
    compile: CompileOpt = "off",
    engine: EngineOpt = "plain",
    quiet: QuietOpt = False,
):
    """Join a stored study (made by `sweep run`) and train its trials until its budget is met."""
    streams.incidental()  # the training and what it stores are the point, not the closing line
    from .locks import sqlite_writer_lock
    from .pool import fork_server
    from .attrs import study_attrs
    from .runner import Interrupted, plan_workers, run_sweep
    from .stored import pick_study, require_sweep_study, spec_and_data

    limits.options(workers=workers, per_gpu=per_gpu, timeout=timeout, keep_top=keep_top, data=data, storage=storage,
                   artifact_dir=artifact_dir)
    url = normalize(storage)
    _check_device(device)
    gpu_list = _parse_gpus(gpus)
    plan_workers(device, workers, gpu_list, per_gpu, compile, engine)
    with fork_server():  # the workers' torch loads while the storage and the data do
        st = open_storage(url, create=False)
        s = pick_study(st, study)
        require_sweep_study(s, "sweep worker")
        attrs = study_attrs(s.user_attrs)  # what another client rewrote into something else counts as missing
        if "target_trials" not in attrs:
            raise SweepError(f"study '{study}' records no budget (it was never run, or another client rewrote it); "
                             "set one with sweep run --trials N")
        spec, dataset = spec_and_data(s, data, "sweep worker")
        if keep_top > 0:
            paths.folder(Path(artifact_dir or attrs.get("artifact_dir") or _default_artifact_dir(url)), "--artifact-dir ")
        if not quiet:
            _say(f"joining study '{study}' in {mask(url)}: budget {attrs['target_trials']} finished trials", err=True)
        try:
            with sqlite_writer_lock(url):
                summary = run_sweep(spec, dataset, st, trials=attrs["target_trials"], name=study, device=device,
                                    timeout_s=timeout, seed=attrs.get("seed", spec.seed), workers=workers,
                                    gpus=gpu_list, per_gpu=per_gpu, keep_top=keep_top, compile=compile, engine=engine,
                                    artifact_dir=artifact_dir or attrs.get("artifact_dir") or _default_artifact_dir(url),
                                    progress=not quiet)
        except Interrupted:
            _say_interrupted("sweep: interrupted; trials in training were marked FAIL, trials not yet trained wait "
                             "for the next run.")
    _say(f"study '{study}': {_finished(summary)}; this worker ran {summary.ran}")


@app.command(short_help="List the studies in a storage with their progress and best value.")
@friendly
def studies(storage: StorageOpt = DEFAULT_STORAGE, json_out: JsonOpt = False):
    """List the studies in a storage: finished trials against the budget, trials by state, the best value."""
    from .stored import study_rows

    limits.options(storage=storage)
    rows = study_rows(open_storage(storage, create=False))
    if json_out:
        from .attrs import dumps

        out = [{"study": r["study"], "data": r["data"], "budget": r["budget"], "finished": r["complete"] + r["pruned"],
                **{k: r[k] for k in ("complete", "pruned", "failed", "running", "training", "waiting", "best_value",
                                     "objective", "direction")}}
               for r in rows]
        typer.echo(dumps(out, indent=2))
        return
    if not rows:
        typer.echo(f"no studies in {mask(normalize(storage))}")
        return
    header = (f"{'study':<24} {'data':<10} {'finished':>9} {'complete':>8} {'pruned':>7} {'failed':>7} "
              f"{'training':>8} {'waiting':>7} {'best':>12}")
    typer.echo(header)
    for r in rows:
        what = r["shown"]  # sweep's val accuracy in %; another tool's objective as a number, its direction beside
        best = "-" if what is None or r["best_value"] is None else what.show(r["best_value"]) + (
            "" if what.accuracy else f" ({what.direction[:3]})")
        finished = f"{r['complete'] + r['pruned']}/{r['budget'] if r['budget'] is not None else '-'}"
        _say(f"{limits.printable(r['study']):<24} {limits.printable(r['data'] or ('?' if r['by_sweep'] else '-')):<10} {finished:>9} {r['complete']:>8} {r['pruned']:>7} "
                   f"{r['failed']:>7} {r['training']:>8} {r['waiting']:>7} {best:>12}")


@app.command(short_help="Print a study's best trial: value, parameters, how it was measured.")
@friendly
def best(
    study: StoredStudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    json_out: JsonOpt = False,
):
    """Print the best trial of a study: value, parameters and how it was measured."""
    from .stored import best_record, best_trial_lines, pick_study

    limits.options(storage=storage)
    s = pick_study(open_storage(storage, create=False), study)
    if json_out:
        from .attrs import dumps

        typer.echo(dumps(best_record(s), indent=2))
        return
    _say("\n".join(best_trial_lines(s)))


@app.command(short_help="Serve a database to many workers through Optuna's gRPC storage proxy.")
@friendly
def proxy(
    storage: ServedStorageOpt = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind. Anything but localhost lets the network read and write the studies: no password, no encryption (the command says so as it starts); bind to the cluster's private network only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", parser=numbers.option(int, 1, 65535), metavar="PORT", help="TCP port.")] = DEFAULT_PORT,
    connections: Annotated[int, typer.Option(parser=numbers.option(int, 4, 1000), metavar="N", help="Database connections the proxy may hold at most, however many workers use it.")] = DEFAULT_CONNECTIONS,
):
    """Serve a storage to many workers: they pass --storage grpc://HOST:PORT and the database sees one
    process. Keeps each study's budget exact, records the workers' heartbeats and re-queues the trials
    of workers that died, as directly connected workers do."""
    from .proxy import serve

    limits.options(storage=storage, host=host)
    try:
        serve(storage, host, port, connections, lambda line: typer.echo(line, err=True))
    except KeyboardInterrupt:
        raise typer.Exit(0)


@app.command(short_help="Serve optuna-dashboard on a storage, with the kept weights.")
@friendly
def dashboard(
    storage: StorageOpt = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind. Anything but localhost serves every study in the storage, and the kept weights to download, to the network: no password, no encryption (the command says so as it starts).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", parser=numbers.option(int, 1, 65535), metavar="PORT", help="TCP port.")] = 8080,
    artifact_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="The kept weights to show [default: the folder the storage's studies recorded].")] = None,
):
    """Serve optuna-dashboard on a study storage (safe while a sweep writes it)."""
    from .dashboard import serve

    limits.options(storage=storage, host=host, artifact_dir=artifact_dir)
    try:
        serve(storage, host, port, artifact_dir, lambda line: _say(line, err=True))
    except KeyboardInterrupt:
        raise typer.Exit(0)


def _write(text: str, output: Optional[Path]) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise SweepError(f"cannot write {output}: {e.strerror or e}") from None
    typer.echo(f"wrote {output}", err=True)


@app.command(short_help="Print the best-params table (md, csv, latex, json, html).")
@friendly
def export(
    study: StoredStudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="csv, md, latex, json or html.")] = "md",
    top: Annotated[int, typer.Option(parser=numbers.option(int, 1), metavar="K", help="How many of the best complete trials.")] = 10,
    by: Annotated[Optional[str], typer.Option(metavar="PARAM", help="The best trial for each value of this parameter, e.g. optimizer.")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="Add each class's val accuracy (recall).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write here instead of to standard output.")] = None,
):
    """Export the best-params table: rank, trial, parameters, val/test accuracy, train seconds, device."""
    from .export import FORMATS, render, select
    from .results import load_results
    from .stored import pick_study

    if format not in FORMATS:
        raise SweepError(f"unknown format '{format}' (choose from {', '.join(FORMATS)})")
    limits.options(top=top, storage=storage, output=output)
    if output is not None:  # before the storage is read: a FIFO nobody reads would wait forever
        paths.output_file(output, "-o ")
    res = load_results(pick_study(open_storage(storage, create=False), study), intermediate=False)
    _write(render(res, select(res, top, by), format, per_class), output)


@app.command(short_help="Write a self-contained HTML report of one or more studies.")
@friendly
def report(
    study: Annotated[Optional[list[str]], typer.Option(metavar="NAME", help="A study in the storage; repeat to put studies side by side [default: the only one].")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="The HTML file to write.")] = Path("report.html"),
):
    """Write a self-contained HTML report (opens offline): plots, confusion matrix, best-params table."""
    from .report import build_report
    from .stored import pick_study

    limits.options(studies=study or [], storage=storage, output=output)
    paths.output_file(output, "-o ")  # before the report is built: seconds, for nothing
    st = open_storage(storage, create=False)
    studies = [pick_study(st, name) for name in (study or [None])]
    _write(build_report(studies), output)


@app.command(short_help="Measure training speed against a baseline in the same run.")
@friendly
def bench(
    steps: Annotated[int, typer.Option(parser=numbers.option(int, 2), metavar="N", help="Training steps per measurement.")] = 20,
    batch_size: Annotated[int, typer.Option(parser=numbers.option(int, 2), metavar="N", help="Images per step.")] = 128,
    width: Annotated[float, typer.Option(parser=numbers.option(float, 0.01), metavar="W", help="Network width; 1.0 is the paper's network.")] = 1.0,
    repeats: Annotated[int, typer.Option(parser=numbers.option(int, 1), metavar="N", help="Alternating repeats of what is compared.")] = 3,
    data: Annotated[Optional[str], typer.Option(metavar="PATH", help="FER2013 file to draw the images from [default: synthetic].")] = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = "off",
    pack: Annotated[Optional[str], typer.Option(metavar="LIST", help="Instead: images/s of K trials trained at once in K processes on the device, for each K in a list like 1,2,4,8.")] = None,
    fuse: Annotated[Optional[str], typer.Option(metavar="LIST", help="Instead: images/s of K trials fused into one network, for each K in a list like 1,4,16,32, against one plain trial.")] = None,
    multi: Annotated[Optional[str], typer.Option(metavar="LIST", help="Instead: images/s of K trials side by side in one process (--engine multi), for each K in a list like 1,2,4,8, against one plain trial.")] = None,
    graph: Annotated[Optional[str], typer.Option(metavar="LIST", help="Instead: the same with each trial's step replayed as a CUDA graph (--engine graph; eager on a CPU), for each K in a list like 1,2,4,8,16.")] = None,
    window: Annotated[float, typer.Option(parser=numbers.option(float, 0, 600), metavar="S", help="With --fuse, --multi or --graph: seconds timed per figure and round, at least.")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
):
    """Measure training speed: this trainer against a paper-style per-image DataLoader pipeline."""
    limits.options(steps=steps, batch_size=batch_size, width=width, repeats=repeats, data=data)
    _import_torch()
    import json

    from model import check_compile, resolve_device

    from .bench import format_bench, run_bench
    from .bench_many import format_engine, format_pack, run_engine, run_pack

    try:
        check_compile(compile, resolve_device(device))
    except ValueError as e:
        raise SweepError(str(e)) from None
    say = None if json_out else (lambda line: typer.echo(line, err=True))
    if sum(x is not None for x in (pack, fuse, multi, graph)) > 1:
        raise SweepError("--pack, --fuse, --multi and --graph measure different things: give one")
    for engine, ks in (("fused", fuse), ("multi", multi), ("graph", graph)):
        if ks is not None:
            try:
                result = run_engine(engine, _counts(f"--{'fuse' if engine == 'fused' else engine}", ks), steps=steps,
                                    batch_size=batch_size, width=width, repeats=repeats, device=device,
                                    compile=compile, window_s=window, progress=say)
            except ValueError as e:  # an engine option the engine refuses (compile beside graph, say)
                raise SweepError(str(e)) from None
            typer.echo(json.dumps(result.to_dict(), indent=2) if json_out else format_engine(result))
            return
    if pack is not None:
        ks = _counts("--pack", pack)
        packed = run_pack(ks, steps=steps, batch_size=batch_size, width=width, device=device, compile=compile,
                          progress=say)
        typer.echo(json.dumps(packed.to_dict(), indent=2) if json_out else format_pack(packed))
        return
    result = run_bench(steps=steps, batch_size=batch_size, width=width, repeats=repeats, device=device, data=data,
                       compile=compile, progress=say)
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_out else format_bench(result))


def _counts(option: str, text: str) -> list[int]:
    ks = numbers.whole_list(text, option, "1,2,4,8")
    if min(ks) < 1:
        raise SweepError(f"{option} {text}: expected trial counts of at least 1, like 1,2,4,8")
    limits.counts(option, ks, limits.max_workers() if option == "--pack" else limits.MAX_CONCURRENT)
    return ks


@app.command(short_help="Re-train the best trials with new seeds: mean and spread.")
@friendly
def confirm(
    study: StoredStudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    top: Annotated[int, typer.Option(parser=numbers.option(int, 1), metavar="K", help="How many of the best trials to re-train.")] = 3,
    seeds: Annotated[int, typer.Option(parser=numbers.option(int, 1), metavar="N", help="New seeds per trial.")] = 3,
    data: Annotated[Optional[str], typer.Option(metavar="PATH", help="The study's data on this machine [default: the path the study recorded].")] = None,
    device: DeviceOpt = "auto",
):
    """Re-train the top trials with new seeds and record mean and std of val and test accuracy."""
    streams.incidental()  # the training and what it stores are the point, not the closing line
    limits.options(top=top, seeds=seeds, data=data, storage=storage)
    _import_torch()
    from model import resolve_device

    from .confirm import confirm as run_confirm
    from .runner import Interrupted
    from .locks import sqlite_writer_lock
    from .stored import pick_study, spec_and_data

    try:
        resolve_device(device)
    except ValueError as e:
        raise SweepError(str(e)) from None
    url = normalize(storage)
    st = open_storage(url, create=False)
    s = pick_study(st, study)
    spec, dataset = spec_and_data(s, data, "sweep confirm")
    try:
        with sqlite_writer_lock(url):
            records = run_confirm(s, spec, dataset, top=top, seeds=seeds, device=device,
                                  progress=lambda line: typer.echo(line, err=True))
    except Interrupted:
        _say_interrupted("sweep: interrupted; every seed trained so far is recorded. Run the same command to "
                         "train the rest.")
    for r in records:
        test = f", test {r['test_mean']:.2%} +- {r['test_std']:.2%}" if r["test_mean"] is not None else ""
        typer.echo(f"trial {r['trial']}: val {r['val_mean']:.2%} +- {r['val_std']:.2%}{test} over {len(r['seeds'])} seeds")


class _ImagesUsage(typer.core.TyperCommand):
    """Usage: sweep predict [OPTIONS] IMAGE... (Typer writes a required argument as {IMAGE}...,
    typer 0.15 with click 8.1 as IMAGE)."""

    def collect_usage_pieces(self, ctx):
        import re

        return [re.sub(r"^\{?IMAGE\}?(\.\.\.)?$", "IMAGE...", piece) for piece in super().collect_usage_pieces(ctx)]


@app.command(cls=_ImagesUsage, short_help="Emotion probabilities for images, from the best kept weights.")
@friendly
def predict(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", hidden=True)],
    study: StoredStudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Emotion probabilities for images, with the weights of the study's best kept trial.

    IMAGE: one or more image files, any size or colour (each is made 48x48 grayscale and
    equalised, as in training)."""
    limits.options(images=images, storage=storage)
    for image in images:  # before the storage and torch: a FIFO among them would wait forever
        paths.regular_file(Path(image))
    _import_torch()
    import json

    from .predict import SYNTHETIC_NOTE, format_predictions, trained_on
    from .predict import predict as run_predict
    from .stored import pick_study, require_sweep_study

    s = pick_study(open_storage(storage, create=False), study)
    require_sweep_study(s, "sweep predict")
    number, rows = run_predict(s, images)
    data_name = trained_on(s)
    if json_out:
        out = {"trial": number, "trained_on": data_name, "predictions": rows}
        if data_name == "synthetic":
            out["note"] = SYNTHETIC_NOTE
        typer.echo(json.dumps(out, indent=2))
    else:
        _say(format_predictions(number, rows, data_name))


def main() -> None:
    """Run the CLI. Typer turns a Ctrl-C that lands outside a command (while it parses the
    arguments, say) into a silent exit 130: that one gets its line here too."""
    from .streams import output_lost

    try:
        app(prog_name="sweep")
    except SystemExit as e:
        if e.code == 130 and not _interrupted_said:
            typer.echo("sweep: interrupted", err=True)
        if e.code in (0, None) and output_lost():  # what the command was for went nowhere
            typer.echo("sweep: error: standard output is closed, so the output was not written anywhere; "
                       "open it (or write to a file with -o where the command has it)", err=True)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":  # `python -m sweep` is the way in that handles signals from the start
    main()
