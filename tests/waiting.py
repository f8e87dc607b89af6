"""Bounded waits for tests: never a bare sleep before an assert."""

from __future__ import annotations

from typing import Callable

import anyio


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)
