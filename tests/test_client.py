"""The Python client against a real bridge, on asyncio and on trio."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest
from automerge import ImmutableString

from bridge import create_app
from bridge.client import BridgeClient, BridgeError
from bridge.testing import serve_in_thread

from .waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]  # the client must hold on asyncio and trio


async def test_change_flush_and_read_back(bridge_server):
    async with BridgeClient(bridge_server.ws_url, peer="writer") as client:
        doc = await client.open("notes")
        with doc.change() as d:
            d["title"] = "Groceries"
            d["items"] = ["milk", "eggs"]
            d["version"] = ImmutableString("1.0")
        heads = await doc.flush()
        assert heads == doc.heads
    view = httpx.get(f"{bridge_server.http_url}/docs/notes").json()
    assert view == {"title": "Groceries", "items": ["milk", "eggs"], "version": "1.0"}


async def test_strings_are_text_like_in_javascript(bridge_server):
    async with BridgeClient(bridge_server.ws_url) as client:
        doc = await client.open("text-convention")
        with doc.change() as d:
            d["body"] = "hello"
        with doc.change() as d:
            d["body"].insert(5, " world")
        assert str(doc.root["body"]) == "hello world"


@pytest.mark.parametrize("n_clients", [2, 10])
async def test_concurrent_clients_converge(bridge_server, n_clients):
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(BridgeClient(bridge_server.ws_url, peer=f"c{i}")) for i in range(n_clients)
        ]
        docs = [await client.open("shared") for client in clients]
        for i, doc in enumerate(docs):
            with doc.change() as d:
                d[f"from_{i}"] = i
        for round_ in range(5):
            for i, doc in enumerate(docs):
                with doc.change() as d:
                    d[f"round_{round_}_{i}"] = round_
        for doc in docs:
            await doc.flush()
        expected = {f"from_{i}": i for i in range(n_clients)} | {
            f"round_{r}_{i}": r for r in range(5) for i in range(n_clients)
        }
        await eventually(lambda: all(doc.to_py() == expected for doc in docs))
        assert len({tuple(sorted(doc.heads)) for doc in docs}) == 1


async def test_updates_report_remote_changes(bridge_server):
    async with BridgeClient(bridge_server.ws_url) as a, BridgeClient(bridge_server.ws_url) as b:
        doc_a, doc_b = await a.open("updates"), await b.open("updates")
        with doc_a.change() as d:
            d["n"] = 1
        with anyio.fail_after(10):
            async for heads in doc_b.updates():
                if doc_b.to_py() == {"n": 1}:
                    break
        assert heads == doc_a.heads


async def test_open_returns_with_the_durable_state(bridge_server):
    async with BridgeClient(bridge_server.ws_url) as writer:
        doc = await writer.open("preexisting")
        with doc.change() as d:
            d["ready"] = True
        await doc.flush()
    async with BridgeClient(bridge_server.ws_url) as reader:
        doc = await reader.open("preexisting")
        assert doc.to_py() == {"ready": True}


async def test_ephemeral_messages_reach_other_peers(bridge_server):
    async with BridgeClient(bridge_server.ws_url, peer="alice") as a, BridgeClient(bridge_server.ws_url, peer="bob") as b:
        await a.open("presence")
        await b.open("presence")
        a.ephemeral("presence", b"alice is typing")
        with anyio.fail_after(10):
            async for doc_id, sender, data in b.ephemeral_messages():
                assert (doc_id, sender, data) == ("presence", "alice", b"alice is typing")
                break


async def test_offline_edits_sync_after_the_server_comes_back(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None)) as first:
            port = first.port
            client = await stack.enter_async_context(BridgeClient(first.ws_url, backoff_initial=0.02, backoff_max=0.2))
            doc = await client.open("offline")
            with doc.change() as d:
                d["before"] = 1
            await doc.flush()
        # The server is gone: edits keep being made locally.
        await eventually(lambda: client.status == "offline")
        with doc.change() as d:
            d["during"] = 2
        # Same data directory, same port: the client finds it by itself.
        with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None), port=port) as second:
            await eventually(lambda: client.connections >= 2, timeout=30)
            await doc.flush()
            await client.close()
            assert httpx.get(f"{second.http_url}/docs/offline").json() == {"before": 1, "during": 2}


async def test_flush_survives_a_dropped_connection(bridge_server):
    async with BridgeClient(bridge_server.ws_url, backoff_initial=0.02) as client:
        doc = await client.open("dropped")
        with doc.change() as d:
            d["x"] = 1
        # Drop the connection while the flush is in flight: the flush is
        # re-sent after the reconnect and still answers.
        first = client.connections
        async with anyio.create_task_group() as tg:
            tg.start_soon(doc.flush)
            await client._ws.close(1011, "dropped by the test")
        assert client.connections > first
    assert httpx.get(f"{bridge_server.http_url}/docs/dropped").json() == {"x": 1}


async def test_refused_token_fails_fast(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=lambda hello: hello.token == "ok")
    with serve_in_thread(app) as running:
        async with BridgeClient(running.ws_url, token="nope") as client:
            with pytest.raises(BridgeError) as info:
                await client.wait_online(timeout=10)
            assert info.value.code == "closed"
