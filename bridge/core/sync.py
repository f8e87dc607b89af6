"""Sans-IO sync between one peer and one document.

:class:`DocSync` pairs a document with the SyncState we keep for one remote
peer. It never awaits and never touches a socket: callers feed it the bytes of
received sync messages and ask it for the messages to send. The server keeps
one per (connection, document); the Python client keeps one per document for
its server. Two of them wired back to back converge without any I/O, which is
how the tests exercise them.

On the server a DocSync is *guarded* (``index=``): a peer's message is read by
:mod:`bridge.core.chunks` and its changes sorted by :mod:`bridge.core.validate`
before the core sees any of them. Only changes that passed are handed to
``receive_sync_message``, in a message re-encoded without the rest; changes
whose dependencies have not arrived wait here, bounded, until they do.
"""

from __future__ import annotations

from typing import Callable, Iterable

from automerge import core

from .binding import CoreFailure, apply_chunks, call_core, expand_chunks
from .chunks import Bounds, Change, ChunkError, SyncMessage, encode_sync_message, parse_sync_message
from .validate import ChangeIndex, plan

__all__ = ["BadSyncMessage", "CoreFailure", "DocSync", "HashIndex", "apply_chunks", "expand_chunks"]


class BadSyncMessage(ValueError):
    """The peer's bytes are not (entirely) something we apply.

    ``applied`` lists changes that were applied all the same (the valid part
    of the message): they are part of the document now and must be accepted.
    ``full``: what was refused was refused only because the document reached
    its size bound (the peer hears ``quota``, not ``bad_sync``).
    ``read_only``: the peer may not write, and its message carried changes
    (it hears ``read_only``); nothing of them was applied.
    """

    def __init__(
        self, message: str, applied: list[core.Change] | None = None, *, full: bool = False, read_only: bool = False
    ) -> None:
        super().__init__(message)
        self.applied = applied or []
        self.full = full
        self.read_only = read_only


class DocSync:
    def __init__(
        self,
        doc: core.Document,
        *,
        index: Callable[[], ChangeIndex] | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self.doc = doc
        self.state = core.SyncState()
        self._index = index
        self.bounds = bounds or Bounds()
        self.waiting: dict[bytes, Change] = {}

    def reset(self) -> None:
        """Forget what the peer had: after a reconnect both sides start over."""
        self.state = core.SyncState()
        self.waiting.clear()

    def rebind(self, doc: core.Document) -> None:
        """The document was reloaded: start over against the new copy."""
        self.doc = doc
        self.reset()

    def receive(self, data: bytes, *, read_only: bool = False) -> list[core.Change]:
        """Apply one sync message; return the changes it added to the document.

        Raises :class:`BadSyncMessage` when (part of) the message is refused;
        the refused part is not applied. Raises :class:`CoreFailure` when the
        core failed while applying (the document may be damaged).

        ``read_only`` (guarded only): the peer may not write. Its changes are
        dropped unread, and so are heads we do not hold (they can only be
        its own changes: naming them would make us ask for them, and the
        peer would send them again and again); the rest of the message syncs,
        so it keeps receiving what others write. Raises BadSyncMessage with
        ``read_only`` if there were changes.
        """
        if self._index is None:
            if read_only:
                raise ValueError("a read-only peer's messages go through a guarded DocSync")
            return self._receive_trusted(data)
        index = self._index()
        try:
            message = parse_sync_message(data, self.bounds)
            if not read_only:
                heads = self.doc.get_heads()
                incoming = [c for item in message.chunks for c in expand_chunks(item, self.bounds, index.hashes, heads)]
        except ChunkError as exc:
            raise BadSyncMessage(f"refused sync message: {exc}") from None
        if read_only:
            return self._receive_read_only(message, index)
        planned = plan(index, incoming, self.waiting.values(), max_doc_ops=self.bounds.max_doc_ops)
        self._sanitize(message, index)
        message.chunks = [change.chunk for change in planned.apply]
        applied = self._apply(self._decode(message))
        self.waiting = {change.hash: change for change in planned.waiting}
        if planned.rejected:
            change, reason = planned.rejected[0]
            more = f" (and {len(planned.rejected) - 1} more)" if len(planned.rejected) > 1 else ""
            raise BadSyncMessage(f"refused change {change.hash.hex()[:12]}: {reason}{more}", applied, full=planned.full)
        bounds = self.bounds
        if len(self.waiting) > bounds.max_waiting_changes or sum(c.size for c in self.waiting.values()) > bounds.max_waiting_bytes:
            self.waiting.clear()
            raise BadSyncMessage(
                f"more than {bounds.max_waiting_changes} changes or {bounds.max_waiting_bytes} bytes "
                "wait for missing dependencies", applied)
        return applied

    def _receive_read_only(self, message: SyncMessage, index: ChangeIndex) -> list[core.Change]:
        carried = len(message.chunks)
        message.chunks = []
        message.heads = [h for h in message.heads if h in index.hashes]
        self._sanitize(message, index)
        self._apply(self._decode(message))
        if carried:
            raise BadSyncMessage("you may read this document, not write it: your changes were not applied", read_only=True)
        return []

    def _receive_trusted(self, data: bytes) -> list[core.Change]:
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

    @staticmethod
    def _decode(message: SyncMessage) -> core.Message:
        try:
            return core.Message.decode(encode_sync_message(message))
        except Exception as exc:  # what we parsed, the core should read too
            raise BadSyncMessage(f"refused sync message: {exc}") from None

    @staticmethod
    def _sanitize(message: SyncMessage, index: ChangeIndex) -> None:
        # The core answers `need` by looking hashes up and panics on unknown
        # ones; we can only ever send what we have.
        message.need = [h for h in message.need if h in index.hashes]
        # An unknown hash in `have.last_sync` makes the core answer every
        # generate call with a reset message, forever.
        for have in message.have:
            have.last_sync = [h for h in have.last_sync if h in index.hashes]

    def _apply(self, message: core.Message) -> list[core.Change]:
        before = self.doc.get_heads()
        call_core(self.doc.receive_sync_message, self.state, message)
        return call_core(self._since, before)

    def _since(self, before: list[bytes]) -> list[core.Change]:
        if self.doc.get_heads() == before:
            return []
        return self.doc.get_changes(before)

    # Automerge generates at most a couple of messages in a row before it
    # waits for an answer; anything that keeps going is a state gone wrong.
    MAX_MESSAGES_PER_GENERATE = 8

    def generate(self) -> list[bytes]:
        """Every message the peer needs right now (usually zero or one)."""
        out: list[bytes] = []
        while (message := call_core(self.doc.generate_sync_message, self.state)) is not None:
            out.append(message.encode())
            if len(out) >= self.MAX_MESSAGES_PER_GENERATE:
                break
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

    def contains_all(self, hashes: Iterable[bytes]) -> bool:
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
