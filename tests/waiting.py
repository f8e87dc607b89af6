"""Bounded waits for tests: never a bare sleep before an assert."""

from __future__ import annotations

from typing import Callable

import anyio


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)


async def nothing_happens_for(seconds: float) -> None:
    """An observation window, for asserting that something does NOT happen
    (no reconnect, no retry) in it: there is no condition to wait on."""
    with anyio.move_on_after(seconds):
        await anyio.sleep_forever()
