"""A real headless Chromium for page tests, driven by Playwright; the system's Chromium, never a download.

Install it with `scripts/install_test_browser.sh` (Debian: apt-get install -y chromium).
Without it the tests that need it fail with that instruction: a missing browser is not a pass.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "no Chromium found on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + "); install it with "
    "`scripts/install_test_browser.sh` (Debian/Ubuntu: apt-get install -y chromium), or point "
    "RAYSEL_TEST_CHROMIUM at a Chromium binary"
)


def find_chromium() -> str:
    """Path of a Chromium binary: $RAYSEL_TEST_CHROMIUM, else the first of CHROMIUM_NAMES on PATH; fails the test otherwise."""
    explicit = os.environ.get("RAYSEL_TEST_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"RAYSEL_TEST_CHROMIUM={explicit!r} is not an executable file")
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT)


@contextlib.contextmanager
def chromium_page(timeout_ms: int = 15_000) -> Iterator[object]:
    """A Playwright page in a fresh headless Chromium; every wait on it is bounded by `timeout_ms`."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]' (it drives the system Chromium)")
    executable = find_chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], timeout=timeout_ms)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
