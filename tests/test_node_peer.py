"""A peer driven by @automerge/automerge 3.x in Node converges with Python clients."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest

from bridge.client import BridgeClient

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "tests" / "node" / "peer.mjs"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not (ROOT / "node_modules" / "@automerge" / "automerge").is_dir() or not shutil.which("node"),
        reason="needs `npm ci` (the README's test command runs it)",
    ),
]



async def test_node_automerge_peer_converges_with_python_clients(bridge_server):
    async with BridgeClient(bridge_server.ws_url, peer="py-a") as a, BridgeClient(bridge_server.ws_url, peer="py-b") as b:
        doc_a = await a.open("mixed")
        with doc_a.change() as d:
            d["text"] = "python"
            d["py_a"] = 1
        await doc_a.flush()

        node = await anyio.open_process(
            ["node", str(PEER), bridge_server.ws_url, "mixed", "node-peer", "5", "py_a,py_b,py_late"],
            cwd=ROOT,
        )
        events = []
        async with node:
            # Edits from Python while the Node peer is syncing:
            doc_b = await b.open("mixed")
            with doc_b.change() as d:
                d["py_b"] = 2
            await doc_b.flush()
            with doc_a.change() as d:
                d["py_late"] = 3
            await doc_a.flush()
            with anyio.fail_after(30):
                buffer = b""
                async for chunk in node.stdout:
                    buffer += chunk
                await node.wait()
            events = [json.loads(line) for line in buffer.decode().splitlines()]
        assert node.returncode == 0, events
        done = events[-1]
        assert done["event"] == "done"
        assert any(e["event"] == "flushed" for e in events)

        for doc in (doc_a, doc_b):
            await doc.wait_for([bytes.fromhex(h) for h in done["heads"]])
        assert sorted(h.hex() for h in doc_a.heads) == sorted(done["heads"])
        assert doc_a.to_py() == doc_b.to_py() == done["doc"]
        assert done["doc"]["text"] == "node python"
        assert {"py_a", "py_b", "py_late"} | {f"node_{i}" for i in range(5)} <= set(done["doc"])
