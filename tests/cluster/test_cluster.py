"""Several bridge processes sharing one PostgreSQL store and one Redis bus.

Real processes (`automerge-bridge serve --store postgresql://... --bus
redis://...`), real PostgreSQL and Redis (tests/services.py), real clients.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator

import anyio
import httpx
import pytest

from bridge.client import BridgeClient
from bridge.testing import RunningBridge, serve_in_subprocess
from tests.services import RedisServer, fresh_database, restart_postgres
from tests.waiting import eventually

from .balancer import Balancer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class Cluster:
    def __init__(self, tmp_path: Path, store: str, redis: RedisServer, stack: contextlib.ExitStack) -> None:
        self.tmp_path, self.store, self.redis, self._stack = tmp_path, store, redis, stack
        self.nodes: list[RunningBridge] = []

    def start(self, *, port: int | None = None) -> RunningBridge:
        name = f"node{len(self.nodes)}"
        node = self._stack.enter_context(serve_in_subprocess(
            self.tmp_path / name, port=port, log=self.tmp_path / f"{name}.log",
            extra_args=["--store", self.store, "--bus", self.redis.url, "--heal-interval", "0.5", "--log-level", "info"],
        ))
        self.nodes.append(node)
        return node


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with fresh_database() as store, RedisServer() as redis, contextlib.ExitStack() as stack:
        cluster = Cluster(tmp_path, store, redis, stack)
        for _ in range(3):
            cluster.start()
        yield cluster


def sessions(client: BridgeClient) -> list[str]:
    """Record the client's connection states (to count its reconnects)."""
    states: list[str] = []
    original = client._set_state

    def record(state: str) -> None:
        states.append(state)
        original(state)

    client._set_state = record  # type: ignore[method-assign]
    return states


async def test_peers_on_three_nodes_converge_on_concurrent_text_and_map_edits(cluster):
    a, b, c = cluster.nodes
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(BridgeClient(node.ws_url, peer=f"p{i}"))
            for i, node in enumerate([a, b, c, a, b, c])
        ]
        docs = [await client.open("shared") for client in clients]
        with docs[0].change() as d:
            d["body"] = "hello"
        await docs[0].flush()
        await eventually(lambda: all("body" in doc.to_py() for doc in docs))
        for round_ in range(5):
            for i, doc in enumerate(docs):
                with doc.change() as d:
                    d[f"k{i}"] = round_
                    d["body"].insert(0, f"{i}")
        for doc in docs:
            await doc.flush()
        await eventually(lambda: len({tuple(sorted(doc.heads)) for doc in docs}) == 1, timeout=20)
        final = docs[0].to_py()
        assert {k: v for k, v in final.items() if k != "body"} == {f"k{i}": 4 for i in range(6)}
        assert len(str(final["body"])) == len("hello") + 30 and str(final["body"]).endswith("hello")


async def test_a_live_edit_and_presence_cross_nodes(cluster):
    a, b, _ = cluster.nodes
    async with BridgeClient(a.ws_url) as on_a, BridgeClient(b.ws_url) as on_b:
        doc_a, doc_b = await on_a.open("live"), await on_b.open("live")
        with doc_a.change() as d:
            d["typed"] = "x"
        await eventually(lambda: doc_b.to_py() == {"typed": "x"})

        received: list[tuple[str, str, bytes]] = []

        async def listen() -> None:
            async for item in on_b.ephemeral_messages():
                received.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            # Presence is latest-state and may be sent before B's node follows
            # the channel: send until one arrives.
            with anyio.fail_after(10):
                while not received:
                    on_a.ephemeral("live", b"cursor at 3")
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        doc, sender, data = received[0]
        assert (doc, data) == ("live", b"cursor at 3") and sender == on_a.peer


async def test_flushed_on_one_node_is_seen_by_a_fresh_peer_on_another(cluster):
    a, _, c = cluster.nodes
    async with BridgeClient(c.ws_url) as watcher:
        await watcher.open("durable")  # node C has the document loaded already
        async with BridgeClient(a.ws_url) as writer:
            doc = await writer.open("durable")
            for i in range(20):
                with doc.change() as d:
                    d[f"k{i}"] = i
                await doc.flush()
                # A fresh peer on C, right after the flush: the change is in
                # what C sends it first (C catches up from the store on open).
                async with BridgeClient(c.ws_url) as fresh:
                    seen = await fresh.open("durable")
                    await seen.wait_synced()
                    assert seen.to_py().get(f"k{i}") == i


