"""The plain-query trial reader gives what Optuna's own reader gives; reports of big studies sample."""

import math
import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from sweep import report
from sweep.results import SHOWN_ATTRS, load_results
from sweep.storage import open_storage
from sweep.trial_rows import read_trials

DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "batch_size": CategoricalDistribution([32, 64, 128]),
         "epochs": IntDistribution(1, 20), "optimizer": CategoricalDistribution(["sgd", "adam"])}


def _every_kind_of_trial(study: optuna.Study) -> None:
    """Trials in every state, with infinite and NaN values, nested JSON attributes and system attributes."""
    for i in range(12):
        params = {"lr": 10 ** (-1 - i / 4), "batch_size": [32, 64, 128][i % 3], "epochs": i + 1,
                  "optimizer": ["sgd", "adam"][i % 2]}
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][i % 3]
        value = {3: -math.inf, 9: math.inf}.get(i, 0.5 + i / 100) if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(
            state=state, value=value, params=params, distributions=DISTS,
            user_attrs={"train_s": 1.5 * i, "val_confusion": "[[1, 2], [3, 4]]", "nested": {"a": [1, None]}},
            system_attrs={"fail_reason": "x"} if state == TrialState.FAIL else {},
            intermediate_values={1: 0.1 * i, 2: float("nan"), 3: float("-inf")}))
    running = study.ask({"lr": DISTS["lr"]})
    running.set_user_attr("seed", 7)
    study.enqueue_trial({"lr": 0.01})  # a WAITING trial


@pytest.mark.parametrize("listed", [500, 3], ids=["by-ids", "by-study"])
def test_read_trials_equals_optunas_reader(url, listed, monkeypatch):
    """Both ways of selecting the rows: naming the trials (a few) and by study (many)."""
    import sweep.trial_rows

    monkeypatch.setattr(sweep.trial_rows, "MAX_LISTED_IDS", listed)
    storage = open_storage(url, create=True)
    study = optuna.create_study(study_name=f"rows{listed}", storage=storage, direction="maximize")
    _every_kind_of_trial(study)
    other = optuna.create_study(study_name=f"other{listed}", storage=storage)  # another study's trials stay out
    other.add_trial(create_trial(value=1.0, params={"lr": 0.01}, distributions={"lr": DISTS["lr"]}))

    expected = sorted(storage.get_all_trials(study._study_id, deepcopy=False), key=lambda t: t.number)
    got = read_trials(storage, study._study_id)
    assert len(got) == 14 and {t.state for t in got} == set(TrialState)
    for a, b in zip(got, expected, strict=True):
        # NaN != NaN: compare the per-epoch values by their text, every other field as is
        assert repr(a.intermediate_values) == repr(b.intermediate_values), a.number
        a_dict = {k: v for k, v in a.__dict__.items() if k != "intermediate_values"}
        b_dict = {k: v for k, v in b.__dict__.items() if k != "intermediate_values"}
        assert a_dict == b_dict, a.number
    assert any(t.value == math.inf for t in got) and any(t.value == -math.inf for t in got)

    slim = read_trials(storage, study._study_id, intermediate=False, user_keys=frozenset({"train_s"}))
    assert [t.number for t in slim] == [t.number for t in expected]
    assert all(t.intermediate_values == {} and set(t.user_attrs) <= {"train_s"} for t in slim)
    assert [t.params for t in slim] == [t.params for t in expected]
    empty = optuna.create_study(study_name=f"empty{listed}", storage=storage)
    assert read_trials(storage, empty._study_id) == []
    with pytest.raises(KeyError):  # as Optuna's own reader: a study that is not there
        read_trials(storage, 10_000)
    storage.engine.dispose()


def test_results_read_only_what_tables_show(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="rows", storage=storage, direction="maximize")
    _every_kind_of_trial(study)
    res = load_results(study, intermediate=False)
    assert all(set(t.user_attrs) <= SHOWN_ATTRS for t in res.trials)
    assert res.counts == {"complete": 4, "pruned": 4, "failed": 4, "running": 1, "waiting": 1}
    assert res.complete[0].value == math.inf and res.compute_s == sum(1.5 * i for i in range(12))


def test_report_of_a_big_study_samples_lines_and_keeps_the_best(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_LINES", 30)
    monkeypatch.setattr(report, "KEEP_BEST", 5)
    storage = open_storage(f"sqlite:///{tmp_path}/big.db", create=True)
    study = optuna.create_study(study_name="big", storage=storage, direction="maximize")
    trials = []
    for i in range(120):
        params = {"lr": 10 ** (-1 - (i % 7) / 3), "batch_size": [32, 64, 128][i % 3], "epochs": 1 + i % 5,
                  "optimizer": ["sgd", "adam"][i % 2]}
        pruned = i % 3 == 0
        trials.append(create_trial(state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                                   value=None if pruned else (i * 37 % 101) / 101, params=params, distributions=DISTS,
                                   user_attrs={"train_s": 1.0 + i},
                                   intermediate_values={1: 0.2, 2: 0.3 + (i % 10) / 100}))
    study.add_trials(trials)
    res = load_results(study)
    assert len(res.complete) == 80 and sum(t.state == TrialState.PRUNED for t in res.trials) == 40

    sample = report._sample(res, 30)
    assert len(sample) == 30 and res.complete[:5] == sorted(sample, key=lambda t: -t.value)[:5]
    assert sample == report._sample(res, 30)  # the same report for the same study
    page = report.build_report([study])
    assert "Parallel coordinates (the best 5 and 25 others at random, of 80)" in page
    assert "against 40 pruned (30 of them drawn at random)" in page
    # the pruned curves are one trace: the legend has one "pruned" entry however many are drawn
    curves = page[page.index("Val accuracy per epoch"):]
    curves = curves[:curves.index('<div class="figure')]
    assert len(re.findall(r'"name":"pruned"', curves)) == 1 and curves.count("(pruned)") == 30 * 2
    # every trial still counts in the history: 120 trial numbers reach the page
    assert "Optimization history" in page and "119" in page


def test_a_trials_attributes_are_written_in_one_go_and_never_to_a_finished_trial(url):
    from sweep.records import store_attrs

    storage = open_storage(url, create=True)
    study = optuna.create_study(study_name="attrs", storage=storage, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("seed", 1)
    store_attrs(trial, {"seed": 2, "host": "h", "confusion": [[1, 2], [3, 4]], "x": None})
    stored = storage.get_trial(trial._trial_id).user_attrs
    assert stored == {"seed": 2, "host": "h", "confusion": [[1, 2], [3, 4]], "x": None} == trial.user_attrs
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # how a late process learns it was taken over
        store_attrs(trial, {"late": True, "seed": 3})
    assert storage.get_trial(trial._trial_id).user_attrs == stored  # nothing of the refused write landed
    storage.engine.dispose()
