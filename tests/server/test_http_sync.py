"""Stateless HTTP sync (POST /docs/{id}/sync) with the Python HttpSyncClient
beside WebSocket clients, and hostile requests as raw bytes."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from automerge import core

from bridge.client import BridgeClient
from bridge.httpsync import HttpSyncClient, HttpSyncError
from bridge.server.app import create_app
from bridge.testing import serve_in_task
from bridge.tokens import TokenAuth, mint

pytestmark = pytest.mark.anyio

SECRET = "http-sync-secret-" + "q" * 30


async def test_an_http_client_and_a_websocket_client_converge_and_sync_means_durable(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, HttpSyncClient(bridge.http_url) as http:
        doc = http.doc("shared")
        with doc.change() as d:
            d["from_http"] = 1
        durable = await doc.sync()
        assert durable == doc.heads  # committed before the answer came
        stored = await app.state.hub.store.load("shared")
        assert stored is not None and stored.changes

        async with BridgeClient(bridge.ws_url) as ws:
            remote = await ws.open("shared")
            await remote.wait_for(doc.heads)
            with remote.change() as d:
                d["from_ws"] = 2
            await remote.flush()
            await doc.sync()  # only what it lacks comes back
            assert doc.to_py() == {"from_http": 1, "from_ws": 2}
            with doc.change() as d:
                d["from_http"] = 3
            await doc.sync()
            await remote.wait_for(doc.heads)
            assert remote.to_py() == {"from_http": 3, "from_ws": 2}

        # A fresh HTTP client gets the whole document from nothing.
        async with HttpSyncClient(bridge.http_url) as another:
            other = another.doc("shared")
            await other.sync()
            assert other.to_py() == {"from_http": 3, "from_ws": 2} and other.heads == doc.heads

        async with doc.syncing(every=0.05):  # on an interval, and once more at the end
            with doc.change() as d:
                d["late"] = "yes"
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(f"{bridge.http_url}/docs/shared")).json()["late"] == "yes"


async def test_bad_requests_are_400_and_unknown_documents_404(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        for body in (b"", b"\xc1", msgspec.msgpack.encode({"have": ["not bytes"]}),
                     msgspec.msgpack.encode({"have": [b"short"]}),
                     msgspec.msgpack.encode({"changes": b"not automerge"})):
            answer = await http.post("/docs/d/sync", content=body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"] in ("bad_request", "bad_changes")
        assert (await http.post("/docs/nothing-here/sync", content=msgspec.msgpack.encode({}))).status_code == 404
        # Heads the server never had: the client gets everything, not an error.
        async with HttpSyncClient(bridge.http_url) as client:
            doc = client.doc("d2")
            with doc.change() as d:
                d["x"] = 1
            await doc.sync()
        lied = await http.post("/docs/d2/sync", content=msgspec.msgpack.encode({"have": [b"\x01" * 32]}))
        answer = msgspec.msgpack.decode(lied.content)
        everything = core.Document.load(answer["changes"])
        assert everything.get_heads() == answer["heads"] == doc.heads
        assert (await http.post("/docs/d2/sync", content=b"x" * (65 * 1024 * 1024))).status_code == 413


async def test_authorization_is_the_websockets(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=TokenAuth(secret=SECRET))
    writer = mint(SECRET, sub="w", write=["*"])
    reader = mint(SECRET, sub="r", read=["*"])
    async with serve_in_task(app) as bridge:
        async with HttpSyncClient(bridge.http_url, token=writer) as client:
            doc = client.doc("doc")
            with doc.change() as d:
                d["v"] = 1
            await doc.sync()
        async with HttpSyncClient(bridge.http_url, token=reader) as client:
            doc = client.doc("doc")
            await doc.sync()  # reading is allowed
            assert doc.to_py() == {"v": 1}
            with doc.change() as d:
                d["v"] = 2
            with pytest.raises(HttpSyncError) as refused:
                await doc.sync()
            assert (refused.value.status, refused.value.code) == (403, "read_only")
        async with HttpSyncClient(bridge.http_url) as anonymous:
            with pytest.raises(HttpSyncError) as refused:
                await anonymous.doc("doc").sync()
            assert refused.value.status == 401
        stored = await app.state.hub.store.load("doc")
        assert core.Document.load(stored.as_bytes()).get_heads() == doc.server_heads, "the reader's change was not merged"
