"""One acceptance suite that every storage backend must pass."""

from __future__ import annotations

import pytest
from automerge import core

from bridge.storage import AppendChanges, Compact, open_store


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'bridge.sqlite3'}"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()


def history(n: int) -> tuple[core.Document, list[core.Change]]:
    doc = core.Document()
    for i in range(n):
        with doc.transaction() as tx:
            tx.put(core.ROOT, f"k{i}", core.ScalarType.Int, i)
    return doc, doc.get_changes([])


def pairs(changes):
    return [(c.hash, c.bytes) for c in changes]


pytestmark = pytest.mark.anyio


async def test_unknown_doc_loads_as_none(store):
    assert await store.load("nope") is None
    assert await store.doc_ids() == []


async def test_appended_changes_load_back_in_order(store):
    doc, changes = history(5)
    await store.commit([AppendChanges("a", pairs(changes[:2])), AppendChanges("a", pairs(changes[2:]))])
    stored = await store.load("a")
    assert stored.snapshot is None and len(stored.changes) == 5
    assert core.Document.load(stored.as_bytes()).get_heads() == doc.get_heads()


async def test_appending_the_same_change_twice_keeps_one(store):
    _, changes = history(2)
    await store.commit([AppendChanges("a", pairs(changes))])
    await store.commit([AppendChanges("a", pairs(changes))])
    assert len((await store.load("a")).changes) == 2


async def test_compact_replaces_earlier_changes_and_keeps_later_ones(store):
    doc, changes = history(6)
    snapshot = core.Document.load(b"".join(c.bytes for c in changes[:4])).save()
    await store.commit(
        [AppendChanges("a", pairs(changes[:4])), Compact("a", snapshot), AppendChanges("a", pairs(changes[4:]))]
    )
    stored = await store.load("a")
    assert stored.snapshot == snapshot
    assert stored.changes == [c.bytes for c in changes[4:]]
    assert core.Document.load(stored.as_bytes()).get_heads() == doc.get_heads()


async def test_documents_are_kept_apart(store):
    _, a = history(1)
    _, b = history(3)
    await store.commit([AppendChanges("a", pairs(a)), AppendChanges("b", pairs(b))])
    assert await store.doc_ids() == ["a", "b"]
    assert len((await store.load("a")).changes) == 1
    assert len((await store.load("b")).changes) == 3


async def test_a_failing_batch_applies_nothing(store):
    _, changes = history(2)
    with pytest.raises(TypeError):
        await store.commit([AppendChanges("a", pairs(changes)), "not a write"])
    assert await store.load("a") is None


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
