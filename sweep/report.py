"""`sweep report`: one self-contained HTML file (plotly's JavaScript inlined once) that opens offline.

Per study: optimization history, parameter importances, parallel coordinates, slices, accuracy by
optimizer, per-epoch val-accuracy curves of the top trials against pruned ones, accuracy against
training time, the best trial's confusion matrices, and the best-params table. With several
studies, a comparison comes first.
"""

from __future__ import annotations

import html
import json
import random
import warnings

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from data import CLASSES

from .errors import SweepError
from .export import render as render_table
from .export import select
from .limits import printable
from .results import StudyResults, load_results, param_value

TOP_CURVES = 5  # complete trials whose per-epoch curves are drawn in colour
MAX_LINES = 1_000  # parallel coordinates and pruned curves: more lines are only ink (and megabytes)
KEEP_BEST = 100  # of a sample, the best trials always drawn
FIG_HEIGHT = 420  # px

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1rem; }
.figure { border: 1px solid #eee; padding: .25rem; min-height: 200px; }
.note { color: #666; font-size: .9rem; padding: 1rem; }
.figure.wide { grid-column: 1 / -1; }
.figure h4 { margin: .4rem .6rem 0; font-size: 1rem; font-weight: 600; }
table.best-params { border-collapse: collapse; font-size: .9rem; }
table.best-params th, table.best-params td { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: right; }
.meta { color: #555; font-size: .9rem; }
"""


def _escape(text) -> str:
    """Text from the storage for the page: HTML-escaped, control and invisible characters written out."""
    return html.escape(printable(str(text)))


class _Figures:
    """Collects figures as <div>s with stable ids; plotly's JS is added once for the whole page."""

    def __init__(self):
        self.count = 0

    def html(self, fig: go.Figure, title: str, wide: bool = False) -> str:
        self.count += 1
        fig.layout.width = None  # optuna sets fixed widths; let the page size every figure
        # The title goes above the figure, in the page: plotly's toolbar would cover it otherwise.
        fig.update_layout(title=None, autosize=True, margin=dict(l=50, r=20, t=30, b=50), template="plotly_white")

        def decades(axis):  # log axes (lr): one tick per decade as 10^-4, not run-together "100μ0.001"
            if axis.type == "log":
                axis.update(dtick=1, exponentformat="power")

        fig.for_each_xaxis(decades)
        fig.for_each_yaxis(decades)
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{self.count}",
                          default_width="100%", default_height=f"{FIG_HEIGHT}px",
                          config={"displaylogo": False, "responsive": True})
        wide_class = " wide" if wide else ""
        return f'<div class="figure{wide_class}"><h4>{_escape(title)}</h4>{div}</div>'


def _note(title: str, text: str) -> str:
    return f'<div class="figure note"><b>{_escape(title)}</b><br>{_escape(text)}</div>'


class _Trials(optuna.Study):
    """An in-memory study whose trials are a list already read: Optuna's plots read a study's trials
    several times over (the importance plot deep-copies them four times), which from the database
    took seconds per read at 5,000 trials. Trials keep their numbers; nothing is copied."""

    def __init__(self, name: str, trials: list, maximize: bool = True):
        storage = optuna.storages.InMemoryStorage()
        direction = optuna.study.StudyDirection.MAXIMIZE if maximize else optuna.study.StudyDirection.MINIMIZE
        storage.create_new_study([direction], name)
        super().__init__(study_name=name, storage=storage)
        self._held = trials

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._held if states is None or t.state in states]

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        return self.get_trials(deepcopy, states)

    @property
    def trials(self) -> list:
        return self.get_trials()


def _sample(res: StudyResults, n: int) -> list:
    """Up to n complete trials: the best KEEP_BEST and the rest drawn at random (seeded: the same
    report for the same study), by number."""
    if len(res.complete) <= n:
        return res.complete
    rest = random.Random(0).sample(res.complete[KEEP_BEST:], n - KEEP_BEST)
    return sorted(res.complete[:KEEP_BEST] + rest, key=lambda t: t.number)


def _optuna_plot(figs: _Figures, fn, study: optuna.Study, title: str, wide: bool = False, **kw) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = fn(study, **kw)
    except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as e:
        return _note(title, f"not available for this study ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return figs.html(fig, title, wide)


def _value_axis(fig: go.Figure, res: StudyResults, title: str | None = None) -> None:
    """The y axis of a study's values: sweep's accuracies in %, another tool's objective as it is."""
    if res.objective.accuracy:
        fig.update_yaxes(title=title or "val accuracy", tickformat=".0%")
    else:
        fig.update_yaxes(title=printable(res.objective.name))


def _by_optimizer(figs: _Figures, res: StudyResults) -> str:
    title = "Validation accuracy by optimizer (complete trials)"
    if not res.complete:
        return _note(title, "no complete trial yet")
    fig = go.Figure()
    groups: dict[str, list] = {}
    for t in sorted(res.complete, key=lambda t: t.number):
        groups.setdefault(str(param_value(t, "optimizer", res.fixed) or "default"), []).append(t)
    for name in sorted(groups):
        ts = groups[name]
        fig.add_trace(go.Box(y=[t.value for t in ts], name=name, boxpoints="all", jitter=0.4, pointpos=0,
                             text=[f"trial {t.number}" for t in ts]))
    _value_axis(fig, res)
    return figs.html(fig, title)


def _curves(figs: _Figures, res: StudyResults) -> str:
    pruned = [t for t in res.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    drawn = pruned if len(pruned) <= MAX_LINES else sorted(random.Random(0).sample(pruned, MAX_LINES),
                                                             key=lambda t: t.number)
    top = min(TOP_CURVES, len(res.complete))
    title = "Val accuracy per epoch: " + (f"the top {top} complete trials" if top else "no complete trial yet") + \
        (f" against {len(pruned):,} pruned" if pruned else "") + \
        (f" ({len(drawn):,} of them drawn at random)" if len(drawn) < len(pruned) else "")
    fig = go.Figure()
    if drawn:  # one trace, lines split by gaps: a browser draws thousands of traces slowly
        xs, ys, hover = [], [], []
        for t in drawn:
            steps = sorted(t.intermediate_values)
            xs += [*steps, None]
            ys += [*(t.intermediate_values[s] for s in steps), None]
            hover += [f"trial {t.number} (pruned)"] * len(steps) + [None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(150,150,150,0.45)", width=1),
                                 name="pruned", hovertext=hover, hoverinfo="text+x+y"))
    for t in res.complete[:TOP_CURVES]:
        steps = sorted(t.intermediate_values)
        fig.add_trace(go.Scatter(x=steps, y=[t.intermediate_values[s] for s in steps], mode="lines+markers",
                                 name=f"trial {t.number} ({res.objective.show(t.value)})"))
    if not fig.data:
        return _note(title, "no trial has reported an epoch yet")
    fig.update_xaxes(title="epoch")
    _value_axis(fig, res)
    return figs.html(fig, title)


def _cost(figs: _Figures, res: StudyResults) -> str:
    title = "Accuracy against training time"
    fig = go.Figure()
    for state, colour in ((TrialState.COMPLETE, "#1f77b4"), (TrialState.PRUNED, "#aaaaaa")):
        ts = [t for t in res.trials if t.state == state and "train_s" in t.user_attrs]
        if ts:
            y = [t.value if t.value is not None else max(t.intermediate_values.values(), default=None) for t in ts]
            fig.add_trace(go.Scatter(x=[t.user_attrs["train_s"] for t in ts], y=y, mode="markers",
                                     name=state.name.lower(), marker=dict(color=colour, size=8),
                                     text=[f"trial {t.number}" for t in ts]))
    if not fig.data:
        return _note(title, "no trial has recorded its training time yet")
    fig.update_xaxes(title="training seconds", type="log")
    _value_axis(fig, res)
    return figs.html(fig, title)


def _confusion(figs: _Figures, res: StudyResults, split: str) -> str:
    title = f"Best trial's confusion matrix on {split} (row-normalised)"
    stored = res.complete[0].user_attrs.get(f"{split}_confusion") if res.complete else None
    counts = json.loads(stored) if stored is not None else None
    if counts is None or len(counts) != len(CLASSES):
        return "" if split == "test" else _note(title, "no complete trial with a confusion matrix yet")
    best = res.complete[0]
    rows = [[c / max(1, sum(r)) for c in r] for r in counts]
    fig = go.Figure(go.Heatmap(z=rows, x=list(CLASSES), y=list(CLASSES), colorscale="Blues", zmin=0, zmax=1,
                               text=counts, texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z:.1%}<extra></extra>"))
    fig.update_yaxes(title="true", autorange="reversed")
    fig.update_xaxes(title="predicted")
    return figs.html(fig, f"{title}, trial {best.number}")


def _study_section(figs: _Figures, res: StudyResults) -> str:
    a = res.user_attrs
    meta = (f"Made by another tool, not by sweep run: {res.objective.direction} {res.objective.name}." if not res.by_sweep
            else f"{res.data_name} [{a.get('data_source', '?')}], {a.get('split', '?')} split: "
            f"{a.get('n_train', '?')} train / {a.get('n_val', '?')} val / {a.get('n_test', '?')} test. "
            f"Code {a.get('git_commit', '?')}; {a.get('versions', '')}.")
    vis = optuna.visualization
    study = _Trials(res.name, res.trials, res.objective.maximize)
    sample = _sample(res, MAX_LINES)
    parallel = "Parallel coordinates" + (
        f" (the best {KEEP_BEST} and {len(sample) - KEEP_BEST:,} others at random, of {len(res.complete):,})"
        if len(sample) < len(res.complete) else "")
    plots = [
        _optuna_plot(figs, vis.plot_optimization_history, study, "Optimization history"),
        _optuna_plot(figs, vis.plot_param_importances, study, "Parameter importances"),
        _optuna_plot(figs, vis.plot_parallel_coordinate, _Trials(res.name, sample, res.objective.maximize), parallel),
        _optuna_plot(figs, vis.plot_slice, study, "Slice plots", wide=True),
        _by_optimizer(figs, res),
        _curves(figs, res),
        _cost(figs, res),
        _confusion(figs, res, "val"),
        _confusion(figs, res, "test"),
    ]
    table = render_table(res, select(res, 10, None), "html") if res.complete else "<p>No complete trial yet.</p>"
    return (f'<section class="study" id="study-{_escape(res.name)}"><h2>Study {_escape(res.name)}</h2>'
            f'<p class="meta">{_escape(meta)}</p><h3>Best parameters</h3>{table}'
            f'<div class="grid">{"".join(p for p in plots if p)}</div></section>')


def _comparison(figs: _Figures, results: list[StudyResults]) -> str:
    fig = go.Figure()
    rows = []
    for res in results:
        done = [t for t in res.trials if t.state == TrialState.COMPLETE]
        done.sort(key=lambda t: t.number)
        best, xs, ys = None, [], []
        for t in done:
            better = max if res.objective.maximize else min
            best = t.value if best is None else better(best, t.value)
            xs.append(t.number)
            ys.append(best)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=printable(res.name), line_shape="hv"))
        top = res.complete[0] if res.complete else None
        test = top.user_attrs.get("test_acc") if top and res.by_sweep else None
        rows.append((res.name, res.data_name if res.by_sweep else "-", res.objective.show(top.value if top else None),
                     f"{test:.2%}" if test is not None else "-", res.counts["complete"], res.counts["pruned"],
                     res.compute_s))
    fig.update_xaxes(title="trial")
    _value_axis(fig, results[0], "best val accuracy so far")
    body = "".join(f"<tr><td>{_escape(n)}</td><td>{_escape(d)}</td><td>{_escape(v)}</td><td>{te}</td>"
                   f"<td>{c}</td><td>{p}</td><td>{s:.1f}</td></tr>" for n, d, v, te, c, p, s in rows)
    table = ('<table class="best-params"><thead><tr><th>Study</th><th>Data</th><th>Best val</th><th>Its test</th>'
             f"<th>Complete</th><th>Pruned</th><th>Train s</th></tr></thead><tbody>{body}</tbody></table>")
    return f'<section id="comparison"><h2>Comparison</h2>{table}<div class="grid">{figs.html(fig, "Best so far")}</div></section>'


def build_report(studies: list[optuna.Study]) -> str:
    figs = _Figures()
    results = [load_results(s) for s in studies]
    for r in results:
        if not r.trials:
            raise SweepError(f"study '{r.name}' has no trials yet: nothing to report")
    parts = []
    if len(studies) > 1:
        parts.append(_comparison(figs, results))
    parts += [_study_section(figs, r) for r in results]
    names = ", ".join(r.name for r in results)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sweep report: {_escape(names)}</title><style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            f"<h1>Sweep report: {_escape(names)}</h1>{''.join(parts)}</body></html>\n")
