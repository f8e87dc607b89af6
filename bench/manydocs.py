"""Scenario 3, many documents: D documents x 3 clients, one edit per second
per document. Sustained changes/s (edits that reached both other clients,
per second of the window), their latency, and server memory (RSS by psutil on
the server's pid, the same for both servers).
"""

from __future__ import annotations

from pathlib import Path

from . import servers
from .drivers import run_nodes
from .report import Table, median, percentile, ratio

REPLICAS = 3


def _run(server: servers.Server, docs: int, conns: int, seconds: float, procs: int, rate: float = 1,
         tree: bool = False) -> dict:
    """``tree``: the server is a supervisor; its workers' CPU and memory count."""
    with servers.Sampler(server.pid, tree=tree) as idle_sample:
        pass
    idle = idle_sample.usage.rss_mb_end
    common = {"target": server.kind, "url": server.ws_url, "docs": docs, "replicas": REPLICAS, "conns": conns,
              "seconds": seconds, "rate": rate, "settle": 5, "procs": procs}
    parts = run_nodes("manydocs.mjs", [{**common, "proc": k} for k in range(procs)], sample_pid=server.pid,
                      sample_tree=tree, timeout=seconds + 400)
    window = max(p["window_s"] for p in parts)
    edits = sum(p["edits"] for p in parts)
    latencies = [x for p in parts for x in p["latencies"]]
    cpu_seconds = parts[0]["server"]["cpu_percent"] / 100 * window
    return {
        "edits": edits, "window_s": window, "rss_idle": idle, "server": parts[0]["server"],
        "undelivered": edits - sum(p["delivered"] for p in parts),
        "rate": sum(p["delivered_in_window"] for p in parts) / window,
        "p50": median(latencies), "p99": percentile(latencies, 99),
        "cpu_ms": 1000 * cpu_seconds / edits if edits else None,
        "driver_cpu": sum(p["driver_cpu"] for p in parts), "errors": parts[0]["errors"],
    }


def run(quick: bool, docs: int | None = None, profile_dir: Path | None = None, procs: int = 2) -> Table:
    docs = docs or (100 if quick else 1000)
    conns = 6 if quick else 30
    seconds = 3.0 if quick else 15.0
    table = Table("3-manydocs", f"many documents: {docs} docs x {REPLICAS} clients, 1 edit/s/doc, {seconds:g} s",
                  ["server", "clients", "offered/s", "sustained changes/s", "undelivered", "p50 ms", "p99 ms",
                   "server CPU %", "CPU ms/edit", "RSS idle MB", "RSS peak MB", "drivers CPU %", "rate ratio",
                   "CPU/edit ratio", "RSS ratio"])
    repo = None
    if servers.node_available():
        with servers.repo_server() as server:
            repo = _run(server, docs, conns, seconds, procs)
        table.add("automerge-repo server", f"Node automerge-repo x {conns}", repo["edits"] / repo["window_s"],
                  repo["rate"], repo["undelivered"], repo["p50"], repo["p99"],
                  repo["server"]["cpu_percent"], repo["cpu_ms"], repo["rss_idle"], repo["server"]["rss_mb_peak"],
                  repo["driver_cpu"], None, None, None)
    profile = profile_dir / "manydocs.pyspy.txt" if profile_dir else None
    with servers.bridge(profile=profile) as server:
        b = _run(server, docs, conns, seconds, procs)
    table.add("bridge", f"Node raw protocol v1 x {conns}", b["edits"] / b["window_s"], b["rate"],
              b["undelivered"], b["p50"], b["p99"], b["server"]["cpu_percent"], b["cpu_ms"], b["rss_idle"],
              b["server"]["rss_mb_peak"], b["driver_cpu"], ratio(b["rate"], repo and repo["rate"]),
              ratio(b["cpu_ms"], repo and repo["cpu_ms"]), ratio(b["server"]["rss_mb_peak"], repo and repo["server"]["rss_mb_peak"]))
    table.note(f"{conns} client connections in {REPLICAS} groups, over {procs} Node driver processes; every document is on "
               f"one connection of each group ({docs * REPLICAS // conns} documents per connection); the editing client rotates")
    table.note("sustained = edits that reached both other clients during the window / window seconds; "
               "latency = edit until both other clients have it")
    table.note("RSS: psutil on the server pid; idle = before the driver connected, peak = sampled every 0.25 s in the window")
    for err in (b["errors"] + (repo["errors"] if repo else []))[:3]:
        table.note(f"driver saw error {err}")
    return table
