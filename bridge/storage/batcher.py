"""Group commit: many writers, few transactions.

Writers ``submit`` and return at once; one task commits whatever has piled up
while the previous transaction was being fsync'd, in submission order, and
then runs each write's callback. Under load a batch naturally grows to cover
every document and connection that wrote meanwhile, so the fsync cost is paid
per batch instead of per change. A failed commit is retried (the writes stay
queued, in order): nothing is acknowledged that is not on disk.
"""

from __future__ import annotations

import logging
from typing import Callable

import anyio

from . import Store, Write

log = logging.getLogger(__name__)

OnDurable = Callable[[], None]


class GroupCommit:
    def __init__(self, store: Store, *, max_batch: int = 5000, retry_delay: float = 0.5) -> None:
        self.store = store
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self._pending: list[tuple[Write, OnDurable | None]] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self.commits = 0  # transactions committed
        self.writes = 0  # writes those transactions held

    def submit(self, write: Write, on_durable: OnDurable | None = None) -> None:
        self._pending.append((write, on_durable))
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    async def drain(self) -> None:
        """Wait until everything submitted so far is durable."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._pending:
                self._idle.set()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch = self._pending[: self.max_batch]
            try:
                await self.store.commit([write for write, _ in batch])
            except Exception:
                log.exception("commit of %d writes failed; retrying", len(batch))
                await anyio.sleep(self.retry_delay)
                continue
            del self._pending[: len(batch)]
            self.commits += 1
            self.writes += len(batch)
            for _, on_durable in batch:
                if on_durable is not None:
                    try:
                        on_durable()
                    except Exception:
                        log.exception("on_durable callback failed")
