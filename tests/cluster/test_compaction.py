"""Two bridges compacting one document in one PostgreSQL store at the same
time, each holding edits the other has not seen: nothing is lost."""

from __future__ import annotations

import contextlib

import anyio
import pytest
from automerge import core

from bridge.cluster.node import ClusterNode
from bridge.hub import Hub
from bridge.storage import open_store
from tests.services import RedisServer, postgres_url  # noqa: F401 (fixture)
from tests.subscribers import Quiet
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


def edit(hub: Hub, live, key: str, n: int) -> None:
    for i in range(n):
        before = live.doc.get_heads()
        with live.doc.transaction() as tx:
            tx.put(core.ROOT, f"{key}{i}", core.ScalarType.Int, i)
        hub.change_locally(live, before, None)


@contextlib.asynccontextmanager
async def shared_stores(url: str, n: int = 2):
    """``n`` open stores on one database: ``n`` bridges' views of it."""
    stores = [open_store(url) for _ in range(n)]
    try:
        for store in stores:
            await store.open()
        yield stores
    finally:
        for store in stores:
            await store.close()


async def run_hub(hub: Hub, tg, node: ClusterNode | None = None) -> None:
    await tg.start(hub.run)
    if node is not None:
        await tg.start(node.run, hub)


async def test_concurrent_compactions_of_diverged_copies_lose_nothing(postgres_url):  # noqa: F811
    async with shared_stores(postgres_url) as stores, anyio.create_task_group() as tg:
        hubs = [Hub(store, compact_after=10**9) for store in stores]
        for hub in hubs:
            await run_hub(hub, tg)
        # A common base, then each bridge's own edits (no bus between them).
        first = await hubs[0].subscribe("doc", Quiet())
        edit(hubs[0], first, "base", 5)
        await hubs[0].drain()
        lives = [first, await hubs[1].subscribe("doc", Quiet())]
        edit(hubs[0], lives[0], "a", 30)
        edit(hubs[1], lives[1], "b", 30)
        async with anyio.create_task_group() as both:
            for hub, live in zip(hubs, lives):
                both.start_soon(hub._compact, live)
        for hub in hubs:
            await hub.drain()
        gens = sorted(live.store_gen for live in lives)
        assert gens == [0, 1], "one compaction won; the other was skipped as stale"
        # Compact the winner again, twice, so that rows and the older
        # snapshot are retired: the loser's rows must survive it.
        winner = next(i for i, live in enumerate(lives) if live.store_gen == 1)
        for _ in range(2):
            edit(hubs[winner], lives[winner], f"more{_}", 1)
            await hubs[winner]._compact(lives[winner])
        stored = await stores[0].load("doc")
        loaded = core.Document.load(stored.as_bytes())
        keys = set(loaded.keys(core.ROOT))
        assert {f"a{i}" for i in range(30)} <= keys and {f"b{i}" for i in range(30)} <= keys
        assert {f"base{i}" for i in range(5)} <= keys
        for snapshot in stored.snapshots:  # each snapshot plus the rows is whole
            again = core.Document.load(snapshot + b"".join(stored.change_bytes))
            assert set(again.keys(core.ROOT)) == keys
        tg.cancel_scope.cancel()


async def test_a_bridge_whose_compaction_was_skipped_catches_up_and_compacts_again(postgres_url):  # noqa: F811
    async with shared_stores(postgres_url) as stores:
        with RedisServer() as redis:
            from bridge.cluster import open_bus

            async with anyio.create_task_group() as tg:
                nodes = [ClusterNode(store, open_bus(redis.url), heal_interval=0.3) for store in stores]
                hubs = [Hub(store, compact_after=10**9, replicator=node) for store, node in zip(stores, nodes)]
                for hub, node in zip(hubs, nodes):
                    await run_hub(hub, tg, node)
                lives = [await hub.subscribe("doc", Quiet()) for hub in hubs]
                edit(hubs[0], lives[0], "a", 10)
                edit(hubs[1], lives[1], "b", 10)
                await eventually(lambda: lives[0].doc.get_heads() == lives[1].doc.get_heads())
                await hubs[0]._compact(lives[0])
                assert lives[0].store_gen == 1
                await hubs[1]._compact(lives[1])  # its base (0) is stale now
                await eventually(lambda: lives[1].store_gen == 1, timeout=10)  # healed: read the newer snapshot
                await hubs[1]._compact(lives[1])
                assert lives[1].store_gen == 2
                stored = await stores[0].load("doc")
                assert core.Document.load(stored.as_bytes()).get_heads() == lives[0].doc.get_heads()
                tg.cancel_scope.cancel()
