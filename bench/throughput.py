"""Throughput: K Python BridgeClients on one document, each changing it as
fast as it can for a while, then flushing. Reports the changes per second one
server accepted and made durable (total changes / time until every flush
returned), checked against the server's saved document.
"""

from __future__ import annotations

import contextlib
import os
import time

import anyio
import httpx
from automerge import core

from bridge.client import BridgeClient

from . import servers
from .report import Table

DOC = "throughput"


async def _drive(server: servers.Server, clients: int, seconds: float, max_changes: int) -> dict:
    counts = [0] * clients
    made_at = [0.0] * clients
    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(BridgeClient(server.ws_url, peer=f"tp-{i}", flush_timeout=300))
                 for i in range(clients)]
        docs = [await peer.open(DOC) for peer in peers]
        start = time.monotonic()

        async def type_as_fast_as_possible(i: int) -> None:
            deadline = start + seconds
            while time.monotonic() < deadline and counts[i] < max_changes:
                with docs[i].change() as d:
                    d[f"c{i}"] = counts[i]
                counts[i] += 1
                await anyio.sleep(0)  # let the client's reader and writer run
            made_at[i] = time.monotonic()
            await docs[i].flush()

        with servers.Sampler(server.pid) as sampler, servers.Sampler(os.getpid()) as own:
            async with anyio.create_task_group() as tg:
                for i in range(clients):
                    tg.start_soon(type_as_fast_as_possible, i)
        end = time.monotonic()
    async with httpx.AsyncClient() as http:
        saved = (await http.get(f"{server.http_url}/docs/{DOC}", params={"format": "automerge"}, timeout=60)).content
    on_server = len(core.Document.load(saved).get_changes([]))
    return {
        "changes": sum(counts),
        "on_server": on_server,
        "typing_s": max(made_at) - start,
        "total_s": end - start,
        "cpu": sampler.usage.cpu_percent,
        "rss": sampler.usage.rss_mb_peak,
        "client_cpu": own.usage.cpu_percent,
    }


def run(quick: bool, clients: int = 10, seconds: float | None = None) -> Table:
    seconds = seconds or (3.0 if quick else 10.0)
    table = Table(
        "throughput",
        f"{clients} Python BridgeClients, one document, changes as fast as possible for {seconds:g} s, then flush",
        ["server", "clients", "changes", "on server", "typing s", "until flushed s", "changes/s accepted",
         "server CPU %", "server RSS MB", "clients CPU %"],
    )
    with servers.bridge(extra_args=["--flush-timeout", "300"]) as server:
        r = anyio.run(_drive, server, clients, seconds, 500_000)
    table.add("bridge (SQLite FULL)", clients, r["changes"], r["on_server"], r["typing_s"], r["total_s"],
              r["on_server"] / r["total_s"], r["cpu"], r["rss"], r["client_cpu"])
    table.note("changes/s accepted = changes in the server's saved document / (start .. every client's flush returned)")
    table.note(f"CPU % is of one core (100 = one core busy); the machine has {os.cpu_count()} cores")
    table.note("clients are Python BridgeClients in the harness process (one map key per client, one put per change)")
    return table
