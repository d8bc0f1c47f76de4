"""Every trial of a study read with a handful of plain queries, for the commands that read a whole study.

Optuna's `get_trials` builds one ORM object per row: a 5,000-trial study is about 180,000 rows
(parameters, user attributes, per-epoch values), and building them took 5 s on a 2-core machine.
The same rows read as plain tuples from Optuna's own tables take a fraction of that; the result is
the same list of FrozenTrials (a test compares them field by field on SQLite and PostgreSQL).
`sweep.storage` reads every study this way (Optuna's own loop, the dashboard, the proxy); storages
that are not a database (a gRPC proxy's client, in memory) go through Optuna's own reader.
"""

from __future__ import annotations

import json
from collections import defaultdict

from optuna import distributions as dist_mod
from optuna.trial import FrozenTrial


# Reads of a few trials (the ones that changed, as a cached storage asks for) name them; larger
# ones select by study (an IN list of thousands costs more than it saves, and SQLite caps it).
MAX_LISTED_IDS = 500


def _engine(storage):
    return getattr(getattr(storage, "_backend", storage), "engine", None)


def read_trials(storage, study_id: int, *, intermediate: bool = True,
                user_keys: frozenset[str] | None = None) -> list[FrozenTrial]:
    """The study's trials by number. Without `intermediate`, per-epoch values are left out; with
    `user_keys`, only those user attributes are read (a table needs a few of a trial's ~25)."""
    engine = _engine(storage)
    if engine is not None:
        return query_trials(engine, study_id, intermediate=intermediate, user_keys=user_keys)
    trials = sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
    if user_keys is None and intermediate:
        return trials
    return [FrozenTrial(number=t.number, state=t.state, value=None, values=t.values,
                        datetime_start=t.datetime_start, datetime_complete=t.datetime_complete,
                        params=t.params, distributions=t.distributions,
                        user_attrs={k: v for k, v in t.user_attrs.items() if user_keys is None or k in user_keys},
                        system_attrs=t.system_attrs, intermediate_values=t.intermediate_values if intermediate else {},
                        trial_id=t._trial_id) for t in trials]


def query_trials(engine, study_id: int, *, states=None, included_trial_ids=(), trial_id_greater_than: int = -1,
                 intermediate: bool = True, user_keys: frozenset[str] | None = None) -> list[FrozenTrial]:
    """Trials of a study from Optuna's tables, by number. `states`, `included_trial_ids` and
    `trial_id_greater_than` filter as RDBStorage._get_trials does (the trials after the last one
    read, and the unfinished ones read before): that is how a cached storage reads only what changed."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models as m

    studies_t = m.StudyModel.__table__
    trials_t = m.TrialModel.__table__
    params_t = m.TrialParamModel.__table__
    values_t = m.TrialValueModel.__table__
    user_t = m.TrialUserAttributeModel.__table__
    system_t = m.TrialSystemAttributeModel.__table__
    inter_t = m.TrialIntermediateValueModel.__table__

    where = [trials_t.c.study_id == study_id]
    if states is not None:
        where.append(trials_t.c.state.in_(list(states)))
    included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
    if included and trial_id_greater_than > -1:
        where.append(sa.or_(trials_t.c.trial_id.in_(included), trials_t.c.trial_id > trial_id_greater_than))
    elif trial_id_greater_than > -1:
        where.append(trials_t.c.trial_id > trial_id_greater_than)

    ids: list[int] = []

    def of_trials(table):  # a child table's rows for the selected trials
        if len(ids) <= MAX_LISTED_IDS:  # by index: a join would make PostgreSQL scan the whole child table
            return sa.select(*table.c).where(table.c.trial_id.in_(ids))
        return sa.select(*table.c).join(trials_t, table.c.trial_id == trials_t.c.trial_id).where(*where)

    with engine.connect() as con:
        heads = con.execute(sa.select(trials_t.c.trial_id, trials_t.c.number, trials_t.c.state,
                                      trials_t.c.datetime_start, trials_t.c.datetime_complete).where(*where)).all()
        if not heads:  # (only then can the study itself be missing: a query less on every other read)
            if con.execute(sa.select(studies_t.c.study_id).where(studies_t.c.study_id == study_id)).first() is None:
                raise KeyError(f"no study with id {study_id}")  # as Optuna's reader says it
            return []
        ids = [h.trial_id for h in heads]
        params = defaultdict(list)
        for r in con.execute(of_trials(params_t).order_by(params_t.c.param_id)):
            params[r.trial_id].append(r)
        values = defaultdict(dict)
        for r in con.execute(of_trials(values_t)):
            values[r.trial_id][r.objective] = m.TrialValueModel.stored_repr_to_value(r.value, r.value_type)
        user = defaultdict(dict)
        user_q = of_trials(user_t) if user_keys is None else of_trials(user_t).where(user_t.c.key.in_(sorted(user_keys)))
        for r in con.execute(user_q):
            user[r.trial_id][r.key] = json.loads(r.value_json)
        system = defaultdict(dict)
        for r in con.execute(of_trials(system_t)):
            system[r.trial_id][r.key] = json.loads(r.value_json)
        inter = defaultdict(dict)
        if intermediate:
            for r in con.execute(of_trials(inter_t)):
                inter[r.trial_id][r.step] = m.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                    r.intermediate_value, r.intermediate_value_type)

    parsed: dict[str, dist_mod.BaseDistribution] = {}  # a study has a few distinct distributions

    def distribution(text: str):
        if text not in parsed:
            parsed[text] = dist_mod.json_to_distribution(text)
        return parsed[text]

    out = []
    for h in heads:
        ps = params.get(h.trial_id, ())
        vs = values.get(h.trial_id)
        out.append(FrozenTrial(
            number=h.number, state=h.state, value=None,
            values=[vs[i] for i in range(len(vs))] if vs else None,
            datetime_start=h.datetime_start, datetime_complete=h.datetime_complete,
            params={p.param_name: distribution(p.distribution_json).to_external_repr(p.param_value) for p in ps},
            distributions={p.param_name: distribution(p.distribution_json) for p in ps},
            user_attrs=user.get(h.trial_id, {}), system_attrs=system.get(h.trial_id, {}),
            intermediate_values=inter.get(h.trial_id, {}), trial_id=h.trial_id))
    out.sort(key=lambda t: t.number)
    return out