async def test_kill_9_of_a_node_loses_nothing_acknowledged_and_its_peers_move_to_another(cluster):
    nodes = cluster.nodes
    with Balancer([node.port for node in nodes]) as balancer:
        async with BridgeClient(balancer.ws_url, peer="writer", backoff_max=0.5) as writer:
            doc = await writer.open("crash")
            victim = next(node for node in nodes if node.port == balancer.connections[-1])
            acknowledged: dict[str, int] = {}
            for i in range(200):
                with doc.change() as d:
                    d[f"k{i}"] = i
                if i % 10 == 9:
                    await doc.flush()
                    acknowledged.update({f"k{j}": j for j in range(i + 1)})
                if i == 120:
                    os.kill(victim.process.pid, signal.SIGKILL)
            # The writer reconnected through the balancer to a live node, and
            # everything it wrote, before the kill or after, is durable.
            await doc.flush(timeout=30)
            assert balancer.connections[-1] != victim.port
        survivor = next(node for node in nodes if node is not victim)
        async with BridgeClient(survivor.ws_url) as reader:
            seen = await reader.open("crash")
            await seen.wait_synced()
            assert seen.to_py() == {f"k{i}": i for i in range(200)}
            assert acknowledged.items() <= seen.to_py().items()


async def test_nodes_converge_after_redis_restarts_without_clients_reconnecting(cluster):
    a, b, c = cluster.nodes
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(BridgeClient(node.ws_url)) for node in (a, b, c)]
        states = [sessions(client) for client in clients]
        docs = [await client.open("through-a-restart") for client in clients]
        for i in range(60):
            for n, doc in enumerate(docs):
                with doc.change() as d:
                    d[f"n{n}-{i}"] = i
            if i == 20:
                cluster.redis.stop()  # messages published now are lost
            if i == 40:
                cluster.redis.start()
            await anyio.sleep(0.01)
        for doc in docs:
            await doc.flush()
        expected = {f"n{n}-{i}": i for n in range(3) for i in range(60)}
        try:
            await eventually(lambda: all(doc.to_py() == expected for doc in docs), timeout=20)
        except TimeoutError:
            for doc in docs:
                print("MISSING", sorted(set(expected) - set(doc.to_py())), doc.heads)
            for node in cluster.nodes:
                print(httpx.get(f"{node.http_url}/healthz").json().get("cluster"))
            raise
        assert all(s.count("online") <= 1 for s in states), f"no client reconnected: {states}"


async def test_while_redis_is_down_nodes_still_converge_through_the_store(cluster):
    a, b, _ = cluster.nodes
    cluster.redis.stop()
    async with BridgeClient(a.ws_url) as on_a, BridgeClient(b.ws_url) as on_b:
        doc_a, doc_b = await on_a.open("no-bus"), await on_b.open("no-bus")
        with doc_a.change() as d:
            d["from_a"] = 1
        with doc_b.change() as d:
            d["from_b"] = 2
        await eventually(lambda: doc_a.to_py() == doc_b.to_py() == {"from_a": 1, "from_b": 2}, timeout=15)
        ready = httpx.get(f"{a.http_url}/readyz").json()
        assert not ready["ready"] and any(p.startswith("bus") for p in ready["problems"])


async def test_postgres_restart_acknowledges_nothing_uncommitted_and_writes_resume(cluster):
    a, b, _ = cluster.nodes
    async with BridgeClient(a.ws_url) as writer:
        doc = await writer.open("pg-restart")
        flushed: dict[str, int] = {}
        for i in range(40):
            with doc.change() as d:
                d[f"k{i}"] = i
            if i == 20:
                with anyio.fail_after(60):
                    await anyio.to_thread.run_sync(restart_postgres)
            if i % 5 == 4:
                await doc.flush(timeout=60)
                flushed.update({f"k{j}": j for j in range(i + 1)})
        assert len(flushed) == 40, "writes resumed after the restart, and were acknowledged"
    # Read back through another node, which loads from the store.
    async with BridgeClient(b.ws_url) as reader:
        seen = await reader.open("pg-restart")
        await seen.wait_synced()
        assert flushed.items() <= seen.to_py().items()
    ready = httpx.get(f"{a.http_url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"]


async def test_a_node_refuses_to_acknowledge_while_the_store_is_down(cluster):
    from tests.services import start_postgres, stop_postgres

    a = cluster.nodes[0]
    async with BridgeClient(a.ws_url) as writer:
        doc = await writer.open("pg-down")
        with doc.change() as d:
            d["before"] = 1
        await doc.flush()
        stop_postgres()
        try:
            with doc.change() as d:
                d["during"] = 2
            from bridge.errors import FlushTimeout

            with pytest.raises(FlushTimeout):
                await doc.flush(timeout=1.5)
            assert httpx.get(f"{a.http_url}/readyz").status_code == 503
        finally:
            start_postgres()
        await doc.flush(timeout=30)  # it recovers by itself
