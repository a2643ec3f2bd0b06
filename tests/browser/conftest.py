"""Headless Chromium for the page's tests: Debian's `chromium`, driven by Playwright's Python package.

The browser is the distribution's (`scripts/install_chromium.sh` installs it when missing); no
browser is ever downloaded by Playwright. Each module gets one browser with a fresh profile; each
test a fresh tab (so a fresh `sessionStorage`: no token carries over). Screenshots of the states a
reviewer wants to see land in `var/screenshots/` (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "var" / "screenshots"
LAPTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed first when missing (skipped only when that is impossible)."""
    if not os.access(CHROMIUM, os.X_OK):
        run = subprocess.run(
            [str(REPO / "scripts" / "install_chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if not os.access(CHROMIUM, os.X_OK):
            reason = f"chromium is missing and could not be installed: {run.stderr.strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=LAPTOP,
            locale="en-US",
            accept_downloads=True,
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh tab; a script error on the page fails the test."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    tab.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="session")
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
