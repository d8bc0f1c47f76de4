"""`sweep export` and `sweep report` on a study made by a real `sweep run`."""

import csv
import io
import json
import re

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweep.cli import app
from tests import browser

runner = CliRunner()


def sweep(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_csv_agrees_with_optunas_best_trial(made_study):
    url, name = made_study
    r = sweep("export", "--storage", url, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    best = optuna.load_study(study_name=name, storage=url).best_trial
    assert list(rows[0])[:2] == ["rank", "trial"]
    assert int(rows[0]["trial"]) == best.number and rows[0]["rank"] == "1"
    assert float(rows[0]["val_acc"]) == best.value  # full precision
    assert float(rows[0]["lr"]) == best.params["lr"]
    assert rows[0]["optimizer"] == best.params["optimizer"]
    assert float(rows[0]["test_acc"]) == best.user_attrs["test_acc"]
    values = [float(r["val_acc"]) for r in rows]
    assert values == sorted(values, reverse=True)
    complete = [t for t in optuna.load_study(study_name=name, storage=url).trials if t.state == TrialState.COMPLETE]
    assert len(rows) == min(10, len(complete))


def test_every_format_is_deterministic_and_human_where_meant(made_study, tmp_path):
    url, _ = made_study
    for fmt in ("csv", "md", "latex", "json", "html"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        assert sweep("export", "--storage", url, "-f", fmt, "-o", a).exit_code == 0
        assert sweep("export", "--storage", url, "-f", fmt, "-o", b).exit_code == 0
        assert a.read_bytes() == b.read_bytes(), fmt
    md = (tmp_path / "a.md").read_text()
    assert md.startswith("| Rank | Trial | epochs | batch_size | lr | optimizer | Val acc. | Test acc. | Train s | Device |")
    assert re.search(r"\| \d\.\d\de-0\d \|", md)  # lr in scientific notation
    assert re.search(r"\| \d+\.\d\d% \|", md)  # accuracy in %
    assert re.search(r"\d+ complete, \d+ pruned, \d+ failed trials; [\d.]+ s of training", md)
    tex = (tmp_path / "a.latex").read_text()
    assert "\\toprule" in tex and "batch\\_size" in tex and "\\%" in tex
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["summary"]["complete"] >= 1 and data["rows"][0]["rank"] == 1
    assert "<table" in (tmp_path / "a.html").read_text()


def test_top_and_by_optimizer(made_study):
    url, name = made_study
    r = sweep("export", "--storage", url, "-f", "json", "--top", "2")
    assert len(json.loads(r.stdout)["rows"]) == 2
    r = sweep("export", "--storage", url, "-f", "json", "--by", "optimizer")
    rows = json.loads(r.stdout)["rows"]
    trials = optuna.load_study(study_name=name, storage=url).trials
    for row in rows:
        same = [t.value for t in trials if t.state == TrialState.COMPLETE and t.params["optimizer"] == row["optimizer"]]
        assert row["val_acc"] == max(same)
    assert len({row["optimizer"] for row in rows}) == len(rows) >= 1


def test_export_bad_input(made_study, tmp_path):
    url, _ = made_study
    cases = [
        (["export", "--storage", url, "--study", "nope"], "no study 'nope'.*made"),
        (["export", "--storage", f"sqlite:///{tmp_path}/none.db"], "no such file"),
        (["export", "--storage", url, "-f", "xlsx"], "unknown format 'xlsx'"),
        (["export", "--storage", url, "--by", "colour"], "--by colour: not a parameter"),
        (["export", "--storage", url, "-o", tmp_path / "no" / "dir.md"], "cannot write"),
        (["report", "--storage", url, "-o", tmp_path / "no" / "r.html"], "cannot write"),
        (["report", "--storage", url, "--study", "nope"], "no study 'nope'"),
    ]
    for args, expected in cases:
        r = sweep(*args)
        assert r.exit_code == 2, (args, r.output)
        assert re.search(expected, r.output) and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "none.db").exists()


def test_empty_study_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(study_name="empty", storage=url)
    r = sweep("export", "--storage", url)
    assert r.exit_code == 2 and "no complete trial" in r.output
    r = sweep("report", "--storage", url, "-o", tmp_path / "r.html")
    assert r.exit_code == 2 and "no trials yet" in r.output and not (tmp_path / "r.html").exists()


def test_report_is_self_contained(made_study, tmp_path):
    url, _ = made_study
    out = tmp_path / "report.html"
    r = sweep("report", "--storage", url, "-o", out)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert page.count("plotly.js v") == 1 or page.count("* plotly.js") == 1  # the library, once
    assert "<script src=" not in page and "cdn" not in page.lower().split("</head>")[1]
    for title in ("Optimization history", "Parameter importances", "Parallel coordinates", "Slice plots",
                  "by optimizer", "Val accuracy per epoch", "Accuracy against training time",
                  "confusion matrix on val", "confusion matrix on test", "Best parameters"):
        assert title in page, title


def test_report_compares_several_studies(made_study, tmp_path):
    url, name = made_study
    merged = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=merged, to_study_name="first")
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=merged, to_study_name="second")
    out = tmp_path / "cmp.html"
    assert sweep("report", "--storage", merged, "--study", "first", "--study", "second", "-o", out).exit_code == 0
    page = out.read_text()
    assert 'id="comparison"' in page and 'id="study-first"' in page and 'id="study-second"' in page


