"""What arrives on the bus is checked like a peer's input: garbage, crafted
Automerge data and forged sequence numbers cost a bridge nothing lasting.

(Anyone who can publish on the bus can also publish valid changes: the bus
is as trusted as the store. docs/cluster.md says to keep Redis private.)"""

from __future__ import annotations

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from automerge import core

from bridge.cluster import open_bus
from bridge.cluster.node import Changes, ClusterNode
from bridge.hub import Hub
from tests.cluster.test_compaction import edit, shared_stores
from tests.subscribers import Quiet
from tests.services import RedisServer, postgres_url  # noqa: F401 (fixture)
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_garbage_crafted_data_and_forged_sequences_on_the_bus(postgres_url):  # noqa: F811
    async with shared_stores(postgres_url) as stores:
        with RedisServer() as server:
            async with anyio.create_task_group() as tg:
                nodes = [ClusterNode(store, open_bus(server.url), heal_interval=0.3) for store in stores]
                hubs = [Hub(store, replicator=node) for store, node in zip(stores, nodes)]
                for hub, node in zip(hubs, nodes):
                    await tg.start(hub.run)
                    await tg.start(node.run, hub)
                lives = [await hub.subscribe("doc", Quiet()) for hub in hubs]
                await eventually(lambda: all(node.bus.connected for node in nodes))
                edit(hubs[0], lives[0], "honest", 3)
                await eventually(lambda: lives[1].doc.get_heads() == lives[0].doc.get_heads())

                channel = b"automerge-bridge:doc:doc"
                crafted = b"\x85\x6f\x4a\x83" + b"\xff" * 200  # a change chunk's magic, then junk
                publisher = aioredis.Redis.from_url(server.url)
                try:
                    for payload in [
                        b"not msgpack at all \x00\xff",
                        msgspec.msgpack.encode(["c", "intruder", 0, 1]),  # wrong shape
                        msgspec.msgpack.encode(Changes("intruder", 0, 10**9, crafted)),
                        msgspec.msgpack.encode(Changes("intruder", 10**9, 10**9 + 5, b"")),
                    ]:
                        await publisher.publish(channel, payload)
                finally:
                    await publisher.aclose()
                await eventually(lambda: nodes[1].refused >= 2)
                # The forged ranges are forgotten after the next store read;
                # honest edits keep flowing both ways.
                await eventually(lambda: nodes[1].health()["docs_with_gaps"] == 0, timeout=10)
                edit(hubs[1], lives[1], "after", 3)
                edit(hubs[0], lives[0], "more", 3)
                await eventually(lambda: lives[1].doc.get_heads() == lives[0].doc.get_heads())
                keys = set(lives[1].doc.keys(core.ROOT))
                assert {"honest0", "after2", "more2"} <= keys
                tg.cancel_scope.cancel()
