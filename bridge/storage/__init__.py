"""Durable storage of Automerge documents.

A store keeps, per document, an optional snapshot (``Document.save()``) and
the change chunks accepted since. Writes arrive in batches that a backend must
apply in order in one atomic, durable transaction — :class:`GroupCommit`
(batcher.py) gathers the writes of many documents and connections into those
batches so that durability costs one fsync per batch, not per change.

Every backend passes the same acceptance suite (tests/storage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, Union


@dataclass(frozen=True)
class AppendChanges:
    """Accepted change chunks, in causal order: ``(hash, bytes)`` pairs."""

    doc_id: str
    changes: Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Compact:
    """Replace the document's stored state with ``snapshot``.

    Every change appended before this write (in batch order) is covered by the
    snapshot and is dropped; changes appended after it are kept.
    """

    doc_id: str
    snapshot: bytes


Write = Union[AppendChanges, Compact]


@dataclass
class StoredDoc:
    snapshot: bytes | None = None
    changes: list[bytes] = field(default_factory=list)

    def as_bytes(self) -> bytes:
        """One buffer ``automerge.core.Document.load`` accepts."""
        return (self.snapshot or b"") + b"".join(self.changes)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, doc_id: str) -> StoredDoc | None:
        """The stored state, or None if the document was never written."""

    async def commit(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order, atomically; return once durable."""

    async def doc_ids(self) -> list[str]: ...


def open_store(url: str) -> Store:
    """Build a store from a URL: ``memory:`` or ``sqlite:///path/to/file``."""
    if url == "memory:":
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ValueError(f"unsupported store URL: {url!r}")
