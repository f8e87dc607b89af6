"""Group commit gathers the writes of many writers into few transactions."""

from __future__ import annotations

import anyio
import pytest

from bridge.storage import AppendChanges
from bridge.storage.batcher import GroupCommit
from bridge.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class SlowStore(MemoryStore):
    """Each commit takes a while, like an fsync; the first ``failures`` fail."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.batches: list[int] = []

    async def commit(self, writes):
        await anyio.sleep(0.02)
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        self.batches.append(len(writes))
        await super().commit(writes)


async def test_writes_that_arrive_during_a_commit_share_the_next_one():
    store = SlowStore()
    committer = GroupCommit(store)
    durable: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        for i in range(200):
            committer.submit(AppendChanges(f"d{i % 7}", [(bytes([i]) * 32, b"x")]), lambda i=i: durable.append(i))
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()
        with anyio.fail_after(10):
            await committer.drain()
        tg.cancel_scope.cancel()
    assert durable == list(range(200)), "callbacks run once each, in submission order"
    assert sum(store.batches) == 200
    assert len(store.batches) <= 10, store.batches


async def test_failed_commits_are_retried_and_nothing_is_acknowledged_early():
    store = SlowStore(failures=2)
    committer = GroupCommit(store, retry_delay=0.01)
    durable = []
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        committer.submit(AppendChanges("a", [(b"h" * 32, b"x")]), lambda: durable.append(store.batches[:]))
        with anyio.fail_after(10):
            await committer.drain()
        tg.cancel_scope.cancel()
    assert durable == [[1]], "acknowledged only after the commit that succeeded"
    assert (await store.load("a")).changes == [b"x"]
