"""Every engine against one plain eager trial, in one run: the figures of `benchmarks/gpu.sh engines`.

    python -m benchmarks.engines speed [--device auto] [--width 1.0] [--batch-size 128] [--steps 16]
                                       [--rounds 2] [--window 1.0] [--json FILE]
    python -m benchmarks.engines auto --study STUDY --data FILE [--width W] [--epochs LOW,HIGH]
    python -m benchmarks.engines table OUT_FOLDER

`speed` measures aggregate training images/s (model.engine_speed: whole epochs of every member
between device-wide syncs, windows of `--window` seconds, the median of rounds that alternate the
candidates) of: plain eager (the baseline), plain with `--compile on` and `--compile cudagraphs`
(CUDA only), graph at K = 1, 2, 4, 8, 16, multi at K = 4 and fused at K = 16. `auto` makes the
choice `--engine auto` makes for a study on this device and caches it, so that a timed run of the
study with `--engine auto` trains from its first second. `table` reads what `gpu.sh engines` left
in OUT_FOLDER (profile.json, speed.json, mps.json, auto.json, and the studies plain.db and
auto.db) and prints one markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

CANDIDATES = [("plain", 1, "off"), ("plain", 1, "on"), ("plain", 1, "cudagraphs"), *(("graph", k, "off") for k in
              (1, 2, 4, 8, 16)), ("multi", 4, "off"), ("fused", 16, "off")]


def label(engine: str, k: int, compile: str) -> str:
    if engine == "plain":
        return "plain eager" if compile == "off" else f"plain, --compile {compile}"
    return f"{engine}:{k}"


def key(engine: str, k: int, compile: str) -> str:
    """A case's short name for --skip: plain, compile-on, compile-cudagraphs, graph:4, ..."""
    if engine == "plain":
        return "plain" if compile == "off" else f"compile-{compile}"
    return f"{engine}:{k}"


