"""Group commit gathers the writes of many writers into few transactions."""

from __future__ import annotations

import anyio
import pytest

from bridge.storage import AppendChanges
from bridge.storage.batcher import GroupCommit
from bridge.storage.memory import MemoryStore

from ..waiting import eventually

pytestmark = pytest.mark.anyio



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
        return await super().commit(writes)


async def test_writes_that_arrive_during_a_commit_share_the_next_one():
    store = SlowStore()
    committer = GroupCommit(store)
    durable: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        for i in range(200):
            committer.submit(AppendChanges(f"d{i % 7}", [(bytes([i]) * 32, b"x")]), lambda _, i=i: durable.append(i))
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
        committer.submit(AppendChanges("a", [(b"h" * 32, b"x")]), lambda _: durable.append(store.batches[:]))
        with anyio.fail_after(10):
            await committer.drain()
        tg.cancel_scope.cancel()
    assert durable == [[1]], "acknowledged only after the commit that succeeded"
    assert (await store.load("a")).change_bytes == [b"x"]
    assert committer.failing is None, "health clears once commits succeed again"


class PoisonStore(MemoryStore):
    """Any transaction holding a write for document ``poison`` fails, the way
    a write that breaks a constraint would; everything else commits."""

    async def commit(self, writes):
        if any(w.doc_id == "poison" for w in writes):
            raise ValueError("constraint violated")
        return await super().commit(writes)


async def test_one_poison_write_is_set_aside_and_everything_else_commits():
    store = PoisonStore()
    committer = GroupCommit(store, retry_delay=0.01)
    durable = []
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        for doc_id in ["a", "poison", "b"]:
            committer.submit(AppendChanges(doc_id, [(doc_id.encode() * 32, b"x")]), lambda _, d=doc_id: durable.append(d))
        with anyio.fail_after(10):
            await committer.drain()
        committer.submit(AppendChanges("c", [(b"c" * 32, b"x")]), lambda _: durable.append("c"))
        with anyio.fail_after(10):
            await committer.drain()
        tg.cancel_scope.cancel()
    assert durable == ["a", "b", "c"], "the poison write is never acknowledged, the others are"
    assert [(w.doc_id, why) for w, why in committer.poisoned] == [("poison", "constraint violated")]
    assert await store.load("poison") is None and committer.failing is None


async def test_a_store_that_fails_every_write_acknowledges_nothing_and_says_so():
    store = SlowStore(failures=10**9)
    committer = GroupCommit(store, retry_delay=0.01, max_retry_delay=0.02)
    durable = []
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        for i in range(3):
            committer.submit(AppendChanges(f"d{i}", [(bytes([i]) * 32, b"x")]), lambda _: durable.append(1))
        await eventually(lambda: committer.failing is not None)
        with anyio.move_on_after(0.5):
            await committer.drain()
        assert durable == [] and committer.poisoned == [], "nothing set aside when the store itself fails"
        assert "disk on fire" in committer.failing
        store.failures = 0
        with anyio.fail_after(10):
            await committer.drain()
        tg.cancel_scope.cancel()
    assert durable == [1, 1, 1] and committer.failing is None
