"""Playwright (Python) against Debian's Chromium and a real bridge process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bridge.testing import serve_in_subprocess

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium")


def pytest_collection_modifyitems(items):
    if not Path(CHROMIUM).exists() or not (ROOT / "web" / "dist" / "client.js").exists():
        skip = pytest.mark.skip(reason="needs /usr/bin/chromium and a built web/dist (make test does both)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance):
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser):
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture
def bridge(tmp_path):
    """A real `automerge-bridge serve` process with its own data directory."""
    with serve_in_subprocess(tmp_path / "data") as running:
        yield running


# Token auth (bridge/tokens.py): HS256 secrets need at least 32 characters.
AUTH_SECRET = "e2e-s3cret-e2e-s3cret-e2e-s3cret-e2e"


@pytest.fixture
def auth_secret() -> str:
    return AUTH_SECRET


@pytest.fixture
def auth_bridge(tmp_path, auth_secret):
    """A real `automerge-bridge serve --auth-secret ...`: every peer needs a token."""
    with serve_in_subprocess(tmp_path / "auth-data", extra_args=["--auth-secret", auth_secret]) as running:
        yield running
