"""Scenario 2, live typing: one document, N clients each typing RATE characters
per second. Edit-to-every-peer latency p50/p99, server CPU, and the largest N
whose p99 stays under 100 ms.

Every client is a full Automerge peer in a Node driver process (two by
default, clients spread round-robin): raw protocol-v1 peers
(@automerge/automerge) for the bridge, stock automerge-repo Repos for the
reference. The drivers report send and arrival times on the machine clock and
the harness joins them. The floor is the same edits through an in-process hub
(bench/floor.py).
"""

from __future__ import annotations

from pathlib import Path

from . import servers
from .drivers import node_json, run_nodes
from .floor import Star
from .report import Table, median, percentile, ratio

RATE = 6  # characters per second per client
P99_BUDGET_MS = 100.0


def _node_run(server: servers.Server, n: int, seconds: float, procs: int, *, urls: list[str] | None = None,
              tree: bool = False, doc: str | None = None) -> dict:
    """``urls``: driver process k connects its clients to ``urls[k]`` (bridges
    of one cluster) instead of ``server``; ``tree``: the server is a
    supervisor, its workers' CPU counts. ``doc``: a new document's id (the
    drivers expect an empty one)."""
    if server.kind == "bridge":
        doc = doc or f"typing-{n}"
    else:
        doc = node_json("create_doc.mjs", server.ws_url)["url"]
    procs = min(procs, n)
    urls = urls or [server.ws_url] * procs
    common = {"target": server.kind, "doc": doc, "clients": n, "seconds": seconds, "rate": RATE, "settle": 5,
              "procs": procs}
    parts = run_nodes("typing.mjs", [{**common, "proc": k, "url": urls[k]} for k in range(procs)],
                      sample_pid=server.pid, sample_tree=tree, timeout=seconds + 240)
    lat, edits, undelivered = _join(parts, n)
    typed_s = max(p["typed_s"] for p in parts)
    cpu_seconds = parts[0]["server"]["cpu_percent"] / 100 * typed_s
    frames: dict[str, float] = {}
    for p in parts:
        for kind, count in p["frames"].items():
            frames[kind] = frames.get(kind, 0) + count / max(1, edits)
    return {"edits": edits, "undelivered": undelivered, "made": edits / typed_s,
            "cpu_ms_per_edit": 1000 * cpu_seconds / edits if edits else None, "p50": median(lat),
            "p99": percentile(lat + [float("inf")] * undelivered, 99), "cpu": parts[0]["server"]["cpu_percent"],
            "driver_cpu": sum(p["driver_cpu"] for p in parts), "errors": parts[0]["errors"], "frames": frames,
            "apply_ms": sum(p["apply_ms"] for p in parts) / max(1, sum(p["applied"] for p in parts)), "procs": procs}


def _join(parts: list[dict], n: int) -> tuple[list[float], int, int]:
    """Edit-to-every-peer latencies from every driver's send and arrival times."""
    sent = {(int(author), seq): t for p in parts for author, times in p["sent"].items()
            for seq, t in enumerate(times) if t is not None}
    seen: dict[tuple[int, int], list[float]] = {}
    for p in parts:
        for key, (count, last) in p["arrivals"].items():
            author, seq = map(int, key.split(":"))
            entry = seen.setdefault((author, seq), [0, 0.0])
            entry[0] += count
            entry[1] = max(entry[1], last)
    lat = [seen[k][1] - t for k, t in sent.items() if seen.get(k, [0])[0] >= n - 1]
    return lat, len(sent), len(sent) - len(lat)


def _floor(n: int, edits: int) -> dict:
    star = Star(n)
    results = [star.edit(i % n) for i in range(edits)]
    lat = [1000 * (r["author_s"] + r["hub_s"] + r["peer_s"]) for r in results]
    hub_ms = median([1000 * r["hub_s"] for r in results])
    return {"p50": median(lat), "p99": percentile(lat, 99), "cpu": hub_ms * n * RATE / 10,  # % of a core at this load
            "cpu_ms_per_edit": hub_ms}


