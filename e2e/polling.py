"""Bounded waits for the browser tests (Playwright's sync API: no event loop here)."""

from __future__ import annotations

import time


def eventually(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
