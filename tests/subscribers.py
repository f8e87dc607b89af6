"""A hub subscriber that follows a document and does nothing with what it
hears: for tests that hold a document open in a hub (keeping it loaded)
without a peer behind it."""

from __future__ import annotations


class Quiet:
    def __init__(self, peer: str = "test") -> None:
        self.peer = peer

    def doc_changed(self, doc_id, origin) -> None: ...

    def doc_saved(self, doc_id, heads, own) -> None: ...

    def doc_reloaded(self, doc_id) -> None: ...

    def doc_deleted(self, doc_id) -> None: ...

    def ephemeral(self, doc_id, sender, data, source=None) -> None: ...
