"""Study files (`studies/*.toml`): what data, which sampler and pruner, what is searched.

A study file is checked whole before anything runs; every mistake is reported as one line that
names the file and the key, e.g. `studies/x.toml: search.lr: a log range needs low > 0`.

    description = "..."
    seed = 0                      # the study seed: sampler seed, and trial seeds derive from it

    [data]
    source = "synthetic"          # synthetic | fer2013 (data/fer2013.csv[.gz] or $SWEEP_DATA) | a path
    split = "official"            # official | paper | stratified
    n_images = 3000               # synthetic only: how many faces to draw
    seed = 0                      # synthetic generation and the stratified split

    [fixed]                       # hyperparameters held constant (see model/config.py)
    width = 0.125

    [search]                      # hyperparameters searched: a range or a list of choices
    epochs = { low = 2, high = 6 }
    lr = { low = 1e-4, high = 0.3, log = true }
    optimizer = { choices = ["sgd", "adam"] }

    [sampler]                     # tpe (default) | random | grid
    [pruner]                      # none (default) | median | hyperband
    [[enqueue]]                   # trials to run first, e.g. the paper's own setting
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data import SPLITS
from model import HYPERPARAMETERS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, TrainConfig
from model.config import MAX_EPOCHS

from . import limits, paths
from .errors import SweepError

TOP_KEYS = {"description", "seed", "data", "fixed", "search", "sampler", "pruner", "enqueue"}
DATA_KEYS = {"source", "split", "n_images", "seed", "val_fraction", "paper_n_train"}
SAMPLERS = {"tpe": {"name", "n_startup_trials"}, "random": {"name"}, "grid": {"name"}}
PRUNERS = {
    "median": {"name", "n_startup_trials", "n_warmup_steps"},
    "hyperband": {"name", "min_resource", "reduction_factor"},
    "none": {"name"},
}
# Set per trial from the study seed, so never fixed or searched.
NOT_SEARCHABLE = {"seed"}
CHOICES_ONLY = {name for name, t in HYPERPARAMETERS.items() if t in ("str", "bool", str, bool)}
INT_PARAMS = {name for name, t in HYPERPARAMETERS.items() if t in ("int", int)}
VALUE_SETS = {"optimizer": OPTIMIZERS, "precision": PRECISIONS, "lr_schedule": LR_SCHEDULES}
# Pruner settings count trials (n_startup_trials), epochs (the rest) or a ratio (reduction_factor).
PRUNER_CEILINGS = {"n_startup_trials": limits.MAX_TRIALS, "n_warmup_steps": MAX_EPOCHS, "min_resource": MAX_EPOCHS,
                   "reduction_factor": 100}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: either `choices`, or a `low`..`high` range."""

    name: str
    choices: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return self.name in INT_PARAMS

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class DataSpec:
    source: str = "synthetic"
    split: str = "official"
    n_images: int = 4000
    seed: int = 0
    val_fraction: float = 0.15
    paper_n_train: int = 24_000


@dataclass(frozen=True)
class StudySpec:
    name: str  # the file's stem; the default Optuna study name
    path: str
    description: str
    seed: int
    data: DataSpec
    fixed: dict[str, Any]
    search: dict[str, Param]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def config_for(self, params: dict[str, Any], seed: int) -> TrainConfig:
        return TrainConfig(**{**self.fixed, **params, "seed": seed})


def studies_dirs() -> list[Path]:
    """Where study names are looked up: $SWEEP_STUDIES, ./studies, then the shipped ones (the
    `studies` package: the checkout's folder, or the copy inside an installed wheel)."""
    import studies

    dirs = []
    if os.environ.get("SWEEP_STUDIES"):
        dirs.append(Path(os.environ["SWEEP_STUDIES"]))
    dirs.append(Path("studies"))
    dirs.append(Path(studies.__file__).resolve().parent)
    return dirs


