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


class _SameSchedule:
    """A view of a study that shows only trials with the given trial's `epochs`."""

    def __init__(self, study: optuna.Study, epochs):
        self._study, self._epochs = study, epochs

    def get_trials(self, deepcopy: bool = True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.params.get("epochs") == self._epochs]

    @property
    def trials(self):
        return self.get_trials()

    def __getattr__(self, name):
        return getattr(self._study, name)


class ScheduleAwarePruner(optuna.pruners.BasePruner):
    """With a learning-rate schedule that stretches over `epochs` (cosine, plateau), epoch k of a
    long run is not comparable with epoch k of a short one: a long schedule still has a high lr
    and looks worse early. This compares a trial only with trials of the same `epochs`."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.inner.prune(_SameSchedule(study, trial.params.get("epochs")), trial)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p["name"] == "none":
        return optuna.pruners.NopPruner()
    if p["name"] == "hyperband":
        inner = optuna.pruners.HyperbandPruner(
            min_resource=p.get("min_resource", 1),
            max_resource="auto",
            reduction_factor=p.get("reduction_factor", 3),
        )
    else:
        inner = optuna.pruners.MedianPruner(
            n_startup_trials=p.get("n_startup_trials", 5),
            n_warmup_steps=p.get("n_warmup_steps", 1),
        )
    schedule = spec.search.get("lr_schedule")
    stretches = (spec.fixed.get("lr_schedule", "constant") != "constant"
                 or (schedule is not None and any(c != "constant" for c in schedule.choices)))
    if stretches and "epochs" in spec.search and p["name"] == "median":
        # (Hyperband already compares trials only within its brackets of equal budget.)
        return ScheduleAwarePruner(inner)
    return inner
