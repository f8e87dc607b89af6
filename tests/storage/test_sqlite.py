"""SQLite only: durability settings, reopening, schema migration, corruption."""

from __future__ import annotations

import os
import random
import sqlite3

import pytest
from automerge import core

from bridge.storage import acceptance
from bridge.storage import AppendChanges, Compact, StoreCorrupt, open_store
from bridge.storage.sqlite import SCHEMA_VERSION, SchemaTooNew, SQLiteStore

pytestmark = pytest.mark.anyio

# The schema before versions were tracked (user_version 0), as it shipped.
V1_SCHEMA = """
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



# The acceptance suite's own history builder: one change per key.
history = acceptance._history
pairs = acceptance._pairs


def user_version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


async def test_sqlite_survives_reopen(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    doc, changes = history(3)
    first = open_store(url)
    await first.open()
    await first.commit([AppendChanges("a", pairs(changes))])
    await first.close()
    second = open_store(url)
    await second.open()
    stored = await second.load("a")
    await second.close()
    assert core.Document.load(stored.as_bytes()).get_heads() == doc.get_heads()


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    await store.open()
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    await store.close()
    assert user_version(tmp_path / "x.sqlite3") == SCHEMA_VERSION == 3


async def test_a_version_2_database_gains_its_document_list(tmp_path):
    path = tmp_path / "v2.sqlite3"
    _, c = history(2)
    store = SQLiteStore(path)
    await store.open()
    await store.commit([AppendChanges("a", pairs(c)), AppendChanges("b", pairs(c[:1]))])
    await store.close()
    with sqlite3.connect(path) as conn:  # what version 2 was: no docs table
        conn.execute("DROP TABLE docs")
        conn.execute("PRAGMA user_version = 2")
    again = SQLiteStore(path)
    await again.open()
    assert user_version(path) == 3
    assert [(i.doc_id, i.changed_at) for i in await again.doc_infos()] == [("a", None), ("b", None)]
    await again.commit([AppendChanges("b", pairs(c[1:]))])
    [b] = await again.doc_infos(only="b")
    assert b.changed_at is not None and b.size == sum(len(x.bytes) for x in c)
    await again.close()


async def test_a_version_1_database_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.sqlite3"
    doc, c = history(5)
    snapshot = core.Document.load(b"".join(x.bytes for x in c[:3])).save()
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    with conn:
        conn.execute("INSERT INTO snapshots (doc_id, data) VALUES (?, ?)", ("a", snapshot))
        conn.executemany(
            "INSERT INTO changes (doc_id, hash, data) VALUES (?, ?, ?)", [("a", h, d) for h, d in pairs(c[3:])]
        )
        conn.executemany(
            "INSERT INTO changes (doc_id, hash, data) VALUES (?, ?, ?)", [("b", h, d) for h, d in pairs(c[:2])]
        )
    conn.close()
    assert user_version(path) == 0

    store = SQLiteStore(path)
    await store.open()
    assert user_version(path) == 3
    assert await store.doc_ids() == ["a", "b"]
    infos = await store.doc_infos()
    assert [(i.doc_id, i.changed_at) for i in infos] == [("a", None), ("b", None)], "no change time was recorded"
    stored = await store.load("a")
    assert stored.snapshots == [snapshot]
    assert stored.changes == pairs(c[3:])
    assert core.Document.load(stored.as_bytes()).get_heads() == doc.get_heads()
    assert (await store.load("b")).changes == pairs(c[:2])
    assert (await store.load("b")).snapshots == []

    # The v1 snapshot is generation 1 and its rows are uncovered: a compaction
    # keeps it as the previous snapshot and marks the rows it names.
    newest = doc.save()
    await store.commit([Compact("a", newest, frozenset(x.hash for x in c[3:4]))])
    stored = await store.load("a")
    assert stored.snapshots == [newest, snapshot]
    assert stored.changes == pairs(c[3:])
    await store.commit([Compact("a", newest, frozenset(x.hash for x in c))])
    assert (await store.load("a")).changes == pairs(c[4:])
    await store.close()

    # Reopening a migrated database changes nothing.
    again = SQLiteStore(path)
    await again.open()
    assert (await again.load("a")).snapshots == [newest, newest]
    assert (await again.load("b")).changes == pairs(c[:2])
    await again.close()


async def test_a_database_from_a_newer_bridge_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.commit([AppendChanges("a", [(b"\x01" * 32, b"change")])])
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    with pytest.raises(SchemaTooNew) as refused:
        await SQLiteStore(path).open()
    assert refused.value.version == SCHEMA_VERSION + 1
    assert str(path) in str(refused.value) and "newer" in str(refused.value)
    assert user_version(path) == SCHEMA_VERSION + 1, "refused without touching it"
    # The refusal released the lock.
    SQLiteStore(path).lock()


def fill(n: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [(rng.randbytes(32), rng.randbytes(500)) for _ in range(n)]


def corrupt_middle_pages(path, offset: int = 0, length: int = 4096, seed: int = 1) -> None:
    """Overwrite ``length`` bytes at ``offset`` in every other page of the
    middle half of the file with garbage (the default: whole pages)."""
    page_size = 4096
    pages = os.path.getsize(path) // page_size
    assert pages > 20, "not enough data to corrupt only middle pages"
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for page in range(pages // 4, pages * 3 // 4, 2):
            f.seek(page * page_size + offset)
            f.write(rng.randbytes(length))
        f.flush()
        os.fsync(f.fileno())


# Whole garbage pages make SQLite fail the check itself ("database disk image
# is malformed"); garbage in the cells of each page makes quick_check list problems.
@pytest.mark.parametrize(
    "offset, length, says",
    [(0, 4096, "malformed"), (3000, 1000, "integrity check failed")],
    ids=["whole-pages", "page-tails"],
)
async def test_a_corrupt_database_is_refused_on_open(tmp_path, offset, length, says):
    path = tmp_path / "bridge.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.commit([AppendChanges(f"d{i % 5}", [row]) for i, row in enumerate(fill(300))])
    await store.close()
    assert not os.path.exists(str(path) + "-wal") or os.path.getsize(str(path) + "-wal") == 0
    corrupt_middle_pages(path, offset, length)

    with pytest.raises(StoreCorrupt) as refused:
        await SQLiteStore(path).open()
    assert refused.value.path == str(path)
    message = str(refused.value)
    assert str(path) in message and "corrupt" in message and "restore it from a backup" in message
    assert says in message and "\n" not in message, message
    # The refusal released the lock.
    SQLiteStore(path).lock()


async def test_a_file_that_is_not_a_database_is_refused_on_open(tmp_path):
    path = tmp_path / "bridge.sqlite3"
    path.write_bytes(random.Random(2).randbytes(64 * 1024))
    with pytest.raises(StoreCorrupt, match="restore it from a backup"):
        await SQLiteStore(path).open()


async def test_corruption_found_while_running_is_store_corrupt(tmp_path):
    path = tmp_path / "bridge.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.commit([AppendChanges("a", fill(300))])
    await store.close()
    await store.open()  # passes the integrity check
    corrupt_middle_pages(path)
    with pytest.raises(StoreCorrupt) as corrupt:
        await store.load("a")
    assert str(path) in str(corrupt.value) and "restore it from a backup" in str(corrupt.value)
    assert isinstance(corrupt.value.__cause__, sqlite3.DatabaseError)
    await store.close()


async def test_a_constraint_failure_is_not_reported_as_corruption(tmp_path):
    store = SQLiteStore(tmp_path / "bridge.sqlite3")
    await store.open()
    with pytest.raises(sqlite3.IntegrityError):
        await store.commit([Compact("a", None)])
    assert await store.load("a") is None
    await store.close()