def shipped_studies() -> list[str]:
    names = set()
    for d in studies_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def find_study_file(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if len(name_or_path) > limits.MAX_PATH or "\0" in name_or_path:
        raise SweepError(f"--study: not a usable path (at most {limits.MAX_PATH:,} characters, no NUL)")
    if p.suffix == ".toml" or os.sep in name_or_path or "/" in name_or_path:
        if not os.path.lexists(p):
            raise SweepError(f"{name_or_path}: no such study file")
        paths.regular_file(p)  # a FIFO, a device or a folder: said as such
        return p
    for d in studies_dirs():
        candidate = d / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    raise SweepError(f"unknown study '{name_or_path}' (shipped: {', '.join(shipped_studies()) or 'none'}; "
                     "or give a path to a .toml file)")


def load_study_file(name_or_path: str) -> StudySpec:
    path = find_study_file(name_or_path)
    # Read without blocking on a FIFO swapped in meanwhile, and no more than a study file can be.
    data = paths.read_regular(path, "", limits.MAX_STUDY_FILE_BYTES)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise SweepError(f"{path}: cannot read ({e})") from None
    return parse_study(raw, path)


# ---------------------------------------------------------------- validation

class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str):
        raise SweepError(f"{self.path}: {key}: {message}")

    def table(self, raw: dict, key: str) -> dict:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be a table")
        return value

    def known(self, table: dict, allowed: set[str], prefix: str) -> None:
        for k in table:
            if k not in allowed:
                where = f"{prefix}.{k}" if prefix else k
                self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def number(self, value: Any, key: str, *, integer: bool = False) -> float | int:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a TOML integer beyond any float
            finite = False
        if not finite:
            self.fail(key, f"must be a finite number, got {limits._short(value)}")
        return value

    def at_most(self, value, ceiling, key: str, what: str = "") -> None:
        if value > ceiling:
            self.fail(key, f"{limits._short(value)} is too large: at most {ceiling:,}{what}")

    def seed(self, value, key: str) -> int:
        self.number(value, key, integer=True)
        if not 0 <= value <= limits.MAX_SEED:
            self.fail(key, f"{limits._short(value)}: a seed is a whole number in 0..{limits.MAX_SEED:,} (2^32-1)")
        return value

    def hyper_value(self, name: str, value: Any, key: str) -> Any:
        """Check one value of hyperparameter `name` for its type and allowed set."""
        t = HYPERPARAMETERS[name]
        if name in VALUE_SETS:
            if value not in VALUE_SETS[name]:
                self.fail(key, f"unknown {name} {value!r} (choose from {', '.join(VALUE_SETS[name])})")
        elif t in ("bool", bool):
            if not isinstance(value, bool):
                self.fail(key, f"must be true or false, got {value!r}")
        elif name in INT_PARAMS:
            self.number(value, key, integer=True)
        else:
            self.number(value, key)
        if name != "nesterov":  # nesterov's rule involves momentum: checked once both are known
            try:
                TrainConfig(**{name: value})
            except ValueError as e:
                self.fail(key, str(e))
        return value


def _divides(step, low, high) -> bool:
    """Whether `step` divides high - low exactly, in decimal as written (0.1 divides 0.0..0.3)."""
    from decimal import Decimal

    return (Decimal(str(high)) - Decimal(str(low))) % Decimal(str(step)) == 0


