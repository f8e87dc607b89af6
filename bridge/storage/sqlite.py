"""SQLite store, the embedded default.

WAL journal with ``synchronous=FULL``: a committed transaction has been
fsync'd to the WAL, so it survives a crash or power loss — that is what lets
the bridge acknowledge. One connection writes and one reads (WAL lets readers
run beside the writer); each is used from one worker thread at a time.

One writer per database: ``open()`` takes an exclusive ``flock`` on
``<database>.lock`` and holds it until ``close()``, so a second bridge — another
process, or another store in this process — on the same file refuses to open
(:class:`~bridge.storage.StoreLocked`) instead of interleaving its writes and
acknowledgements with ours. The kernel drops the lock when the process dies,
even by ``kill -9``; the lock file itself stays (it holds the last pid).

Schema version 3 (``PRAGMA user_version``): up to two snapshots per document
by generation, and change rows that carry the generation of the snapshot that
covers them (``covered``), deleted only once the next snapshot is written.
``open()`` migrates a version-1 database in place (one transaction) and
refuses one written by a newer bridge (:class:`SchemaTooNew`). It also runs
``PRAGMA quick_check``; a damaged file, then or later, raises
:class:`~bridge.storage.StoreCorrupt`: restore it from a backup.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import anyio.to_thread

from . import (AppendChanges, Committed, Compact, DeleteDoc, DocInfo, SchemaTooNew, StoreCorrupt, StoredDoc,
               StoreLocked, Write)

try:
    import fcntl
except ImportError:  # Windows: no flock, so no lock; one bridge per file is up to you
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 3  # kept in PRAGMA user_version

# Version 1 (user_version 0, before versions were tracked) had one snapshot per
# document (snapshots: doc_id PRIMARY KEY, data) and deleted the rows a
# compaction covered; ``changes`` had no ``covered`` column.
_SNAPSHOTS_V2 = """
CREATE TABLE snapshots (
    doc_id TEXT NOT NULL,
    gen    INTEGER NOT NULL,   -- generation: 1, 2, ... per document; the two newest are kept
    data   BLOB NOT NULL,
    PRIMARY KEY (doc_id, gen)
)"""
_SCHEMA_V2 = [
    _SNAPSHOTS_V2,
    """
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id  TEXT NOT NULL,
    hash    BLOB NOT NULL,
    data    BLOB NOT NULL,
    covered INTEGER,           -- generation of the snapshot that holds this row, or NULL
    UNIQUE (doc_id, hash)
)""",
    "CREATE INDEX changes_by_doc ON changes (doc_id, seq)",
]
# Version 3: a row per stored document, with the time of its last append
# (the admin listing). Documents stored before it have changed_at NULL.
_DOCS_V3 = "CREATE TABLE docs (doc_id TEXT PRIMARY KEY, changed_at REAL)"
_MIGRATE_V2_TO_V3 = [
    _DOCS_V3,
    "INSERT INTO docs (doc_id) SELECT doc_id FROM snapshots UNION SELECT doc_id FROM changes",
]
_MIGRATE_V1_TO_V2 = [
    "ALTER TABLE snapshots RENAME TO snapshots_v1",
    _SNAPSHOTS_V2,
    "INSERT INTO snapshots (doc_id, gen, data) SELECT doc_id, 1, data FROM snapshots_v1",
    "DROP TABLE snapshots_v1",
    "ALTER TABLE changes ADD COLUMN covered INTEGER",
]

# What sqlite3 raises as a plain DatabaseError (SQLITE_CORRUPT "database disk
# image is malformed", SQLITE_NOTADB "file is not a database") means a damaged
# file; these subclasses mean something else (busy, I/O, disk full, constraint).
_NOT_CORRUPTION = (
    sqlite3.OperationalError,
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._lock_fd: int | None = None
        # Read-only (export, while a bridge may serve the file): no lock, no
        # migration, no writer; a schema newer than ours is still refused.
        self.read_only = False

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def lock(self) -> None:
        """Take the one-writer lock now, or raise :class:`StoreLocked`.

        ``open()`` takes it if it is not held yet; taking it earlier lets a
        command refuse to start before it serves anything. ``close()`` releases it.
        """
        if self._lock_fd is not None or fcntl is None or str(self.path) == ":memory:":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise StoreLocked(str(self.path), str(self.lock_path), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            conn.close()  # e.g. "file is not a database"
            raise
        return conn

    @contextmanager
    def _corruption_is_fatal(self) -> Iterator[None]:
        """Re-raise what SQLite reports as a damaged file as :class:`StoreCorrupt`,
        so callers can tell it from a transient error worth retrying."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, _NOT_CORRUPTION):
                raise
            raise StoreCorrupt(str(self.path), str(exc)) from exc

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        # quick_check: the b-trees, pages and records, without cross-checking
        # indexes against tables (O(N), a second or so per GB).
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            lines = [line for p in problems for line in p.splitlines() if line and not line.startswith("***")]
            shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
            raise StoreCorrupt(str(self.path), f"integrity check failed: {shown}")

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or migrate an older one in place, in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(str(self.path), version, SCHEMA_VERSION)
            if version < SCHEMA_VERSION:
                has_tables = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'"
                ).fetchone()
                if not has_tables:
                    steps = [*_SCHEMA_V2, _DOCS_V3]
                else:  # version 0 (= 1, before versions were tracked) or 2
                    steps = [*(_MIGRATE_V1_TO_V2 if version < 2 else []), *_MIGRATE_V2_TO_V3]
                for statement in steps:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        """Lock, check and migrate the database. Opening an open store does
        nothing, so a command can open it early to fail fast and in one line."""
        if self._writer is not None or self._reader is not None:
            return
        if self.read_only:
            await anyio.to_thread.run_sync(self._open_read_only)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock()

        def setup() -> None:
            with self._corruption_is_fatal():
                self._writer = self._connect()
                self._check_integrity(self._writer)
                self._upgrade(self._writer)
                self._reader = self._connect()

        try:
            await anyio.to_thread.run_sync(setup)
        except BaseException:
            await self.close()
            raise

    def _open_read_only(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"no database at {self.path}")
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            conn.close()
            raise SchemaTooNew(str(self.path), version, SCHEMA_VERSION)
        self._reader = conn

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        self._unlock()

    async def load(self, doc_id: str) -> StoredDoc | None:
        return await anyio.to_thread.run_sync(self._load, doc_id)

    def _load(self, doc_id: str) -> StoredDoc | None:
        assert self._reader is not None, "store is not open"
        with self._read_lock, self._corruption_is_fatal():
            conn = self._reader
            # One read transaction, so the snapshots and the rows agree.
            conn.execute("BEGIN")
            try:
                newest = conn.execute(
                    "SELECT gen, data FROM snapshots WHERE doc_id = ? ORDER BY gen DESC LIMIT 2", (doc_id,)
                ).fetchall()
                snapshots = [data for _, data in newest]
                changes = [
                    (change_hash, data)
                    for change_hash, data in conn.execute(
                        "SELECT hash, data FROM changes WHERE doc_id = ? ORDER BY seq", (doc_id,)
                    )
                ]
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        if not snapshots and not changes:
            return None
        return StoredDoc(snapshots, changes, gen=newest[0][0] if newest else 0)

    async def check(self) -> None:
        def query() -> None:
            assert self._reader is not None, "store is not open"
            with self._read_lock, self._corruption_is_fatal():
                self._reader.execute("SELECT 1").fetchone()

        await anyio.to_thread.run_sync(query)

    async def commit(self, writes: Sequence[Write]) -> list[Committed]:
        return await anyio.to_thread.run_sync(self._commit, list(writes))

    def _commit(self, writes: list[Write]) -> list[Committed]:
        assert self._writer is not None, "store is not open"
        with self._write_lock, self._corruption_is_fatal():
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            done: list[Committed] = []
            try:
                for write in writes:
                    if isinstance(write, AppendChanges):
                        done.append(Committed())
                        # Idempotent per (doc_id, hash). Not INSERT OR IGNORE:
                        # that would also drop a row with NULL data silently.
                        added = conn.executemany(
                            "INSERT INTO changes (doc_id, hash, data) VALUES (?, ?, ?)"
                            " ON CONFLICT (doc_id, hash) DO NOTHING",
                            [(write.doc_id, h, data) for h, data in write.changes],
                        ).rowcount
                        if added > 0:
                            conn.execute(
                                "INSERT INTO docs (doc_id, changed_at) VALUES (?, ?)"
                                " ON CONFLICT (doc_id) DO UPDATE SET changed_at = excluded.changed_at",
                                (write.doc_id, time.time()),
                            )
                    elif isinstance(write, Compact):
                        done.append(Committed(gen=self._compact(conn, write)))
                    elif isinstance(write, DeleteDoc):
                        for table in ("changes", "snapshots", "docs"):
                            conn.execute(f"DELETE FROM {table} WHERE doc_id = ?", (write.doc_id,))
                        done.append(Committed())
                    else:
                        raise TypeError(f"unknown write: {write!r}")
                conn.execute("COMMIT")
                return done
            except BaseException:
                # SQLite rolls back by itself on some errors (disk full, I/O).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _compact(conn: sqlite3.Connection, write: Compact) -> int | None:
        doc_id = write.doc_id
        (newest,) = conn.execute("SELECT COALESCE(MAX(gen), 0) FROM snapshots WHERE doc_id = ?", (doc_id,)).fetchone()
        if write.base_gen is not None and write.base_gen != newest:
            return None  # stale: see Compact.base_gen
        gen = newest + 1
        conn.execute("INSERT INTO snapshots (doc_id, gen, data) VALUES (?, ?, ?)", (doc_id, gen, write.snapshot))
        conn.execute("INSERT INTO docs (doc_id) VALUES (?) ON CONFLICT (doc_id) DO NOTHING", (doc_id,))
        conn.executemany(
            "UPDATE changes SET covered = ? WHERE doc_id = ? AND hash = ? AND covered IS NULL",
            [(gen, doc_id, h) for h in write.covered],
        )
        # Rows an earlier snapshot covers are in the previous snapshot, which
        # stays as the fallback; snapshots older than that one go.
        conn.execute("DELETE FROM changes WHERE doc_id = ? AND covered < ?", (doc_id, gen))
        conn.execute("DELETE FROM snapshots WHERE doc_id = ? AND gen < ?", (doc_id, gen - 1))
        return gen

    async def doc_ids(self) -> list[str]:
        def query() -> list[str]:
            assert self._reader is not None, "store is not open"
            with self._read_lock, self._corruption_is_fatal():
                rows = self._reader.execute(
                    "SELECT doc_id FROM snapshots UNION SELECT doc_id FROM changes ORDER BY 1"
                ).fetchall()
            return [r[0] for r in rows]

        return await anyio.to_thread.run_sync(query)

    async def doc_infos(self, after: str | None = None, limit: int = 100, only: str | None = None) -> list[DocInfo]:
        where, params = ("d.doc_id = ?", (only,)) if only is not None else ("d.doc_id > ?", (after or "",))

        def query() -> list[DocInfo]:
            assert self._reader is not None, "store is not open"
            with self._read_lock, self._corruption_is_fatal():
                rows = self._reader.execute(
                    "SELECT d.doc_id, d.changed_at,"
                    " (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM snapshots s WHERE s.doc_id = d.doc_id)"
                    " + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM changes c WHERE c.doc_id = d.doc_id)"
                    f" FROM docs d WHERE {where} ORDER BY d.doc_id LIMIT ?",
                    (*params, limit),
                ).fetchall()
            return [DocInfo(doc_id, size, changed_at) for doc_id, changed_at, size in rows]

        return await anyio.to_thread.run_sync(query)
