"""The test suite itself: it writes nothing into the checkout, and says what it could not test."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_pytest_keeps_no_cache_in_the_checkout(pytestconfig):
    """pyproject.toml turns pytest's cache plugin off: no .pytest_cache/ appears beside the code."""
    assert pytestconfig.pluginmanager.get_plugin("cacheprovider") is None


def test_a_run_without_chromium_ends_by_saying_how_to_get_it(tmp_path):
    (tmp_path / "test_page.py").write_text("from tests import browser\n\n\n"
                                           "def test_page():\n    browser.chromium()\n")
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_REQUIRE_BROWSER"}
    env.update(PATH="", PYTHONPATH=str(ROOT))  # no browser on the path
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                        str(tmp_path / "test_page.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout + r.stderr
    assert "1 browser test skipped: chromium not found; install it with `apt-get install chromium`" in r.stdout
