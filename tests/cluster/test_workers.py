"""`automerge-bridge serve --workers N`: N bridge processes behind one port."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import psutil
import pytest

from bridge.client import BridgeClient
from bridge.testing import serve_in_subprocess
from tests.services import RedisServer, fresh_database
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def bridge(tmp_path):
    with fresh_database() as store, RedisServer() as redis, serve_in_subprocess(
        tmp_path, log=tmp_path / "bridge.log",
        extra_args=["--workers", "2", "--store", store, "--bus", redis.url, "--heal-interval", "0.5"],
    ) as bridge:
        yield bridge


async def test_two_workers_behind_one_port_serve_one_set_of_documents(bridge):
    workers = psutil.Process(bridge.process.pid).children(recursive=True)
    assert len([w for w in workers if "python" in w.name().lower()]) >= 2

    # Both workers answer on the one port: each is a bridge of its own
    # (its own node id), found by asking until both have answered.
    nodes: set[str] = set()
    with anyio.fail_after(20):
        while len(nodes) < 2:
            with httpx.Client() as http:  # a new connection each time
                health = http.get(f"{bridge.http_url}/healthz").json()
            nodes.add(health["cluster"]["node"])
            await anyio.sleep(0.01)

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(BridgeClient(bridge.ws_url)) for _ in range(6)]
        docs = [await client.open("workers") for client in clients]
        for i, doc in enumerate(docs):
            with doc.change() as d:
                d[f"k{i}"] = i
        for doc in docs:
            await doc.flush()
        expected = {f"k{i}": i for i in range(6)}
        await eventually(lambda: all(doc.to_py() == expected for doc in docs), timeout=20)
    assert httpx.get(f"{bridge.http_url}/readyz").json()["ready"]
