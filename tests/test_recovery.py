"""Defence in depth: if the core fails on something the checks let through,
the document goes back to its durable state and everyone resyncs.

The checks in bridge.core.validate stop every failure we know of, so to
reach the recovery path these tests switch the seq check off (the only thing
replaced is our own guard; the server, store and peers are real) and send the
change that makes the core panic.
"""

from __future__ import annotations

import pytest
from automerge import core

from bridge import create_app
from bridge.client import BridgeClient
from bridge.core import validate
from bridge.testing import serve_in_task

from . import crafting
from .rawpeer import RawPeer
from .test_integrity import honest_change, send_changes
from .waiting import eventually

pytestmark = pytest.mark.anyio



@pytest.fixture
def guard_without_seq_check(monkeypatch):
    original = validate.problem

    def lenient(change, view):
        reason = original(change, view)
        return None if reason and reason.startswith("seq") else reason

    monkeypatch.setattr(validate, "problem", lenient)


async def test_a_core_panic_costs_the_sender_a_doc_error_and_the_document_reloads(tmp_path, guard_without_seq_check):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge, BridgeClient(bridge.ws_url, peer="honest") as client:
        hub = app.state.hub
        doc = await client.open("fragile")
        for i in range(5):
            with doc.change() as d:
                d[f"k{i}"] = i
        await doc.flush(timeout=10)
        other = await client.open("other")

        mallory = await RawPeer.connect(bridge.ws_url, peer="mallory")
        theirs = core.Document()
        await mallory.sync_doc("fragile", theirs)
        gap = crafting.rewrite(honest_change(theirs, "gap", 1).bytes, seq=3)
        error = await send_changes(mallory, "fragile", [gap], [crafting.change_hash(gap)])
        assert error["code"] == "bad_sync" and error["doc"] == "fragile"

        await eventually(lambda: hub.recoveries == 1 and hub.loaded["fragile"].recovering is None, timeout=10)
        live = hub.loaded["fragile"]
        assert core.extract(live.doc) == {f"k{i}": i for i in range(5)}, "back to the durable state, without the panic's debris"

        # Everyone on the document resyncs and keeps editing; other docs never noticed.
        for i in range(5, 10):
            with doc.change() as d:
                d[f"k{i}"] = i
        with other.change() as d:
            d["fine"] = True
        await doc.flush(timeout=10)
        await other.flush(timeout=10)
        assert core.extract(live.doc) == {f"k{i}": i for i in range(10)}
        await mallory.send({"t": "flush", "id": 9, "docs": {"fragile": []}})
        assert (await mallory.recv_until(lambda f: f["t"] == "flushed"))["id"] == 9, "the sender's connection stays up"
        assert hub.health()["status"] == "ok"
