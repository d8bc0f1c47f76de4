"""Headless Chromium for the tests: the JavaScript-rendered DOM, console errors, a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# What a skip says where Chromium is missing; tests/conftest.py counts these skips at the end of a run.
NOT_FOUND = "chromium not found"
HOW_TO_INSTALL = "install it with `apt-get install chromium` (Debian, Ubuntu)"
# Screenshots, for a person to look at: $SWEEP_TEST_ARTIFACTS, else a folder under the system's temp.
ARTIFACTS = Path(os.environ.get("SWEEP_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "sweep-test-artifacts")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("SWEEP_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is required here (SWEEP_REQUIRE_BROWSER) but not installed")
        pytest.skip(f"{NOT_FOUND}; {HOW_TO_INSTALL}")
    return exe


def render(url: str, *, budget_ms: int = 15000, screenshot: str | None = None,
           size: str = "1280,1800") -> tuple[str, list[str]]:
    """(DOM after scripts ran, console error lines) for `url`; optionally a PNG in ARTIFACTS."""
    exe = chromium()
    with tempfile.TemporaryDirectory() as profile:
        common = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                  f"--virtual-time-budget={budget_ms}", "--enable-logging=stderr", "--v=0"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        if screenshot:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            subprocess.run([*common, f"--screenshot={ARTIFACTS / screenshot}", url], capture_output=True,
                           text=True, timeout=120)
    # Chromium logs every console message at INFO with no level: exceptions and error texts are
    # what we can tell apart.
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and any(w in line for w in ("Uncaught", "Error", "error", "Failed"))]
    return dom.stdout, errors
