"""The admin routes against a real bridge, with real clients and tokens."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from bridge.client import BridgeClient
from bridge.errors import DocError
from bridge.server.app import create_app
from bridge.testing import serve_in_task
from bridge.tokens import TokenAuth, mint

from ..rawpeer import RawPeer
from ..waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "admin-test-secret-" + "x" * 30


async def _write(client: BridgeClient, doc_id: str, **values) -> list[bytes]:
    doc = await client.open(doc_id)
    with doc.change() as d:
        for key, value in values.items():
            d[key] = value
    return await doc.flush(timeout=10)


async def test_list_pages_through_every_document_with_size_and_change_time(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        started = time.time()
        async with BridgeClient(bridge.ws_url) as client:
            for n in range(5):
                await _write(client, f"doc-{n}", n=n, text=os.urandom(100 * n).hex())  # incompressible
        first = (await http.get("/admin/docs", params={"limit": 2})).json()
        assert [d["id"] for d in first["docs"]] == ["doc-0", "doc-1"] and first["next"] == "doc-1"
        second = (await http.get("/admin/docs", params={"limit": 2, "after": first["next"]})).json()
        third = (await http.get("/admin/docs", params={"limit": 2, "after": second["next"]})).json()
        assert [d["id"] for d in second["docs"] + third["docs"]] == ["doc-2", "doc-3", "doc-4"]
        assert third["next"] is None
        sizes = [d["size"] for d in first["docs"] + second["docs"] + third["docs"]]
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0] + 400  # longer text, more bytes
        assert all(started - 1 <= d["changed_at"] <= time.time() + 1 for d in first["docs"])
        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"after": "bad id!"}):
            assert (await http.get("/admin/docs", params=bad)).status_code == 400


async def test_one_documents_heads_and_size_and_compaction_now(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, compact_after=10_000)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        async with BridgeClient(bridge.ws_url) as client:
            for n in range(30):
                heads = await _write(client, "busy", n=n)
            view = (await http.get("/admin/docs/busy")).json()
            assert view["heads"] == [h.hex() for h in heads] and view["loaded"] and view["peers"] == 1
            compacted = (await http.post("/admin/docs/busy/compact")).json()
            assert compacted["compacted"] is True
            stored = await app.state.hub.store.load("busy")
            assert stored.gen == 1 and stored.snapshots
            # The peer goes on editing the compacted document.
            more = await _write(client, "busy", n=99)
        assert (await http.get("/admin/docs/busy")).json()["heads"] == [h.hex() for h in more]
        assert (await http.get("/admin/docs/nope")).status_code == 404
        assert (await http.post("/admin/docs/nope/compact")).status_code == 404


async def test_delete_tells_the_peers_and_leaves_nothing_stored(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        async with BridgeClient(bridge.ws_url, peer="editor") as client:
            await _write(client, "doomed", secret="x")
            await _write(client, "kept", y=1)
            raw = await RawPeer.connect(bridge.ws_url, peer="watcher")
            await raw.send({"t": "open", "doc": "doomed"})
            await raw.recv_until(lambda f: f["t"] == "saved")

            assert (await http.delete("/admin/docs/doomed")).json() == {"deleted": "doomed"}
            error = await raw.recv_until(lambda f: f["t"] == "error")
            assert (error["code"], error["doc"]) == ("not_found", "doomed")
            doomed = client.docs["doomed"]
            await eventually(lambda: doomed.error is not None)
            with pytest.raises(DocError, match="deleted"):
                doomed.raise_if_failed()

            assert await app.state.hub.store.load("doomed") is None
            assert [d["id"] for d in (await http.get("/admin/docs")).json()["docs"]] == ["kept"]
            assert (await http.get("/docs/doomed")).status_code == 404
            assert (await http.delete("/admin/docs/doomed")).status_code == 404
            # Whatever the watcher sends for it now is not applied to anything.
            await raw.send({"t": "sync", "doc": "doomed", "data": b"\x42"})
            assert (await raw.recv_until(lambda f: f["t"] == "error"))["code"] == "not_open"
            await raw.close()
        # Restarted, the bridge finds nothing of it either.
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        assert (await http.get("/docs/doomed")).status_code == 404
        assert (await http.get("/docs/kept")).json() == {"y": 1}


async def test_with_auth_only_admin_tokens_get_in(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=TokenAuth(secret=SECRET))
    writer = mint(SECRET, sub="writer", write=["*"])
    admin = mint(SECRET, sub="ops", admin=True)
    async with serve_in_task(app) as bridge, httpx.AsyncClient(base_url=bridge.http_url) as http:
        async with BridgeClient(bridge.ws_url, token=writer) as client:
            await _write(client, "d", x=1)
        for method, path in (("GET", "/admin/docs"), ("GET", "/admin/docs/d"), ("POST", "/admin/docs/d/compact"),
                             ("DELETE", "/admin/docs/d")):
            assert (await http.request(method, path)).status_code == 401
            answer = await http.request(method, path, headers={"Authorization": f"Bearer {writer}"})
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
        assert (await http.get("/docs/d", headers={"Authorization": f"Bearer {writer}"})).json() == {"x": 1}
        listed = await http.get("/admin/docs", headers={"Authorization": f"Bearer {admin}"})
        assert [d["id"] for d in listed.json()["docs"]] == ["d"]
        deleted = await http.delete("/admin/docs/d", headers={"Authorization": f"Bearer {admin}"})
        assert deleted.status_code == 200


async def test_delete_is_refused_while_bridges_share_the_store():
    """With a bus, the other bridges would keep their loaded copies and write
    their peers' changes back: refused until deletion crosses the bus."""
    from bridge.hub import Hub, Standalone
    from bridge.storage.memory import MemoryStore

    class Clustered:  # any replicator but the standalone one: it does what Standalone does
        def __getattr__(self, name):
            return getattr(Standalone(), name)

    hub = Hub(MemoryStore(), replicator=Clustered())
    with pytest.raises(NotImplementedError, match="share a store"):
        await hub.delete("d")
