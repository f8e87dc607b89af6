"""The Automerge core floor: the same sync messages exchanged between
``automerge.core`` Documents in this process, with no network and no storage.

``Star`` is a hub document with one SyncState per peer, as a server keeps, and
peer documents that apply what the hub sends and answer it. Timing its calls
gives the least work any server on this core must do per edit.
"""

from __future__ import annotations

import time

from automerge import core


class Peer:
    def __init__(self, doc: core.Document) -> None:
        self.doc = doc
        self.state = core.SyncState()  # the peer's state for the hub
        self.hub_state = core.SyncState()  # the hub's state for this peer


def exchange(a: core.Document, a_state: core.SyncState, b: core.Document, b_state: core.SyncState,
             rounds: int = 100) -> tuple[int, int]:
    """Sync a -> b until quiet; return the bytes each way (a->b, b->a)."""
    sent = [0, 0]
    for _ in range(rounds):
        quiet = True
        for i, (src, s_state, dst, d_state) in enumerate(((a, a_state, b, b_state), (b, b_state, a, a_state))):
            if (message := src.generate_sync_message(s_state)) is not None:
                data = message.encode()
                sent[i] += len(data)
                dst.receive_sync_message(d_state, core.Message.decode(data))
                quiet = False
        if quiet:
            break
    return sent[0], sent[1]


class Star:
    """A hub and ``n`` peers, all converged on one document with text fields t0..t{n-1}."""

    def __init__(self, n: int) -> None:
        self.hub = core.Document()
        with self.hub.transaction() as tx:
            self.fields = [tx.put_object(core.ROOT, f"t{i}", core.ObjType.Text) for i in range(n)]
        self.peers = [Peer(self.hub.fork()) for _ in range(n)]
        for peer in self.peers:
            exchange(self.hub, peer.hub_state, peer.doc, peer.state)

    def edit(self, author: int) -> dict:
        """One character typed by ``author``, taken to every other peer.

        Returns seconds spent: by the author (change + message), by the hub
        (everything a server would do: apply, fan out, take answers) and by
        the slowest receiving peer.
        """
        sender = self.peers[author]
        t0 = time.perf_counter()
        obj = self.fields[author]
        with sender.doc.transaction() as tx:
            tx.splice_text(obj, tx.length(obj), 0, "x")
        message = sender.doc.generate_sync_message(sender.state).encode()
        t1 = time.perf_counter()
        hub_s = peer_s = 0.0
        pending = [(sender, message)]
        for _ in range(20):  # rounds until every sync state is quiet
            if not pending:
                break
            answers = []
            for peer, data in pending:
                t = time.perf_counter()
                self.hub.receive_sync_message(peer.hub_state, core.Message.decode(data))
                hub_s += time.perf_counter() - t
            for peer in self.peers:
                t = time.perf_counter()
                out = self.hub.generate_sync_message(peer.hub_state)
                data = out.encode() if out is not None else None
                hub_s += time.perf_counter() - t
                if data is None:
                    continue
                t = time.perf_counter()
                peer.doc.receive_sync_message(peer.state, core.Message.decode(data))
                reply = peer.doc.generate_sync_message(peer.state)
                peer_s = max(peer_s, time.perf_counter() - t)
                if reply is not None:
                    answers.append((peer, reply.encode()))
            pending = answers
        return {"author_s": t1 - t0, "hub_s": hub_s, "peer_s": peer_s}
