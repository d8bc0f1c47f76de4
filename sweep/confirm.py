"""`sweep confirm`: re-train the top trials with new seeds, so "best" means more than one lucky seed.

The results go in the study's attributes (`confirm:<trial number>`: seeds, val and test accuracy
of each, mean and standard deviation); `sweep export` shows mean +- std where they exist. Selection
stays on val: test accuracies are recorded, never used to choose.

Each seed's result is stored as soon as it is trained, and the seeds of a trial are always the same
sequence, so an interrupted confirmation, or one asked again with more seeds, trains only the seeds
not yet recorded.
"""

from __future__ import annotations

import json
import statistics

import optuna
from optuna.trial import TrialState

from .errors import SweepError
from .runner import Interrupted, InterruptOnce, trial_seed
from .storage import check_same_file

CONFIRM_PREFIX = "confirm:"
SEED_OFFSET = 7919  # confirmation seeds come from another stream than the trials' own


def confirmation_seeds(study_seed: int, number: int, n: int) -> list[int]:
    return [trial_seed(study_seed + SEED_OFFSET * (i + 1), number) for i in range(n)]


def confirm(study: optuna.Study, spec, dataset, *, top: int, seeds: int, device: str = "auto", progress=None) -> list[dict]:
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    if not ranked:
        raise SweepError(f"study '{study.study_name}' has no complete trial to confirm")
    from model import train  # imported here: reading confirmations (export) needs no torch

    study_seed = _seed(study.user_attrs, spec.seed)
    out = []
    with InterruptOnce():
        try:
            for t in ranked[:top]:
                used = confirmation_seeds(study_seed, t.number, seeds)
                val, test, done = _recorded(confirmations(study.user_attrs).get(t.number), used)
                if done and progress:
                    progress(f"trial {t.number}: {len(done)} seed(s) already recorded")
                for seed in used[len(done):]:
                    r = train(dataset, spec.config_for(t.params, seed), device=device)
                    done.append(seed)
                    val.append(r.val_acc)
                    if r.test_acc is not None:
                        test.append(r.test_acc)
                    check_same_file(study._storage)  # a deleted SQLite file would take the result with it
                    study.set_user_attr(f"{CONFIRM_PREFIX}{t.number}", json.dumps(_record(t.number, done, val, test)))
                    if progress:
                        progress(f"trial {t.number} seed {seed}: val {r.val_acc:.2%}"
                                 + (f", test {r.test_acc:.2%}" if r.test_acc is not None else ""))
                out.append(_record(t.number, done, val, test))
        except KeyboardInterrupt:
            raise Interrupted() from None  # every seed trained so far is stored
    check_same_file(study._storage)  # deleted after the last seed: not recorded after all
    return out


def _seed(study_user_attrs: dict, default: int) -> int:
    from .attrs import count

    seed = count(study_user_attrs.get("seed"))
    return default if seed is None else seed


def _recorded(earlier: dict | None, used: list[int]) -> tuple[list[float], list[float], list[int]]:
    """(val, test, seeds) of an earlier confirmation that this one can keep: its seeds, as far as they
    are the start of `used` (all of them when it already holds more)."""
    if not earlier:
        return [], [], []
    seeds = earlier["seeds"]
    n = 0
    while n < min(len(seeds), len(used)) and seeds[n] == used[n]:
        n += 1
    if n == len(used):
        n = len(seeds)  # every seed asked for is recorded, perhaps more: keep them all
    has_test = len(earlier["test"]) == len(seeds)
    return list(earlier["val"][:n]), list(earlier["test"][:n]) if has_test else [], list(seeds[:n])


def _record(number: int, seeds: list[int], val: list[float], test: list[float]) -> dict:
    return {
        "trial": number, "seeds": list(seeds), "val": list(val), "test": list(test),
        "val_mean": statistics.mean(val) if val else None,
        "val_std": (statistics.stdev(val) if len(val) > 1 else 0.0) if val else None,
        "test_mean": statistics.mean(test) if test else None,
        "test_std": (statistics.stdev(test) if len(test) > 1 else 0.0) if test else None,
    }


def confirmations(study_user_attrs: dict) -> dict[int, dict]:
    """The confirmations a study recorded, by trial number. Another client may have rewritten any
    of them: a record that is no JSON object is left out, and within one a value of another kind
    counts as missing (a list of seeds with something else in it, as none recorded)."""
    from . import attrs

    out = {}
    for key, value in study_user_attrs.items():
        number = key[len(CONFIRM_PREFIX):]
        found = attrs.json_object(value) if key.startswith(CONFIRM_PREFIX) and number.isascii() and number.isdigit() else None
        if found is None:
            continue
        raw = json.loads(found)
        lists = {k: raw.get(k) if isinstance(raw.get(k), list) else [] for k in ("seeds", "val", "test")}
        if not all(attrs.count(s) is not None for s in lists["seeds"]) or \
                not all(attrs.number(v) is not None for v in lists["val"] + lists["test"]):
            lists = {"seeds": [], "val": [], "test": []}
        out[int(number)] = {"trial": int(number), **lists,
                            **{k: attrs.number(raw.get(k)) for k in ("val_mean", "val_std", "test_mean", "test_std")}}
    return out