def run(quick: bool, sizes: tuple[int, ...] | None = None, profile_dir: Path | None = None, procs: int = 2) -> Table:
    sizes = sizes or ((4, 16) if quick else (4, 16, 64))
    seconds = 3.0 if quick else 10.0
    table = Table("2-typing", f"live typing: one document, N clients x {RATE} chars/s, {seconds:g} s",
                  ["N", "server", "clients", "offered/s", "made/s", "undelivered", "p50 ms", "p99 ms",
                   "server CPU %", "CPU ms/edit", "drivers CPU %", "p50 ratio", "p99 ratio", "CPU/edit ratio"])
    best = {"bridge": None, "repo": None}
    for n in sizes:
        floor = _floor(n, min(n * RATE * int(seconds), 200 if quick else 600))
        table.add(n, "core floor (in-process hub)", "automerge.core (Python)", n * RATE, None, None, floor["p50"],
                  floor["p99"], floor["cpu"], floor["cpu_ms_per_edit"], None, None, None, None)
        repo = None
        if servers.node_available():
            with servers.repo_server() as server:
                repo = _node_run(server, n, seconds, procs)
            table.add(n, "automerge-repo server", "Node automerge-repo", n * RATE, repo["made"],
                      repo["undelivered"], repo["p50"], repo["p99"], repo["cpu"], repo["cpu_ms_per_edit"],
                      repo["driver_cpu"], None, None, None)
            if repo["p99"] < P99_BUDGET_MS:
                best["repo"] = n
        profile = profile_dir / f"typing-{n}.pyspy.txt" if profile_dir else None
        with servers.bridge(profile=profile) as server:
            b = _node_run(server, n, seconds, procs)
        table.add(n, "bridge", "Node raw protocol v1", n * RATE, b["made"], b["undelivered"], b["p50"],
                  b["p99"], b["cpu"], b["cpu_ms_per_edit"], b["driver_cpu"], ratio(b["p50"], repo and repo["p50"]),
                  ratio(b["p99"], repo and repo["p99"]), ratio(b["cpu_ms_per_edit"], repo and repo["cpu_ms_per_edit"]))
        if b["frames"]:
            table.note(f"N={n}: frames the bridge's clients received per edit: "
                       + ", ".join(f"{t} {v:.1f}" for t, v in sorted(b["frames"].items()) if v >= 0.05)
                       + f"; a client took {b['apply_ms']:.2f} ms to apply a sync message and answer, so the last of "
                       f"N-1 peers sharing {b['procs']} driver process(es) waits ~{(n - 1) / b['procs'] * b['apply_ms']:.1f} ms "
                       "in the driver alone")
        if b["p99"] < P99_BUDGET_MS:
            best["bridge"] = n
        for err in (b["errors"] + (repo["errors"] if repo else []))[:3]:
            table.note(f"N={n}: driver saw error {err}")
    table.note(f"clients: up to {procs} Node driver processes, clients spread round-robin; latency: from the author's change "
               "until the last of the other N-1 clients has it (machine clock: performance.timeOrigin + now())")
    table.note("undelivered edits count as infinitely late in p99; CPU % is of one core over the typing window (psutil, both servers)")
    table.note("made/s below offered/s, or driver CPU % near 100, means the Node processes hosting every client "
               "(each a full Automerge peer applying every edit) could not keep up: latency then includes its queueing. "
               "CPU ms/edit (server CPU over the window / edits made) stays comparable when that happens")
    table.note("core floor: author change + hub apply/fan-out/acks + slowest peer apply, in one Python thread; "
               "its CPU % is the hub's Automerge work per second at this load")
    table.note("automerge-repo throttles sync per document to one round per 100 ms (DocSynchronizer syncDebounceRate), "
               "on clients and server alike; that is its stock behaviour")
    table.note(f"largest N with p99 < {P99_BUDGET_MS:g} ms: bridge {best['bridge'] or 'none'}, "
               f"automerge-repo {best['repo'] or 'none'} (of N = {', '.join(map(str, sizes))})")
    return table
