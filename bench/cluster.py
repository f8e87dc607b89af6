"""Scenario "cluster": what sharing the store and adding processes costs and buys.

Three deployments of the same bridge, each against fresh state:

- ``1 process, SQLite``: the default (WAL, synchronous=FULL);
- ``1 process, PostgreSQL``: the shared store alone (``--store postgresql://``);
- ``--workers 2, PostgreSQL + Redis``: two processes behind one port, sharing
  the store and the bus; the kernel spreads the clients' connections over
  them, so a document's peers sit on both and every change crosses the bus.

Measured in each: many documents (the manydocs driver), one hot document
(the typing driver), and the flush round trip with the server's CPU per
change, the bridge's and PostgreSQL's apart. Then two bridges on two ports
(one store, one bus): the edit-to-peer latency when both peers are on one
node against when they are on different nodes.

PostgreSQL and Redis are real servers: the machine's PostgreSQL (a fresh
database per deployment, dropped afterwards) and a private redis-server.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import anyio
import psutil

from tests.services import RedisServer, fresh_database

from . import manydocs, servers, typing_live
from .durable import _python_flush_rtts
from .report import Table, median, percentile, ratio

WORKERS = 2
HOT_CLIENTS = 8  # below what 2 Node drivers sharing 2 cores with the servers can host


@dataclass
class Deployment:
    name: str
    server: servers.Server
    tree: bool  # a supervisor: its workers do the serving


@contextlib.contextmanager
def _deployment(kind: str) -> Iterator[Deployment]:
    if kind == "sqlite":
        with servers.bridge() as server:
            yield Deployment("1 process, SQLite", server, tree=False)
        return
    with contextlib.ExitStack() as stack:
        args = ["--store", stack.enter_context(fresh_database())]
        if kind == "workers":
            redis = stack.enter_context(RedisServer())
            args += ["--bus", redis.url, "--workers", str(WORKERS)]
        server = stack.enter_context(servers.bridge(extra_args=args))
        name = "1 process, PostgreSQL" if kind == "postgres" else f"--workers {WORKERS}, PostgreSQL + Redis"
        yield Deployment(name, server, tree=kind == "workers")


@contextlib.contextmanager
def _two_nodes() -> Iterator[tuple[servers.Server, servers.Server]]:
    with fresh_database() as url, RedisServer() as redis, contextlib.ExitStack() as stack:
        args = ["--store", url, "--bus", redis.url]
        yield tuple(stack.enter_context(servers.bridge(extra_args=args)) for _ in range(2))  # type: ignore[misc]


class StoreCpu:
    """CPU seconds PostgreSQL's processes spent over a window (every backend:
    the benchmark's database is the only busy one)."""

    def __enter__(self) -> StoreCpu:
        self._before = self._total()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = max(0.0, self._total() - self._before)

    @staticmethod
    def _total() -> float:
        total = 0.0
        for process in psutil.process_iter(["name"]):
            if process.info["name"] in ("postgres", "postmaster"):
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
        return total


def _flush(deployment: Deployment, rounds: int) -> dict:
    with servers.Sampler(deployment.server.pid, tree=deployment.tree) as bridge_cpu, StoreCpu() as store_cpu:
        t0 = time.monotonic()
        rtts = anyio.run(_python_flush_rtts, deployment.server, rounds)
        elapsed = time.monotonic() - t0
    bridge_s = bridge_cpu.usage.cpu_percent / 100 * elapsed
    return {"p50": median(rtts), "p99": percentile(rtts, 99), "bridge_ms": 1000 * bridge_s / rounds,
            "store_ms": 1000 * store_cpu.seconds / rounds}


def run(quick: bool) -> Table:
    docs, conns, rate = (100, 6, 2) if quick else (1000, 30, 1)
    seconds = 3.0 if quick else 15.0
    typing_seconds = 3.0 if quick else 10.0
    rounds = 40 if quick else 200
    table = Table("7-cluster", f"cluster: one process against {WORKERS} workers sharing PostgreSQL and Redis",
                  ["deployment", "measure", "offered/s", "sustained/s", "undelivered", "p50 ms", "p99 ms",
                   "server CPU %", "CPU ms/change", "store CPU ms/change", "vs 1 process SQLite"])
    base: dict[str, dict] = {}
    for kind in ("sqlite", "postgres", "workers"):
        with _deployment(kind) as d:
            # Flush first: measured after a loaded run, it would include that run's backlog.
            flush = _flush(d, rounds)
            table.add(d.name, f"flush round trip x {rounds}", None, None, None, flush["p50"], flush["p99"], None,
                      flush["bridge_ms"], flush["store_ms"] if kind != "sqlite" else None,
                      ratio(flush["p50"], base.get("flush", {}).get("p50")))
            many = manydocs._run(d.server, docs, conns, seconds, procs=2, rate=rate, tree=d.tree)
            table.add(d.name, f"{docs} docs x 3 clients", many["edits"] / many["window_s"], many["rate"],
                      many["undelivered"], many["p50"], many["p99"], many["server"]["cpu_percent"], many["cpu_ms"],
                      None, ratio(many["rate"], base.get("many", {}).get("rate")))
            hot = typing_live._node_run(d.server, HOT_CLIENTS, typing_seconds, procs=2, tree=d.tree)
            table.add(d.name, f"1 doc x {HOT_CLIENTS} typists", HOT_CLIENTS * typing_live.RATE, hot["made"],
                      hot["undelivered"], hot["p50"], hot["p99"], hot["cpu"], hot["cpu_ms_per_edit"], None,
                      ratio(hot["p99"], base.get("hot", {}).get("p99")))
            if kind == "sqlite":
                base = {"many": many, "hot": hot, "flush": flush}
            for err in (many["errors"] + hot["errors"])[:2]:
                table.note(f"{d.name}: driver saw error {err}")

    crossing = {}
    with _two_nodes() as (a, b):
        for label, urls in (("same node", [a.ws_url, a.ws_url]), ("cross node", [a.ws_url, b.ws_url])):
            # Two typists, one per driver process: each one's edits reach the other.
            crossing[label] = run_ = typing_live._node_run(a, 2, typing_seconds * 2, procs=2, urls=urls,
                                                           doc=f"typing-{label.replace(' ', '-')}")
            table.add("2 bridges, one store and bus", f"2 typists, {label}", 2 * typing_live.RATE, run_["made"],
                      run_["undelivered"], run_["p50"], run_["p99"], None, None, None,
                      ratio(run_["p50"], crossing["same node"]["p50"]) if label == "cross node" else None)

    table.note(f"many documents: {conns} connections over 2 Node driver processes, {rate} edits/s per document; "
               "sustained = edits that reached both other clients per second of the window; latency = edit until both have it")
    table.note(f"hot document: {HOT_CLIENTS} clients x {typing_live.RATE} chars/s on one document; latency = until every other client has it")
    table.note("server CPU: the bridge process, or the supervisor and its workers summed; CPU ms/change = that CPU over the "
               "window / changes; store CPU = PostgreSQL's processes over the flush rounds / rounds (SQLite's is in the bridge's)")
    table.note("vs 1 process SQLite: sustained/s ratio for many documents, p99 ratio for the hot document, p50 ratio for flush; "
               "cross node: p50 against same node")
    table.note(f"on a {psutil.cpu_count()}-core machine the {WORKERS} workers share the cores with PostgreSQL, Redis and the "
               "Node drivers: throughput that a second machine would add cannot show here; CPU per change can")
    return table
