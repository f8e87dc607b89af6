"""Scenario 1, cold catch-up: a new client fetches a document of 1k / 10k /
100k changes. Time from connect to converged, and bytes on the client's socket.

The document is written to each server's storage first and the server is
started on it, so the first fetch finds the server cold; later fetches (fresh
client each time) find it loaded ("warm").
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
from automerge import core

from bridge.client import BridgeClient

from . import docs, servers
from .drivers import node_json, run_node
from .report import Table, median, ratio

REPEAT = 4  # first is cold


def core_floor(saved: bytes) -> dict:
    """Sync a loaded document into an empty one in-process: no network, no storage."""
    source = core.Document.load(saved)
    target = core.Document()
    s_state, t_state = core.SyncState(), core.SyncState()
    down = up = 0
    t0 = time.perf_counter()
    for _ in range(1000):
        progressed = False
        if (message := source.generate_sync_message(s_state)) is not None:
            data = message.encode()
            down += len(data)
            target.receive_sync_message(t_state, core.Message.decode(data))
            progressed = True
        if (message := target.generate_sync_message(t_state)) is not None:
            data = message.encode()
            up += len(data)
            source.receive_sync_message(s_state, core.Message.decode(data))
            progressed = True
        if not progressed:
            break
    ms = (time.perf_counter() - t0) * 1000
    assert target.get_heads() == source.get_heads()
    return {"ms": ms, "down": down, "up": up}


def _bridge(saved: bytes, heads: list[str], size: int, directory: Path) -> dict:
    doc_id = f"catchup-{size}"
    with servers.bridge(directory) as server:
        answer = httpx.post(f"{server.http_url}/docs/{doc_id}/changes", content=saved, timeout=120)
        answer.raise_for_status()
    with servers.bridge(directory) as server:  # restarted: the document is on disk only
        node = run_node("catchup.mjs", {"target": "bridge", "url": server.ws_url, "doc": doc_id,
                                        "heads": ",".join(heads), "repeat": REPEAT}, timeout=300)
        python_ms = anyio.run(_python_fetch, server.ws_url, doc_id)
    return {"node": node["runs"], "python_ms": python_ms}


async def _python_fetch(url: str, doc_id: str) -> float:
    t0 = time.perf_counter()
    async with BridgeClient(url, peer="catchup-py") as client:
        await client.open(doc_id, timeout=120)
        ms = (time.perf_counter() - t0) * 1000
    return ms


def _repo(saved: bytes, heads: list[str], directory: Path) -> list[dict]:
    file = directory / "seed.automerge"
    file.write_bytes(saved)
    url = node_json("seed_repo.mjs", str(directory / "store"), str(file))["url"]
    with servers.repo_server(directory / "store") as server:
        return run_node("catchup.mjs", {"target": "repo", "url": server.ws_url, "doc": url,
                                        "heads": ",".join(heads), "repeat": REPEAT}, timeout=300)["runs"]


def run(quick: bool, sizes: tuple[int, ...] | None = None) -> Table:
    sizes = sizes or ((1_000, 10_000) if quick else (1_000, 10_000, 100_000))
    table = Table("1-catchup", "cold catch-up: a new client fetches a document of N changes",
                  ["changes", "peer", "client", "cold ms", "warm ms (median)", "bytes down", "bytes up",
                   "cold ratio", "warm ratio"])
    for size in sizes:
        saved = docs.typed_text(size)
        heads = docs.heads_hex(saved)
        floor = core_floor(saved)
        with servers.data_dir("catchup-bridge") as bdir, servers.data_dir("catchup-repo") as rdir:
            bridge = _bridge(saved, heads, size, bdir)
            repo = _repo(saved, heads, rdir) if servers.node_available() else None
        b_cold, b_warm = bridge["node"][0]["ms"], median([r["ms"] for r in bridge["node"][1:]])
        table.add(size, "core floor (in-process)", "automerge.core (Python)", None, floor["ms"], floor["down"],
                  floor["up"], None, None)
        if repo:
            r_cold, r_warm = repo[0]["ms"], median([r["ms"] for r in repo[1:]])
            table.add(size, "automerge-repo server", "Node automerge-repo", r_cold, r_warm,
                      repo[0]["bytes"]["read"], repo[0]["bytes"]["written"], None, None)
        else:
            r_cold = r_warm = None
        table.add(size, "bridge", "Node raw protocol v1", b_cold, b_warm, bridge["node"][0]["bytes"]["read"],
                  bridge["node"][0]["bytes"]["written"], ratio(b_cold, r_cold), ratio(b_warm, r_warm))
        table.add(size, "bridge", "Python BridgeClient", None, bridge["python_ms"], None, None, None,
                  ratio(bridge["python_ms"], r_warm))
    table.note("time: connect .. the client's document holds the server's heads; fresh client and connection each fetch")
    table.note(f"cold = first fetch after the server started on storage holding the document; warm = median of the next {REPEAT - 1}")
    table.note("bytes: the client's TCP socket (WebSocket handshake + frames), cold fetch; core floor: sync message bytes")
    table.note("ratios are bridge / automerge-repo (lower is better for the bridge); the core floor row has no network or storage")
    table.note("the document: one text typed a character per change by 4 authors taking turns; saved sizes "
               + ", ".join(f"{s:,}: {len(docs.typed_text(s)):,} B" for s in sizes))
    return table
