"""Durable storage of Automerge documents.

A store keeps, per document, up to two snapshots (``Document.save()``, newest
first) and change rows (the change chunks accepted, each with its hash).
Writes arrive in batches that a backend must apply in order in one atomic,
durable transaction: :class:`GroupCommit` (batcher.py) gathers the writes of
many documents and connections into those batches so that durability costs
one fsync per batch, not per change.

Why two snapshots: no single bad record may lose a document. A compaction
writes a new snapshot and *marks* the rows it covers; rows are deleted only
when a later snapshot covers them too. So the previous snapshot plus the rows
always load to the whole document, and a truncated or corrupted newest
snapshot falls back to it without losing anything (integrity rule 3).

Every backend passes the same acceptance suite (tests/storage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable, Protocol, Sequence, Union


class StoreLocked(Exception):
    """Another store (in this process or another bridge process) is using the
    same database: there is one writer per store, so ``open()`` refuses."""

    def __init__(self, path: str, lock_path: str, holder: str = "") -> None:
        self.path, self.lock_path = path, lock_path
        held = f", held by pid {holder}" if holder else ""
        super().__init__(f"{path} is in use by another bridge (lock file {lock_path}{held})")


class StoreCorrupt(Exception):
    """The database is damaged: its integrity check failed on ``open()``, or
    the database reported a malformed file during ``load()``/``commit()``.
    Unlike a transient error (disk full, busy), retrying will not help."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path, self.detail = path, detail
        why = f" ({detail})" if detail else ""
        super().__init__(f"{path} is corrupt{why}: stop the bridge and restore it from a backup")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer automerge-bridge: this one refuses
    to open it rather than misread it."""

    def __init__(self, where: str, version: int, known: int) -> None:
        self.path, self.version = where, version
        super().__init__(
            f"{where} has schema version {version}, but this automerge-bridge knows only up to "
            f"version {known}: it was written by a newer bridge; upgrade to open it"
        )


@dataclass(frozen=True)
class AppendChanges:
    """Accepted change chunks, in causal order: ``(hash, bytes)`` pairs."""

    doc_id: str
    changes: Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Compact:
    """Store ``snapshot`` as the document's newest snapshot.

    ``covered`` names the change rows the snapshot contains (the writer has
    loaded the snapshot back and checked its heads before submitting it).
    Those rows are *marked* covered by this snapshot, not deleted: rows that
    an earlier snapshot covered are deleted now, and snapshots older than the
    previous newest one are dropped. Rows not in ``covered`` (appended by
    anyone else, or after the snapshot was taken) are never touched.
    """

    doc_id: str
    snapshot: bytes
    covered: frozenset[bytes] = frozenset()
    # The generation of the newest snapshot the writer's document is known to
    # contain (the one it loaded, wrote or merged). When several bridges share
    # a store, another may have written a newer snapshot meanwhile, which this
    # one may lack: retiring rows and the older snapshot on the strength of
    # ours could then lose that bridge's changes. So a store skips a Compact
    # whose base_gen is not the newest generation (``Committed.gen`` is None)
    # and the writer compacts again once it has caught up. None: no check
    # (tools that write a snapshot outright).
    base_gen: int | None = None


@dataclass(frozen=True)
class DeleteDoc:
    """Remove everything stored of a document (the admin route). In a batch
    it applies in order: appends before it are deleted too, after it they
    start a new document."""

    doc_id: str


Write = Union[AppendChanges, Compact, DeleteDoc]


@dataclass(frozen=True)
class DocInfo:
    """What the admin listing shows of a stored document."""

    doc_id: str
    size: int  # bytes stored: snapshots and change rows
    changed_at: float | None  # unix time of the last append (None: not recorded, e.g. migrated data)


@dataclass(frozen=True)
class Committed:
    """What a store did with one write, reported by ``commit``.

    ``seq``/``prev_seq``: for an AppendChanges on a store that keeps a
    sequence per document (shared stores), the document's sequence after and
    before the write; rows ``prev_seq < seq <= seq`` are the ones it added
    (none when every change was already there). 0 on stores without one.
    ``gen``: for a Compact, the generation it wrote, or None when it was
    skipped (a stale ``base_gen``).
    """

    seq: int = 0
    prev_seq: int = 0
    gen: int | None = None


@dataclass
class StoredDoc:
    """What a store holds for one document."""

    snapshots: list[bytes] = field(default_factory=list)  # newest first, at most two
    changes: list[tuple[bytes, bytes]] = field(default_factory=list)  # (hash, chunk) in append order
    gen: int = 0  # generation of the newest snapshot (0: none yet)
    seq: int = 0  # the document's sequence when read (stores that keep one; see Committed)

    @property
    def snapshot(self) -> bytes | None:
        return self.snapshots[0] if self.snapshots else None

    @property
    def change_bytes(self) -> list[bytes]:
        return [data for _, data in self.changes]

    def as_bytes(self) -> bytes:
        """Newest snapshot plus every row: one buffer ``Document.load`` accepts
        (rows the snapshot already holds load as duplicates, harmlessly)."""
        return (self.snapshot or b"") + b"".join(self.change_bytes)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, doc_id: str) -> StoredDoc | None:
        """The stored state, or None if the document was never written."""

    async def commit(self, writes: Sequence[Write]) -> list[Committed]:
        """Apply ``writes`` in order, atomically; return once durable, with
        what was done, one :class:`Committed` per write."""

    async def doc_ids(self) -> list[str]: ...

    async def doc_infos(self, after: str | None = None, limit: int = 100, only: str | None = None) -> list[DocInfo]:
        """Stored documents with ids greater than ``after``, in id order, at
        most ``limit``; ``only``: just that one (if stored)."""

    async def check(self) -> None:
        """Raise unless the store answers now (readiness; callers bound the wait)."""


StoreFactory = Callable[[str], Store]

# URL scheme -> factory taking the whole URL. Built-in backends are imported
# only when used; others register with register_store(), or through the
# "automerge_bridge.stores" entry point group (name = scheme, value = factory).
_factories: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``open_store("<scheme>:...")`` build stores with ``factory(url)``."""
    _factories[scheme.lower()] = factory


def _memory(url: str) -> Store:
    from .memory import MemoryStore

    if url != "memory:":
        raise ValueError(f"a memory store URL is just 'memory:', not {url!r}")
    return MemoryStore()


def _sqlite(url: str) -> Store:
    from .sqlite import SQLiteStore

    path = url.removeprefix("sqlite:///")
    if path == url or not path:
        raise ValueError(f"a SQLite store URL is sqlite:///path/to/file, not {url!r}")
    return SQLiteStore(path)


def _postgres(url: str) -> Store:
    from .postgres import PostgresStore

    return PostgresStore(url)


register_store("memory", _memory)
register_store("sqlite", _sqlite)
register_store("postgresql", _postgres)
register_store("postgres", _postgres)


def open_store(url: str) -> Store:
    """Build a store from a URL by its scheme: ``memory:``,
    ``sqlite:///path/to/file``, ``postgresql://user@host/db``, or any
    registered scheme."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    factory = _factories.get(scheme)
    if factory is None and scheme:
        for entry in entry_points(group="automerge_bridge.stores", name=scheme):
            factory = entry.load()
            register_store(scheme, factory)
    if factory is None:
        known = ", ".join(sorted(_factories))
        raise ValueError(f"unsupported store URL {url!r}: no store registered for its scheme (known: {known})")
    return factory(url)
