"""Turn a study file's [search], [sampler] and [pruner] into Optuna objects."""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from .study_file import StudySpec


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, p in spec.search.items():
        if p.choices is not None:
            out[name] = CategoricalDistribution(list(p.choices))
        elif p.is_int:
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.log,
                                          step=float(p.step) if p.step is not None else None)
    return out


def grid_size(spec: StudySpec) -> int | None:
    if spec.sampler["name"] != "grid":
        return None
    size = 1
    for p in spec.search.values():
        size *= len(p.choices)
    return size


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler stops the study from inside `optimize` when the grid is used up, which fails
    under ask/tell; our run loop caps the budget at the grid's size instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    name = spec.sampler["name"]
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _AskTellGridSampler({k: list(p.choices) for k, p in spec.search.items()}, seed=seed)
    # Optuna 5's TPE defaults (multivariate, constant liar) suit parallel workers; we only seed it.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.get("n_startup_trials", 10))


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p["name"] == "none":
        return optuna.pruners.NopPruner()
    if p["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.get("min_resource", 1),
            max_resource="auto",
            reduction_factor=p.get("reduction_factor", 3),
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.get("n_startup_trials", 5),
        n_warmup_steps=p.get("n_warmup_steps", 1),
    )
