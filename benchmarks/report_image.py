"""The README's picture of a report: `sweep report` of a study, rendered by headless Chromium.

    python -m benchmarks.report_image [--storage sqlite:///sweep.db] [--study quick] [-o docs/report.png]

Writes the PNG and, beside it, `report.json`: the commit the study's trials trained at, the commit
and versions the picture was made with, the study it shows (trials by state), and the report's layout (each figure's kind, in order: the part of its
title before any colon or parenthesis). tests/test_export_report.py compares that layout with what the current
code draws, so a picture older than the report's layout is told, not left to rot.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from html import unescape
import shutil
import subprocess
import tempfile
from pathlib import Path

SIZE = "1280,2600"  # the browser window, in CSS pixels: the whole first study section of a report


def layout(html: str) -> list[str]:
    """The kinds of figure a report holds, in order: each figure's title up to any colon or
    parenthesis (what follows counts the study's trials)."""
    titles = re.findall(r'<div class="figure[^"]*"><(?:h4|b)>(.*?)</(?:h4|b)>', html)
    return [re.split(r"[:(]", unescape(t))[0].strip() for t in titles]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", default="sqlite:///sweep.db")
    p.add_argument("--study", default="quick")
    p.add_argument("-o", "--output", default="docs/report.png")
    args = p.parse_args(argv)

    import optuna

    from sweep.provenance import git_commit, versions_line
    from sweep.report import build_report
    from sweep.storage import open_storage
    from sweep.stored import pick_study

    study = pick_study(open_storage(args.storage, create=False), args.study)
    html = build_report([study])
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("report_image: headless Chromium is needed (apt-get install chromium)")
    out = Path(args.output).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html)
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--window-size={SIZE}", "--virtual-time-budget=20000",
                        f"--screenshot={out}", page.as_uri()], check=True, capture_output=True, timeout=180)
    states = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] += 1
    trained = Counter(str(t.user_attrs.get("git_commit")) for t in study.get_trials(deepcopy=False))
    meta = {"study_commit": trained.most_common(1)[0][0] if trained else None, "made_with": git_commit(),
            "versions": versions_line(), "study": study.study_name,
            "trials": {k: v for k, v in states.items() if v}, "window": SIZE, "layout": layout(html)}
    out.with_name("report.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))
    return meta


if __name__ == "__main__":
    main()
