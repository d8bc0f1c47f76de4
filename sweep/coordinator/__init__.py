"""The coordinator: asks Optuna for trials, keeps every worker's slots full, tells the results.

It is the only process of a run that writes the storage. Each worker streams every epoch's
validation accuracy of each of its trials; the coordinator reports it, asks the pruner, answers,
and tells the result when the worker says a trial is done.

Its parts, one concern each: `scheduling` (which trial a worker takes next, asked under the
budget), `messages` (what workers report), `failures` (dead workers, out-of-memory, interruptions,
heartbeats), `telling` (results, weights, progress); `core` holds the state and the loop.
"""

from .common import FINISHED, MAX_CONSECUTIVE_FAILURES, MAX_START_DEATHS, WORKER_START_S, count_finished, trial_seed
from .core import Coordinator

__all__ = ["FINISHED", "MAX_CONSECUTIVE_FAILURES", "MAX_START_DEATHS", "WORKER_START_S", "Coordinator",
           "count_finished", "trial_seed"]
