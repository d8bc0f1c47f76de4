"""The best-params table: csv, md, latex, json or html, byte-for-byte the same for the same study.

csv and json keep full precision (for scripts); md, latex and html are for people (lr in
scientific notation, accuracies in %).
"""

from __future__ import annotations

import csv
import html
import io
import json

from optuna.trial import FrozenTrial

from data import CLASSES
from model import accuracy_by_class

from .attrs import dumps
from .confirm import confirmations
from .errors import SweepError
from .limits import printable
from .results import StudyResults, param_value

FORMATS = ("csv", "md", "latex", "json", "html")


def select(res: StudyResults, top: int, by: str | None) -> list[FrozenTrial]:
    """The top `top` complete trials, or with `by` the best trial of each value of that parameter."""
    if not res.complete:
        raise SweepError(f"study '{res.name}' has no complete trial yet")
    if by is None:
        return res.complete[:top]
    if by not in res.params and by not in res.fixed:
        raise SweepError(f"--by {by}: not a parameter of study '{res.name}' (parameters: {', '.join(res.params)})")
    best: dict = {}
    for t in res.complete:  # best first, so the first of each group is its best
        best.setdefault(repr(param_value(t, by, res.fixed)), t)
    return list(best.values())


CONFIRM_COLUMNS = ["val_mean", "val_std", "test_mean", "test_std", "n_seeds"]


def columns(res: StudyResults, per_class: bool = False) -> list[str]:
    if not res.by_sweep:  # another tool's study: its parameters and its own objective, nothing of sweep's
        if per_class:
            raise SweepError(f"--per-class: study '{res.name}' was made by another tool and has no confusion matrices")
        return ["rank", "trial", *res.params, res.objective.column]
    cols = ["rank", "trial", *res.params, "val_acc", "test_acc"]
    if confirmations(res.user_attrs):
        cols += CONFIRM_COLUMNS
    if per_class:
        cols += [f"val_acc_{c.lower()}" for c in CLASSES]
    return cols + ["train_s", "device"]


def raw_row(res: StudyResults, rank: int, t: FrozenTrial, per_class: bool = False) -> dict:
    a = t.user_attrs
    row = {"rank": rank, "trial": t.number}
    row.update({p: param_value(t, p, res.fixed) for p in res.params})
    if not res.by_sweep:
        row[res.objective.column] = t.value
        return row
    row.update({"val_acc": t.value, "test_acc": a.get("test_acc")})
    confirmed = confirmations(res.user_attrs)
    if confirmed:
        c = confirmed.get(t.number, {})
        row.update({"val_mean": c.get("val_mean"), "val_std": c.get("val_std"), "test_mean": c.get("test_mean"),
                    "test_std": c.get("test_std"), "n_seeds": len(c["seeds"]) if c else None})
    if per_class:
        matrix = json.loads(a["val_confusion"]) if "val_confusion" in a else None
        recall = accuracy_by_class(matrix) if matrix and len(matrix) == len(CLASSES) else [None] * len(CLASSES)
        row.update({f"val_acc_{c.lower()}": v for c, v in zip(CLASSES, recall)})
    row.update({"train_s": a.get("train_s"), "device": a.get("device_name")})
    return row


def summary(res: StudyResults) -> dict:
    c = res.counts
    out = {"study": res.name, "data": res.data_name if res.by_sweep else None, "complete": c["complete"],
           "pruned": c["pruned"], "failed": c["failed"], "compute_s": round(res.compute_s, 3) if res.by_sweep else None}
    if not res.by_sweep:
        out.update(objective=res.objective.name, direction=res.objective.direction)
    return out


def summary_line(res: StudyResults) -> str:
    s = summary(res)
    counts = f"{s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed trials"
    if not res.by_sweep:
        return f"Study '{s['study']}', made by another tool ({s['direction']} {s['objective']}): {counts}."
    return f"Study '{s['study']}' on {s['data']}: {counts}; {s['compute_s']:.1f} s of training in total."


def human(res: StudyResults, col: str, value) -> str:
    if value is None:
        return "-"
    if not res.by_sweep and col == res.objective.column:
        return res.objective.show(value)
    if col in ("val_acc", "test_acc", "val_mean", "test_mean", "val_std", "test_std") or col.startswith("val_acc_"):
        return f"{100 * value:.2f}%"
    if col == "train_s":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.2e}" if col in res.log_params else f"{value:.4g}"
    return str(value)


HEADERS = {"rank": "Rank", "trial": "Trial", "val_acc": "Val acc.", "test_acc": "Test acc.",
           "train_s": "Train s", "device": "Device", "val_mean": "Val mean", "val_std": "Val std",
           "test_mean": "Test mean", "test_std": "Test std", "n_seeds": "Seeds",
           **{f"val_acc_{c.lower()}": f"{c} (val)" for c in CLASSES}}


def render(res: StudyResults, trials: list[FrozenTrial], fmt: str, per_class: bool = False) -> str:
    cols = columns(res, per_class)
    rows = [raw_row(res, i + 1, t, per_class) for i, t in enumerate(trials)]
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else _csv_cell(v)) for k, v in r.items()})
        return out.getvalue()
    if fmt == "json":
        return dumps({"summary": summary(res), "columns": cols, "rows": rows}, indent=2) + "\n"
    heads = [res.objective.name if not res.by_sweep and c == res.objective.column else HEADERS.get(c, c) for c in cols]
    cells = [[human(res, c, r[c]) for c in cols] for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(map(_md_escape, heads)) + " |",
                 "|" + "|".join("---:" if c in ("rank", "trial") else "---" for c in cols) + "|"]
        lines += ["| " + " | ".join(_md_escape(x) for x in row) + " |" for row in cells]
        return "\n".join(lines) + "\n\n" + _md_escape(summary_line(res), cell=False) + "\n"
    if fmt == "latex":
        esc = _latex_escape
        lines = [f"% {printable(summary_line(res))}", "\\begin{tabular}{" + "r" * 2 + "l" * (len(cols) - 2) + "}", "\\toprule",
                 " & ".join(esc(h) for h in heads) + " \\\\", "\\midrule"]
        lines += [" & ".join(esc(x) for x in row) + " \\\\" for row in cells]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        def e(x: str) -> str:
            return html.escape(printable(x))

        head = "".join(f"<th>{e(h)}</th>" for h in heads)
        body = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>\n" for row in cells)
        return (f"<table class=\"best-params\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
                f"<p class=\"summary\">{e(summary_line(res))}</p>\n")
    raise SweepError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in printable(s))


# Every user string is escaped for the format it lands in, whatever was refused before it was
# stored (a study made by another tool may hold anything): control characters are written out
# (\n, \x1b), so that no newline ends a LaTeX comment or a Markdown table row.
_MD = {"|": "\\|", "\\": "\\\\", "[": "\\[", "]": "\\]", "`": "\\`", "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def _md_escape(s: str, cell: bool = True) -> str:
    """Markdown text: no raw HTML, no links, no code spans; in a table cell no column break."""
    out = "".join(_MD.get(ch, ch) for ch in printable(s))
    return out if cell or not out.startswith(("#", ">", "-", "+", "*", "=")) else "\\" + out


def _csv_cell(v):
    """A CSV cell a spreadsheet opens as text, never as a formula (=, +, -, @ first)."""
    if not isinstance(v, str):
        return v
    v = printable(v)
    return "'" + v if v.startswith(("=", "+", "-", "@")) else v
