"""Scenario 4, durable acknowledgement: edit, then wait until it is durable;
one round at a time.

The bridge answers ``flush`` once the change is committed to SQLite (WAL,
``synchronous=FULL``: fsync'd). automerge-repo has no durable acknowledgement;
for it we report the time until its storage directory holds a chunk with the
change (``fs.writeFile``, no fsync), observed by polling the directory.
"""

from __future__ import annotations

import time

import anyio

from bridge.client import BridgeClient

from . import servers
from .drivers import run_node
from .report import Table, median, percentile, ratio


async def _python_flush_rtts(server: servers.Server, rounds: int) -> list[float]:
    rtts = []
    async with BridgeClient(server.ws_url, peer="durable") as client:
        doc = await client.open("durable")
        for i in range(rounds):
            with doc.change() as d:
                d["n"] = i
            t0 = time.perf_counter()
            await doc.flush(timeout=30)
            rtts.append((time.perf_counter() - t0) * 1000)
    return rtts


def run(quick: bool) -> Table:
    rounds = 50 if quick else 300
    repo_rounds = 20 if quick else 60
    table = Table("4-durable", "durable acknowledgement: edit, then wait until durable; one round at a time",
                  ["server", "client", "rounds", "p50 ms", "p99 ms", "what is measured", "p50 ratio", "p99 ratio"])
    repo = None
    if servers.node_available():
        with servers.repo_server() as server:
            repo = run_node("durable.mjs", {"target": "repo", "url": server.ws_url, "rounds": repo_rounds,
                                            "store": server.data_dir, "pause": 200}, timeout=180)["ms"]
        table.add("automerge-repo server", "Node automerge-repo", repo_rounds, median(repo), percentile(repo, 99),
                  "edit -> its storage dir holds the change (no fsync; no ack exists)", None, None)
    with servers.bridge() as server:
        node = run_node("durable.mjs", {"target": "bridge", "url": server.ws_url, "rounds": rounds}, timeout=180)["ms"]
        python = anyio.run(_python_flush_rtts, server, rounds)
    r50, r99 = (median(repo), percentile(repo, 99)) if repo else (None, None)
    table.add("bridge (SQLite WAL, synchronous=FULL)", "Node raw protocol v1", rounds, median(node),
              percentile(node, 99), "edit -> flushed (fsync'd, acknowledged)", ratio(median(node), r50),
              ratio(percentile(node, 99), r99))
    table.add("bridge (SQLite WAL, synchronous=FULL)", "Python BridgeClient", rounds, median(python),
              percentile(python, 99), "edit -> flushed (fsync'd, acknowledged)", ratio(median(python), r50),
              ratio(percentile(python, 99), r99))
    table.add("core floor", "automerge.core", None, None, None, "n/a: no storage", None, None)
    table.note("ratios compare different guarantees: the bridge's fsync'd acknowledgement against the moment "
               "automerge-repo's file appears (its client is never told); the repo rounds are 200 ms apart")
    return table
