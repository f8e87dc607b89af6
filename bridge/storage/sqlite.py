"""SQLite store, the embedded default.

WAL journal with ``synchronous=FULL``: a committed transaction has been
fsync'd to the WAL, so it survives a crash or power loss — that is what lets
the bridge acknowledge. One connection writes and one reads (WAL lets readers
run beside the writer); each is used from one worker thread at a time.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

import anyio.to_thread

from . import AppendChanges, Compact, StoredDoc, Write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    doc_id TEXT PRIMARY KEY,
    data   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    hash   BLOB NOT NULL,
    data   BLOB NOT NULL,
    UNIQUE (doc_id, hash)
);
CREATE INDEX IF NOT EXISTS changes_by_doc ON changes (doc_id, seq);
"""


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> None:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._reader = self._connect()

        await anyio.to_thread.run_sync(setup)

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    async def load(self, doc_id: str) -> StoredDoc | None:
        return await anyio.to_thread.run_sync(self._load, doc_id)

    def _load(self, doc_id: str) -> StoredDoc | None:
        assert self._reader is not None, "store is not open"
        with self._read_lock:
            # One read transaction, so the snapshot and the changes agree.
            self._reader.execute("BEGIN")
            try:
                row = self._reader.execute(
                    "SELECT data FROM snapshots WHERE doc_id = ?", (doc_id,)
                ).fetchone()
                changes = [
                    data
                    for (data,) in self._reader.execute(
                        "SELECT data FROM changes WHERE doc_id = ? ORDER BY seq", (doc_id,)
                    )
                ]
            finally:
                self._reader.execute("COMMIT")
        if row is None and not changes:
            return None
        return StoredDoc(row[0] if row else None, changes)

    async def commit(self, writes: Sequence[Write]) -> None:
        await anyio.to_thread.run_sync(self._commit, list(writes))

    def _commit(self, writes: list[Write]) -> None:
        assert self._writer is not None, "store is not open"
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for write in writes:
                    if isinstance(write, AppendChanges):
                        conn.executemany(
                            "INSERT OR IGNORE INTO changes (doc_id, hash, data) VALUES (?, ?, ?)",
                            [(write.doc_id, h, data) for h, data in write.changes],
                        )
                    elif isinstance(write, Compact):
                        conn.execute("DELETE FROM changes WHERE doc_id = ?", (write.doc_id,))
                        conn.execute(
                            "INSERT OR REPLACE INTO snapshots (doc_id, data) VALUES (?, ?)",
                            (write.doc_id, write.snapshot),
                        )
                    else:
                        raise TypeError(f"unknown write: {write!r}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    async def doc_ids(self) -> list[str]:
        def query() -> list[str]:
            assert self._reader is not None, "store is not open"
            with self._read_lock:
                rows = self._reader.execute(
                    "SELECT doc_id FROM snapshots UNION SELECT doc_id FROM changes ORDER BY 1"
                ).fetchall()
            return [r[0] for r in rows]

        return await anyio.to_thread.run_sync(query)
