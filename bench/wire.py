"""Scenario 5, bytes on the wire per edit, both directions, against the size
of the Automerge change itself. One editor, one observer, one-character edits
made one at a time.
"""

from __future__ import annotations

from automerge import core

from . import servers
from .drivers import run_node
from .floor import exchange
from .report import Table, ratio


def core_floor(edits: int) -> dict:
    """Editor and observer synced directly in-process: sync message bytes only."""
    editor = core.Document()
    with editor.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
    observer = core.Document()
    e_state, o_state = core.SyncState(), core.SyncState()
    exchange(editor, e_state, observer, o_state)
    up = down = change = 0
    for _ in range(edits):
        with editor.transaction() as tx:
            tx.splice_text(text, tx.length(text), 0, "x")
        change += len(editor.get_last_local_change().bytes)
        a, b = exchange(editor, e_state, observer, o_state)
        up, down = up + a, down + b
    return {"change_bytes": change / edits, "editor_up": up / edits, "editor_down": down / edits,
            "observer_down": up / edits, "observer_up": down / edits}


def run(quick: bool) -> Table:
    edits = 30 if quick else 100
    table = Table("5-wire", "bytes on the wire per edit (one-character edits, one at a time)",
                  ["peer", "client", "change B", "editor up B", "editor down B", "observer down B", "observer up B",
                   "total B", "total / change", "total ratio"])
    floor = core_floor(edits)
    rows = [("core floor (direct, in-process)", "automerge.core (Python)", floor)]
    results = {}
    if servers.node_available():
        with servers.repo_server() as server:
            results["repo"] = run_node("wire.mjs", {"target": "repo", "url": server.ws_url, "edits": edits}, timeout=120)
        rows.append(("automerge-repo server", "Node automerge-repo", results["repo"]))
    with servers.bridge() as server:
        results["bridge"] = run_node("wire.mjs", {"target": "bridge", "url": server.ws_url, "edits": edits}, timeout=120)
    rows.append(("bridge", "Node raw protocol v1", results["bridge"]))

    def total(r: dict) -> float:
        return r["editor_up"] + r["editor_down"] + r["observer_down"] + r["observer_up"]

    for peer, client, r in rows:
        rel = ratio(total(r), total(results["repo"])) if peer == "bridge" and "repo" in results else None
        table.add(peer, client, r["change_bytes"], r["editor_up"], r["editor_down"], r["observer_down"],
                  r["observer_up"], total(r), total(r) / r["change_bytes"], rel)
    table.note("server rows: TCP bytes on each client's socket (WebSocket frames incl. headers and masks), per edit; "
               "the bridge's include its `saved` frames; no flush requests are sent")
    table.note("core floor: sync message bytes between the two documents directly (no server, so each byte "
               "crosses once; a relay needs at least editor up + observer down)")
    return table
