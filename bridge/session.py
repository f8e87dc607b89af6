"""Sans-IO sync between one peer and one document.

:class:`DocSync` pairs a document with the SyncState we keep for one remote
peer. It never awaits and never touches a socket: callers feed it the bytes of
received sync messages and ask it for the messages to send. The server keeps
one per (connection, document); the Python client keeps one per document for
its server. Two of them wired back to back converge without any I/O, which is
how the tests exercise them.
"""

from __future__ import annotations

from automerge import core


class BadSyncMessage(ValueError):
    """The peer's bytes are not an Automerge sync message we can apply.

    ``applied`` lists changes the binding took in before it failed (they are
    valid and now part of the document, so they must be accepted as such).
    """

    def __init__(self, message: str, applied: list[core.Change] | None = None) -> None:
        super().__init__(message)
        self.applied = applied or []


class DocSync:
    def __init__(self, doc: core.Document) -> None:
        self.doc = doc
        self.state = core.SyncState()

    def reset(self) -> None:
        """Forget what the peer had: after a reconnect both sides start over."""
        self.state = core.SyncState()

    def receive(self, data: bytes) -> list[core.Change]:
        """Apply one sync message; return the changes it added to the document.

        Raises :class:`BadSyncMessage` when the bytes do not decode or the
        changes in them do not apply; the document is then left as it was as
        far as anyone can observe (no heads move, nothing is returned).
        """
        try:
            message = core.Message.decode(data)
        except Exception as exc:  # the binding raises bare Exception
            raise BadSyncMessage(f"undecodable sync message: {exc}") from None
        before = self.doc.get_heads()
        try:
            self.doc.receive_sync_message(self.state, message)
        except Exception as exc:
            raise BadSyncMessage(f"sync message rejected: {exc}", self._since(before)) from None
        return self._since(before)

    def _since(self, before: list[bytes]) -> list[core.Change]:
        if self.doc.get_heads() == before:
            return []
        return self.doc.get_changes(before)

    def generate(self) -> list[bytes]:
        """Every message the peer needs right now (usually zero or one)."""
        out: list[bytes] = []
        while (message := self.doc.generate_sync_message(self.state)) is not None:
            out.append(message.encode())
        return out


class HashIndex:
    """Answers "does the document hold these changes?" cheaply.

    The binding has no lookup by hash. Most questions are about the current
    heads, answered without an index; otherwise the set of every hash is
    built once and topped up from the heads it was last brought up to.
    """

    def __init__(self, doc: core.Document) -> None:
        self._doc = doc
        self._hashes: set[bytes] | None = None
        self._at: list[bytes] = []

    def contains_all(self, hashes: list[bytes]) -> bool:
        heads = self._doc.get_heads()
        rest = [h for h in hashes if h not in heads]
        if not rest:
            return True
        if self._hashes is None:
            self._hashes = {change.hash for change in self._doc.get_changes([])}
        elif self._at != heads:
            self._hashes.update(change.hash for change in self._doc.get_changes(self._at))
        self._at = heads
        return all(h in self._hashes for h in rest)