def parse_study(raw: dict, path: Path) -> StudySpec:
    c = _Checker(path)
    c.known(raw, TOP_KEYS, "")

    description = raw.get("description", "")
    if not isinstance(description, str):
        c.fail("description", "must be a string")
    if len(description) > limits.MAX_DESCRIPTION:
        c.fail("description", f"{len(description):,} characters; at most {limits.MAX_DESCRIPTION:,} "
               "(the study stores it twice)")
    seed = c.seed(raw.get("seed", 0), "seed")

    data_raw = c.table(raw, "data")
    c.known(data_raw, DATA_KEYS, "data")
    source = data_raw.get("source", "synthetic")
    if not isinstance(source, str) or not source:
        c.fail("data.source", "must be 'synthetic', 'fer2013' or a path")
    if len(source) > limits.MAX_PATH or limits.control_char(source):
        c.fail("data.source", f"not a usable path (at most {limits.MAX_PATH:,} characters, no control characters)")
    split = data_raw.get("split", "official")
    if split not in SPLITS:
        c.fail("data.split", f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    n_images = c.number(data_raw.get("n_images", 4000), "data.n_images", integer=True)
    if n_images < 50:
        c.fail("data.n_images", "must be at least 50")
    c.at_most(n_images, limits.MAX_N_IMAGES, "data.n_images", " synthetic faces")
    val_fraction = c.number(data_raw.get("val_fraction", 0.15), "data.val_fraction")
    if not 0 < val_fraction < 1:
        c.fail("data.val_fraction", "must be between 0 and 1")
    paper_n_train = c.number(data_raw.get("paper_n_train", 24_000), "data.paper_n_train", integer=True)
    if paper_n_train < 1:
        c.fail("data.paper_n_train", "must be >= 1")
    c.at_most(paper_n_train, limits.MAX_ROWS, "data.paper_n_train", " rows")
    data = DataSpec(source, split, n_images, c.seed(data_raw.get("seed", 0), "data.seed"),
                    float(val_fraction), paper_n_train)

    hyper_keys = set(HYPERPARAMETERS) - NOT_SEARCHABLE
    fixed = c.table(raw, "fixed")
    c.known(fixed, hyper_keys, "fixed")
    for k, v in fixed.items():
        c.hyper_value(k, v, f"fixed.{k}")

    search_raw = c.table(raw, "search")
    c.known(search_raw, hyper_keys, "search")
    search: dict[str, Param] = {}
    for name, spec in search_raw.items():
        key = f"search.{name}"
        if name in fixed:
            c.fail(key, "is also in [fixed]; a hyperparameter is either fixed or searched")
        if not isinstance(spec, dict):
            c.fail(key, "must be a table: { choices = [...] } or { low = ..., high = ... }")
        if "choices" in spec:
            c.known(spec, {"choices"}, key)
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                c.fail(f"{key}.choices", "must be a non-empty list")
            c.at_most(len(choices), limits.MAX_CHOICES, f"{key}.choices", " choices")
            for i, v in enumerate(choices):
                c.hyper_value(name, v, f"{key}.choices[{i}]")
            if len(set(map(repr, choices))) != len(choices):
                c.fail(f"{key}.choices", "has duplicates")
            search[name] = Param(name, choices=tuple(choices))
            continue
        if name in CHOICES_ONLY:
            c.fail(key, "takes { choices = [...] } only")
        c.known(spec, {"low", "high", "log", "step"}, key)
        if "low" not in spec or "high" not in spec:
            c.fail(key, "needs low and high (or choices)")
        integer = name in INT_PARAMS
        low = c.number(spec["low"], f"{key}.low", integer=integer)
        high = c.number(spec["high"], f"{key}.high", integer=integer)
        log = spec.get("log", False)
        if not isinstance(log, bool):
            c.fail(f"{key}.log", "must be true or false")
        step = spec.get("step")
        if step is not None:
            c.number(step, f"{key}.step", integer=integer)
            if step <= 0:
                c.fail(f"{key}.step", "must be > 0")
            if log:
                c.fail(key, "log and step cannot be combined")
        if low > high:
            c.fail(key, f"low ({low}) is greater than high ({high})")
        if log and low <= 0:
            c.fail(key, f"a log range needs low > 0 (got {low})")
        if step is not None and not _divides(step, low, high):
            c.fail(f"{key}.step", f"{step} does not divide the range {low}..{high} (Optuna would quietly change "
                   "high); make high - low a whole number of steps")
        for bound, v in (("low", low), ("high", high)):
            try:
                TrainConfig(**{**fixed, name: v, "nesterov": False})
            except ValueError as e:
                c.fail(f"{key}.{bound}", str(e))
        search[name] = Param(name, low=low if integer else float(low), high=high if integer else float(high),
                             log=log, step=step)

    # nesterov needs momentum > 0 in every trial where it can be on.
    nesterov_on = fixed.get("nesterov") is True or ("nesterov" in search and True in search["nesterov"].choices)
    if nesterov_on:
        m = search.get("momentum")
        momentum_min = (min(m.choices) if m.choices else m.low) if m else fixed.get("momentum", 0.0)
        if momentum_min <= 0:
            c.fail("search.nesterov" if "nesterov" in search else "fixed.nesterov",
                   "nesterov needs momentum > 0 in every trial (fix momentum, or search it with low > 0)")
    try:
        TrainConfig(**{**fixed, "nesterov": False})
    except ValueError as e:
        c.fail("fixed", str(e))

    sampler = dict(c.table(raw, "sampler"))
    sampler.setdefault("name", "tpe")
    if sampler["name"] not in SAMPLERS:
        c.fail("sampler.name", f"unknown sampler {sampler['name']!r} (choose from {', '.join(SAMPLERS)})")
    c.known(sampler, SAMPLERS[sampler["name"]], "sampler")
    if "n_startup_trials" in sampler:
        if c.number(sampler["n_startup_trials"], "sampler.n_startup_trials", integer=True) < 0:
            c.fail("sampler.n_startup_trials", "must be >= 0")
        c.at_most(sampler["n_startup_trials"], limits.MAX_TRIALS, "sampler.n_startup_trials", " trials")
    if sampler["name"] == "grid":
        for name, p in search.items():
            if p.choices is None:
                c.fail(f"search.{name}", "the grid sampler needs { choices = [...] } for every searched parameter")

    pruner = dict(c.table(raw, "pruner"))
    pruner.setdefault("name", "none")  # measured: pruning lost the best trials on short schedules
    if pruner["name"] not in PRUNERS:
        c.fail("pruner.name", f"unknown pruner {pruner['name']!r} (choose from {', '.join(PRUNERS)})")
    c.known(pruner, PRUNERS[pruner["name"]], "pruner")
    for k in PRUNERS[pruner["name"]] - {"name"}:
        if k in pruner and c.number(pruner[k], f"pruner.{k}", integer=True) < (2 if k == "reduction_factor" else 0):
            c.fail(f"pruner.{k}", "is out of range")
        if k in pruner:
            c.at_most(pruner[k], PRUNER_CEILINGS[k], f"pruner.{k}")

    enqueue_raw = raw.get("enqueue", [])
    if not isinstance(enqueue_raw, list):
        c.fail("enqueue", "must be an array of tables ([[enqueue]])")
    c.at_most(len(enqueue_raw), limits.MAX_TRIALS, "enqueue", " trials")
    enqueue = []
    for i, row in enumerate(enqueue_raw):
        key = f"enqueue[{i}]"
        if not isinstance(row, dict):
            c.fail(key, "must be a table")
        for name, v in row.items():
            if name not in search:
                c.fail(f"{key}.{name}", f"is not a searched parameter (searched: {', '.join(search) or 'none'})")
            c.hyper_value(name, v, f"{key}.{name}")
            if not search[name].contains(v):
                c.fail(f"{key}.{name}", f"value {v!r} is outside the search space")
        enqueue.append(dict(row))

    return StudySpec(
        name=path.stem, path=str(path), description=description, seed=seed, data=data,
        fixed=dict(fixed), search=search, sampler=sampler, pruner=pruner, enqueue=enqueue, raw=raw,
    )