def speed(args) -> dict:
    import torch

    from data import equalize
    from model import TrainConfig, resolve_device
    from model.engine_speed import measure
    from sweep.bench import bench_data, bench_dataset
    from sweep.provenance import git_commit, versions_line

    dev = resolve_device(args.device)
    raw, labels, name = bench_data(None, args.steps * args.batch_size)
    data = bench_dataset(equalize(raw), labels, name)
    probe = TrainConfig(epochs=2, batch_size=args.batch_size, optimizer="sgd", momentum=0.9, lr=0.01, width=args.width)
    skip = {c.strip() for c in args.skip.split(",") if c.strip()}
    candidates = [c for c in CANDIDATES if (c[2] != "cudagraphs" or dev.type == "cuda") and key(*c) not in skip]
    rounds: dict[str, list] = {}
    for r in range(args.rounds):
        for engine, k, compile in candidates:
            try:
                s = measure(engine, k, data, probe, str(dev), window_s=args.window, compile=compile)
                row = {"images_per_s": s.images_per_s, "join_s": s.join_s}
            except Exception as e:  # noqa: BLE001 - a candidate that fails here is a row that says why
                row = {"images_per_s": 0.0, "join_s": 0.0, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            rounds.setdefault(label(engine, k, compile), []).append(row)
            print(f"round {r + 1}/{args.rounds}: {label(engine, k, compile)} {row['images_per_s']:,.0f} images/s",
                  file=sys.stderr, flush=True)
    rows = []
    for name_, values in rounds.items():
        rows.append({"case": name_, "images_per_s": statistics.median(v["images_per_s"] for v in values),
                     "join_s": statistics.median(v["join_s"] for v in values),
                     "rounds": [v["images_per_s"] for v in values],
                     **({"error": values[-1]["error"]} if "error" in values[-1] else {})})
    base = rows[0]["images_per_s"]
    for row in rows:
        row["vs_plain"] = row["images_per_s"] / base if base > 0 else 0.0
    report = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "width": args.width,
              "batch_size": args.batch_size, "steps": args.steps, "window_s": args.window, "rounds": args.rounds,
              "versions": versions_line(), "git_commit": git_commit(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def auto(args) -> dict:
    """`--engine auto`'s choice for the study on this device, measured now (and cached)."""
    from data import load_dataset
    from model import TrainConfig, choose_engine
    from model.config import FUSE_KEYS
    from sweep.runner import probe_config
    from sweep.sampling import distributions
    from sweep.study_file import load_study_file

    from model import resolve_device

    if resolve_device("auto").type != "cuda":  # as `sweep run` decides: off CUDA auto is plain, unmeasured
        choice = {"engine": "plain", "k": 1, "figures": {}, "cached": False, "note": "off CUDA auto is plain"}
        print(json.dumps(choice))
        if args.json:
            Path(args.json).write_text(json.dumps(choice, indent=2))
        return choice
    spec = load_study_file(args.study)
    d = spec.data
    data = load_dataset(args.data, split=d.split, val_fraction=d.val_fraction, seed=d.seed,
                        paper_n_train=d.paper_n_train)
    probe = TrainConfig(**probe_config(spec, distributions(spec)))
    choice = choose_engine(data, probe, "auto", fusable=not any(k in spec.search for k in FUSE_KEYS))
    print(json.dumps(choice))
    if args.json:
        Path(args.json).write_text(json.dumps(choice, indent=2))
    return choice


def _study_figures(db: Path, seconds: float) -> dict | None:
    """Trials finished (complete or pruned) and epochs trained per minute of the study's run."""
    if not db.exists():
        return None
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    studies = optuna.get_all_study_summaries(storage)
    if not studies:
        return None
    trials = optuna.load_study(study_name=studies[0].study_name, storage=storage).get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    epochs = sum(len(t.intermediate_values) for t in trials)
    engines = sorted({str(t.user_attrs.get("engine")) for t in trials if t.user_attrs.get("engine")})
    return {"finished": finished, "epochs": epochs, "per_min": finished * 60 / seconds,
            "epochs_per_min": epochs * 60 / seconds, "engines": engines}


def table(args) -> str:
    out = Path(args.folder)
    read = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None  # noqa: E731
    sp, prof, mps, choice = read("speed.json"), read("profile.json"), read("mps.json"), read("auto.json")
    seconds = float((out / "study_s").read_text()) if (out / "study_s").exists() else 0.0
    lines = []
    if sp:
        lines.append(f"{sp['device']}, width {sp['width']:g}, batch {sp['batch_size']}; {sp['versions']}; "
                     f"commit {sp['git_commit']}; images/s: median of {sp['rounds']} rounds of >= "
                     f"{sp['window_s']:g} s, every figure against plain eager in the same run")
    lines += ["", "| what | images/s (aggregate) | vs plain eager | note |", "|---|---|---|---|"]
    if prof:
        for c in prof.get("cases", []):
            busy = f"device busy {c['device_busy']:.0%}" if c.get("device_busy") is not None else "CPU: no device time"
            lines.append(f"| profile: {c['case']} | {c['images_per_s']:,.0f} | | {busy}, {c['step_ms']:.2f} ms a step |")
    if sp:
        for r in sp["rows"]:
            note = r.get("error", f"a trial joining costs {r['join_s']:.2f} s")
            lines.append(f"| {r['case']} | {r['images_per_s']:,.0f} | {r['vs_plain']:.2f}x | {note} |")
    if mps:
        rows = {row["k"]: row for row in mps.get("rows", [])}
        if 1 in rows and 4 in rows:
            ratio = rows[4]["aggregate_images_per_s"] / rows[1]["aggregate_images_per_s"]
            lines.append(f"| 4 processes under MPS | {rows[4]['aggregate_images_per_s']:,.0f} | {ratio:.2f}x | "
                         f"against 1 process in the same run |")
    else:
        lines.append("| 4 processes under MPS | - | - | MPS could not start here |")
    plain, chosen = _study_figures(out / "plain.db", seconds), _study_figures(out / "auto.db", seconds)
    what = f"{choice['engine']}:{choice['k']}" if choice else "its choice"
    for name, fig in (("`default` study, plain", plain), (f"`default` study, auto ({what})", chosen)):
        if fig is None:
            lines.append(f"| {name} | - | - | not run |")
            continue
        vs = f"{fig['per_min'] / plain['per_min']:.2f}x" if plain and plain["per_min"] > 0 else "-"
        lines.append(f"| {name} | {fig['per_min']:.2f} trials finished a minute | {vs} | {fig['finished']} finished, "
                     f"{fig['epochs_per_min']:.1f} epochs a minute over {seconds:.0f} s |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--device", default="auto")
    s.add_argument("--width", type=float, default=1.0)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--steps", type=int, default=16)
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--window", type=float, default=1.0)
    s.add_argument("--skip", default="", help="cases to leave out, comma-separated: compile-on, graph:16, ... (a CPU smoke run leaves out compiling)")
    s.add_argument("--json")
    a = sub.add_parser("auto")
    a.add_argument("--study", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--json")
    t = sub.add_parser("table")
    t.add_argument("folder")
    args = p.parse_args(argv)
    {"speed": speed, "auto": auto, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
