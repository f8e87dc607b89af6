"""In-process documents, HTTP routes, load-once, idle unload and compaction."""

from __future__ import annotations

import anyio
import httpx
import pytest
from automerge import core
from starlette.applications import Starlette
from starlette.routing import Mount

from bridge import create_app, open_local
from bridge.client import BridgeClient
from bridge.storage import open_store
from bridge.testing import serve_in_task

from .waiting import eventually

pytestmark = pytest.mark.anyio


async def test_in_process_change_is_persisted_and_relayed(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as running:
        hub = app.state.hub
        async with BridgeClient(running.ws_url) as client:
            remote = await client.open("orders")
            async with open_local(hub, "orders", peer="billing") as local:
                with local.change() as d:
                    d["status"] = "paid"
                await local.flush()
                await remote.wait_for(local.heads)
                assert remote.to_py() == {"status": "paid"}

                # ...and the service hears about remote edits.
                with remote.change() as d:
                    d["shipped"] = True
                with anyio.fail_after(10):
                    async for _ in local.updates():
                        if local.to_py().get("shipped"):
                            break
    stored = open_store(f"sqlite:///{tmp_path / 'bridge.sqlite3'}")
    await stored.open()
    doc = core.Document.load((await stored.load("orders")).as_bytes())
    await stored.close()
    assert core.extract(doc) == {"status": "paid", "shipped": True}


async def test_a_failed_change_block_is_rolled_back(tmp_path):
    app = create_app(store="memory:", web_dir=None)
    async with serve_in_task(app):
        async with open_local(app.state.hub, "rollback") as local:
            with pytest.raises(RuntimeError):
                with local.change() as d:
                    d["half"] = "done"
                    raise RuntimeError("boom")
            assert local.to_py() == {}


async def test_http_routes(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as running:
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            assert (await http.get("/healthz")).json()["status"] == "ok"
            assert (await http.get("/docs/missing")).status_code == 404
            assert (await http.get("/docs/bad%20id")).status_code == 400

            doc = core.Document()
            with doc.transaction() as tx:
                tx.put(core.ROOT, "a", core.ScalarType.Int, 1)
            answer = await http.post("/docs/posted/changes", content=doc.save())
            assert answer.status_code == 200
            assert answer.json() == {"heads": [h.hex() for h in doc.get_heads()]}

            # Change chunks that depend on what the server already has.
            with doc.transaction() as tx:
                tx.put(core.ROOT, "b", core.ScalarType.Int, 2)
            chunk = doc.get_last_local_change().bytes
            assert (await http.post("/docs/posted/changes", content=chunk)).status_code == 200
            assert (await http.get("/docs/posted")).json() == {"a": 1, "b": 2}

            binary = (await http.get("/docs/posted", params={"format": "automerge"})).content
            assert core.Document.load(binary).get_heads() == doc.get_heads()

            bad = await http.post("/docs/posted/changes", content=b"not automerge")
            assert bad.status_code == 400 and bad.json()["error"] == "bad_changes"
            assert (await http.post("/docs/posted/changes", content=b"")).status_code == 400
            assert (await http.get("/docs/posted")).json() == {"a": 1, "b": 2}


async def test_concurrent_opens_load_once_and_idle_docs_unload(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'bridge.sqlite3'}")
    loads = []
    original = store.load

    async def counting_load(doc_id):
        loads.append(doc_id)
        return await original(doc_id)

    store.load = counting_load
    app = create_app(store, web_dir=None, idle_unload_after=0.2, compact_after=10)
    async with serve_in_task(app):
        hub = app.state.hub
        handles = []

        async def open_one():
            async with open_local(hub, "busy") as doc:
                handles.append(doc)
                with doc.change() as d:
                    d[f"k{len(handles)}"] = len(handles)
                await doc.flush()

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(open_one)
        assert loads == ["busy"]
        assert len({id(h.live) for h in handles}) == 1
        await eventually(lambda: "busy" not in hub.loaded, timeout=10)
        # Unloading compacted the document into a snapshot that holds it all
        # (the rows it covers stay until a later snapshot covers them too).
        stored = await original("busy")
        assert stored.snapshot is not None
        assert core.extract(core.Document.load(stored.snapshot)) == {f"k{i}": i for i in range(1, 21)}
        async with open_local(hub, "busy") as doc:
            assert doc.to_py() == {f"k{i}": i for i in range(1, 21)}
        assert loads == ["busy", "busy"]


async def test_mounting_inside_another_app(tmp_path):
    bridge_app = create_app(data_dir=tmp_path, web_dir=None)
    outer = Starlette(routes=[Mount("/bridge", bridge_app)], lifespan=bridge_app.router.lifespan_context)
    async with serve_in_task(outer) as running:
        async with BridgeClient(f"ws://127.0.0.1:{running.port}/bridge/sync") as client:
            doc = await client.open("mounted")
            with doc.change() as d:
                d["ok"] = True
            await doc.flush()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{running.http_url}/bridge/docs/mounted")).json() == {"ok": True}


async def test_http_routes_use_the_same_authentication(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=lambda hello: hello.token == "sesame")
    async with serve_in_task(app) as running:
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            doc = core.Document()
            with doc.transaction() as tx:
                tx.put(core.ROOT, "a", core.ScalarType.Int, 1)
            assert (await http.post("/docs/auth/changes", content=doc.save())).status_code == 401
            assert (await http.post("/docs/auth/changes?token=nope", content=doc.save())).status_code == 401
            assert (await http.post("/docs/auth/changes?token=sesame", content=doc.save())).status_code == 200
            assert (await http.get("/docs/auth")).status_code == 401
            answer = await http.get("/docs/auth", headers={"Authorization": "Bearer sesame"})
            assert answer.json() == {"a": 1}
            assert (await http.get("/healthz")).status_code == 200


async def test_durability_of_old_new_and_unknown_heads(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app):
        async with open_local(app.state.hub, "heads") as doc:
            with doc.change() as d:
                d["n"] = 1
            first = doc.heads
            await doc.flush()
        async with open_local(app.state.hub, "heads") as doc:
            live = doc.live
            with doc.change() as d:
                d["n"] = 2
            second = doc.heads
            assert not live.is_durable(second), "accepted, not yet committed"
            await doc.flush()
            assert live.is_durable(first) and live.is_durable(second) and live.is_durable(first + second)
            assert not live.is_durable([b"\x09" * 32])
