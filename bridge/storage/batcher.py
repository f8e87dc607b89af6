"""Group commit: many writers, few transactions.

Writers ``submit`` and return at once; one task commits whatever has piled up
while the previous transaction was being fsync'd, in submission order, and
then runs each write's callback. Under load a batch naturally grows to cover
every document and connection that wrote meanwhile, so the fsync cost is paid
per batch instead of per change. Nothing is acknowledged that is not on disk.

A failed commit is retried, with growing delays, for as long as it takes: a
store that is down stops acknowledgements, never loses what waits. But one
bad write must not stop saving for everyone: when a batch has failed twice,
its writes are committed one at a time. A write that fails alone while the
others succeed is *poison*: it is set aside (its callback never runs, so
nothing in it is acknowledged), logged, and counted in ``poisoned``. If every
write fails alone, the store itself is failing (``failing``, shown in health)
and the batch is retried whole.
"""

from __future__ import annotations

import logging

from ..logs import get_logger
import time
from typing import Callable

import anyio

from ..metrics import Metrics, uncounted
from . import Committed, Store, Write

log = get_logger(__name__)

# Called once the write is committed, with what the store did with it.
OnDurable = Callable[[Committed], None]


class GroupCommit:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 5000,
        retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or uncounted()
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._pending: list[tuple[Write, OnDurable | None]] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self.commits = 0  # transactions committed
        self.writes = 0  # writes those transactions held
        self.poisoned: list[tuple[Write, str]] = []  # writes set aside (most recent 100)
        self.failing: str | None = None  # why commits fail, while they do
        self.failing_since = 0.0

    @property
    def queued(self) -> int:
        """Writes waiting for a commit (the one under way included)."""
        return len(self._pending)

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
        failures = 0
        while True:
            if not self._pending:
                self._idle.set()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch = self._pending[: self.max_batch]
            try:
                results = await self._commit([write for write, _ in batch])
            except Exception as exc:
                failures += 1
                self._note_failure(exc, len(batch))
                if failures >= 2 and await self._commit_one_by_one(batch):
                    failures = 0
                    continue
                await anyio.sleep(min(self.retry_delay * 2 ** min(failures - 1, 10), self.max_retry_delay))
                continue
            failures = 0
            self.failing = None
            del self._pending[: len(batch)]
            self._done(batch, results)

    async def _commit(self, writes: list[Write]) -> list[Committed]:
        """One transaction, timed (a failed one is counted instead)."""
        started = time.perf_counter()
        try:
            results = await self.store.commit(writes)
        except Exception:
            self.metrics.commit_failures.inc()
            raise
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        return results

    def _note_failure(self, exc: Exception, size: int) -> None:
        if self.failing is None:
            self.failing_since = time.time()
            log.exception("commit of %d writes failed; nothing in it is acknowledged; retrying", size)
        self.failing = f"{type(exc).__name__}: {exc}"[:300]

    async def _commit_one_by_one(self, batch: list[tuple[Write, OnDurable | None]]) -> bool:
        """Commit ``batch`` write by write. True if any write succeeded (so
        the failures were the writes', not the store's): failed writes are
        then set aside. False, leaving the batch queued, if none succeeded."""
        outcomes = [(item, await self._try_alone(item[0])) for item in batch]
        if all(exc is not None for _, (exc, _) in outcomes):
            return False
        # Others committed: give each failed write one more try on its own,
        # so a store that came back half-way through is not mistaken for
        # poison in the writes it failed before it did.
        outcomes = [
            (item, outcome if outcome[0] is None else await self._try_alone(item[0])) for item, outcome in outcomes
        ]
        del self._pending[: len(batch)]
        self.failing = None
        for item, (exc, result) in outcomes:
            if exc is None:
                self._done([item], [result])
            else:
                log.error("write set aside, it fails alone while others commit: %r: %s", _describe(item[0]), exc)
                self.metrics.writes_set_aside.inc()
                self.poisoned = (self.poisoned + [(item[0], str(exc))])[-100:]
        return True

    async def _try_alone(self, write: Write) -> tuple[Exception | None, Committed]:
        try:
            (result,) = await self._commit([write])
        except Exception as exc:
            return exc, Committed()
        return None, result

    def _done(self, batch: list[tuple[Write, OnDurable | None]], results: list[Committed]) -> None:
        self.commits += 1
        self.writes += len(batch)
        self.metrics.commit_batch.observe(len(batch))
        for (_, on_durable), result in zip(batch, results, strict=True):
            if on_durable is not None:
                try:
                    on_durable(result)
                except Exception:
                    log.exception("on_durable callback failed")


def _describe(write: Write) -> str:
    return f"{type(write).__name__}({write.doc_id!r})"