def test_report_renders_in_headless_chromium(made_study, tmp_path):
    url, _ = made_study
    out = tmp_path / "report.html"
    assert sweep("report", "--storage", url, "-o", out).exit_code == 0
    n_figures = out.read_text().count('class="plotly-graph-div"')
    assert n_figures >= 9
    dom, errors = browser.render(out.as_uri(), screenshot="report.png", size="1280,2600")
    assert errors == [], errors
    # Plotly marks each div it has drawn with js-plotly-plot and fills it with an SVG.
    assert dom.count("js-plotly-plot") >= n_figures, "some figures did not render"
    assert dom.count('class="main-svg"') >= n_figures


def test_report_titles_sit_above_the_figures_and_log_axes_read_by_decade(made_study, tmp_path):
    """Plotly's toolbar covered titles drawn inside figures, and lr ticks ran together ("100μ0.001")."""
    url, name = made_study
    out = tmp_path / "report.html"
    assert sweep("report", "--storage", url, "-o", out).exit_code == 0
    page = out.read_text()
    assert "<h4>Optimization history</h4>" in page and '"title":{"text":"Optimization history"' not in page
    assert '"exponentformat":"power"' in page and '"dtick":1' in page  # the slice plot's lr axis
    pruned = sum(t.state == TrialState.PRUNED for t in optuna.load_study(study_name=name, storage=url).trials)
    curves = next(line for line in page.split("<h4>")[1:] if line.startswith("Val accuracy per epoch"))
    assert ("pruned" in curves.split("</h4>")[0]) == (pruned > 0)


def test_the_readme_picture_of_a_report_shows_the_reports_layout_now(made_study, tmp_path):
    """docs/report.png is made by `python -m benchmarks.report_image`, which records beside it the
    report's layout (each figure's kind, in order). A report drawn now must show the same figures:
    where it does not, the picture is older than the layout and must be made again."""
    import json
    from pathlib import Path

    from benchmarks.report_image import layout

    docs = Path(__file__).resolve().parents[1] / "docs"
    meta = json.loads((docs / "report.json").read_text())
    assert (docs / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    url, _ = made_study
    out = tmp_path / "report.html"
    assert sweep("report", "--storage", url, "-o", out).exit_code == 0
    assert layout(out.read_text()) == meta["layout"], \
        "docs/report.png is older than the report's layout: make it again with python -m benchmarks.report_image"
    assert meta["study"] == "quick" and meta["trials"].get("complete", 0) + meta["trials"].get("pruned", 0) == 50
