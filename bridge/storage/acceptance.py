"""The acceptance suite every :class:`~bridge.storage.Store` must pass; run it against your own.

In a test module: ``from bridge.storage.acceptance import *`` (imports only the ``test_*`` functions),
and define a ``store`` fixture (there, or in conftest.py) that yields a new, opened, empty store
and closes it afterwards. The tests are anyio tests: they run on the ``anyio_backend`` fixture
(asyncio unless you override it). See tests/storage/test_acceptance.py for memory and SQLite.
"""

from __future__ import annotations

import pytest
from automerge import core

import time

from . import AppendChanges, Committed, Compact, DeleteDoc, StoredDoc

__all__ = [
    "test_unknown_doc_loads_as_none",
    "test_appended_changes_load_back_in_order",
    "test_appending_the_same_change_twice_keeps_one",
    "test_compact_keeps_the_rows_it_covers_and_later_ones",
    "test_compaction_marks_rows_and_retires_them_one_compaction_later",
    "test_rows_not_covered_survive_any_number_of_compactions",
    "test_previous_snapshot_plus_rows_load_to_the_same_heads_as_newest",
    "test_at_most_two_snapshots_are_kept",
    "test_documents_are_kept_apart",
    "test_a_failing_batch_applies_nothing",
    "test_commit_reports_one_result_per_write",
    "test_a_compaction_on_a_stale_generation_writes_nothing",
    "test_check_answers_on_an_open_store",
    "test_doc_infos_list_in_id_order_with_sizes_and_change_times",
    "test_delete_removes_everything_of_one_document_in_batch_order",
]

def _history(n: int) -> tuple[core.Document, list[core.Change]]:
    doc = core.Document()
    for i in range(n):
        with doc.transaction() as tx:
            tx.put(core.ROOT, f"k{i}", core.ScalarType.Int, i)
    return doc, doc.get_changes([])


def _pairs(changes: list[core.Change]) -> list[tuple[bytes, bytes]]:
    return [(c.hash, c.bytes) for c in changes]


def _snapshot_of(changes: list[core.Change]) -> bytes:
    return core.Document.load(b"".join(c.bytes for c in changes)).save()


def _heads(data: bytes) -> list[bytes]:
    return core.Document.load(data).get_heads()


def _with_rows(snapshot: bytes, stored: StoredDoc) -> bytes:
    return snapshot + b"".join(stored.change_bytes)


@pytest.mark.anyio
async def test_unknown_doc_loads_as_none(store):
    assert await store.load("nope") is None
    assert await store.doc_ids() == []


@pytest.mark.anyio
async def test_appended_changes_load_back_in_order(store):
    doc, changes = _history(5)
    await store.commit([AppendChanges("a", _pairs(changes[:2])), AppendChanges("a", _pairs(changes[2:]))])
    stored = await store.load("a")
    assert stored.snapshots == [] and stored.snapshot is None
    assert stored.changes == _pairs(changes)
    assert _heads(stored.as_bytes()) == doc.get_heads()


@pytest.mark.anyio
async def test_appending_the_same_change_twice_keeps_one(store):
    _, changes = _history(2)
    await store.commit([AppendChanges("a", _pairs(changes))])
    await store.commit([AppendChanges("a", _pairs(changes))])
    await store.commit([AppendChanges("a", _pairs(changes[:1]) * 2)])
    assert (await store.load("a")).changes == _pairs(changes)


@pytest.mark.anyio
async def test_compact_keeps_the_rows_it_covers_and_later_ones(store):
    doc, changes = _history(6)
    snapshot = _snapshot_of(changes[:4])
    covered = frozenset(c.hash for c in changes[:4])
    await store.commit(
        [AppendChanges("a", _pairs(changes[:4])), Compact("a", snapshot, covered), AppendChanges("a", _pairs(changes[4:]))]
    )
    stored = await store.load("a")
    assert stored.snapshots == [snapshot] and stored.snapshot == snapshot
    assert stored.changes == _pairs(changes), "covered rows stay until the next snapshot covers them too"
    assert _heads(stored.as_bytes()) == doc.get_heads()


@pytest.mark.anyio
async def test_compaction_marks_rows_and_retires_them_one_compaction_later(store):
    doc, c = _history(8)
    # Compaction 1 covers c0-c2.
    s1 = _snapshot_of(c[:3])
    await store.commit([AppendChanges("a", _pairs(c[:3])), Compact("a", s1, frozenset(x.hash for x in c[:3]))])
    stored = await store.load("a")
    assert stored.snapshots == [s1]
    assert stored.changes == _pairs(c[:3])

    # Compaction 2 covers c0-c5 (c0-c2 already by generation 1); c6 arrived
    # meanwhile and is not covered.
    s2 = _snapshot_of(c[:6])
    await store.commit(
        [
            AppendChanges("a", _pairs(c[3:6])),
            AppendChanges("a", _pairs(c[6:7])),
            Compact("a", s2, frozenset(x.hash for x in c[:6])),
        ]
    )
    stored = await store.load("a")
    assert stored.snapshots == [s2, s1]
    assert stored.changes == _pairs(c[3:7]), "rows covered by generation 1 go, those covered by 2 and uncovered stay"

    # Compaction 3 covers everything so far; c7 comes after it.
    s3 = _snapshot_of(c[:7])
    await store.commit(
        [Compact("a", s3, frozenset(x.hash for x in c[:7])), AppendChanges("a", _pairs(c[7:]))]
    )
    stored = await store.load("a")
    assert stored.snapshots == [s3, s2]
    assert stored.changes == _pairs(c[6:8])
    for snapshot in stored.snapshots:
        assert _heads(_with_rows(snapshot, stored)) == doc.get_heads()


@pytest.mark.anyio
async def test_rows_not_covered_survive_any_number_of_compactions(store):
    doc, c = _history(5)
    await store.commit([AppendChanges("a", _pairs(c))])
    snapshot = _snapshot_of(c[:2])
    for _ in range(5):
        await store.commit([Compact("a", snapshot, frozenset(x.hash for x in c[:2]))])
        stored = await store.load("a")
        assert stored.changes[-3:] == _pairs(c[2:])
    assert stored.changes == _pairs(c[2:])
    assert len(stored.snapshots) == 2
    assert _heads(stored.as_bytes()) == doc.get_heads()


@pytest.mark.anyio
async def test_previous_snapshot_plus_rows_load_to_the_same_heads_as_newest(store):
    # A writer that compacts what it loaded while more changes arrive.
    doc, c = _history(20)
    await store.commit([AppendChanges("a", _pairs(c[:3]))])
    for i in range(3, 20, 4):
        stored = await store.load("a")
        snapshot = core.Document.load(stored.as_bytes()).save()
        covered = frozenset(h for h, _ in stored.changes)
        await store.commit([AppendChanges("a", _pairs(c[i : i + 2])), Compact("a", snapshot, covered)])
        await store.commit([AppendChanges("a", _pairs(c[i + 2 : i + 4]))])
        stored = await store.load("a")
        expected = core.Document.load(b"".join(x.bytes for x in c[: i + 4])).get_heads()
        assert _heads(stored.as_bytes()) == expected
        assert _heads(_with_rows(stored.snapshots[-1], stored)) == expected, "the fallback holds everything"
    assert expected == doc.get_heads()


@pytest.mark.anyio
async def test_at_most_two_snapshots_are_kept(store):
    _, c = _history(6)
    written = []
    for i in range(6):
        written.append(_snapshot_of(c[: i + 1]))
        await store.commit([AppendChanges("a", _pairs(c[i : i + 1])), Compact("a", written[-1], frozenset({c[i].hash}))])
        stored = await store.load("a")
        assert stored.snapshots == written[::-1][:2], "newest first, then the previous one"


@pytest.mark.anyio
async def test_documents_are_kept_apart(store):
    # The same changes in two documents: rows are per document, hashes too.
    _, c = _history(3)
    await store.commit([AppendChanges("a", _pairs(c[:1])), AppendChanges("b", _pairs(c))])
    assert await store.doc_ids() == ["a", "b"]
    assert (await store.load("a")).changes == _pairs(c[:1])
    assert (await store.load("b")).changes == _pairs(c)
    snapshot = _snapshot_of(c)
    await store.commit([Compact("b", snapshot, frozenset(x.hash for x in c)), Compact("b", snapshot)])
    assert (await store.load("b")).changes == [], "b's rows were covered by generation 1, so generation 2 retired them"
    # Had b's compaction marked a's row, a's second compaction would retire it.
    await store.commit([Compact("a", _snapshot_of([])), Compact("a", _snapshot_of([]))])
    assert (await store.load("a")).changes == _pairs(c[:1])
    assert len((await store.load("b")).snapshots) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad", ["not a write", AppendChanges("a", [(b"h" * 32, None)]), Compact("a", None)], ids=["type", "change", "snapshot"]
)
async def test_a_failing_batch_applies_nothing(store, bad):
    _, changes = _history(4)
    await store.commit([AppendChanges("a", _pairs(changes[:2]))])
    before = await store.load("a")
    snapshot = _snapshot_of(changes)
    batch = [
        AppendChanges("a", _pairs(changes[2:])),
        Compact("a", snapshot, frozenset(c.hash for c in changes)),
        AppendChanges("b", _pairs(changes)),
        bad,
    ]
    with pytest.raises(Exception):
        await store.commit(batch)
    assert await store.load("a") == before
    assert await store.load("b") is None
    assert await store.doc_ids() == ["a"]
    # The store still works after the failure.
    await store.commit(batch[:-1])
    assert (await store.load("a")).snapshots == [snapshot]


@pytest.mark.anyio
async def test_commit_reports_one_result_per_write(store):
    _, c = _history(3)
    results = await store.commit([AppendChanges("a", _pairs(c[:2])), Compact("a", _snapshot_of(c[:2]), frozenset(x.hash for x in c[:2])), AppendChanges("a", _pairs(c[2:]))])
    assert len(results) == 3 and all(isinstance(r, Committed) for r in results)
    assert results[1].gen == 1 and (await store.load("a")).gen == 1
    first, _, last = results
    if first.seq:  # a store that keeps a sequence per document
        assert (first.prev_seq, first.seq) == (0, 2) and (last.prev_seq, last.seq) == (2, 3)
        assert (await store.load("a")).seq == 3
        (again,) = await store.commit([AppendChanges("a", _pairs(c))])
        assert again.prev_seq == again.seq == 3, "changes already stored add no rows and take no sequence numbers"


@pytest.mark.anyio
async def test_a_compaction_on_a_stale_generation_writes_nothing(store):
    # Two bridges share the store; each compacts what it holds. The second
    # one's copy was loaded before the first compacted: it must not retire
    # rows or snapshots on the strength of a snapshot that may lack changes.
    doc, c = _history(4)
    await store.commit([AppendChanges("a", _pairs(c[:2]))])
    s_first = _snapshot_of(c[:3])
    (_, r1) = await store.commit([AppendChanges("a", _pairs(c[2:3])), Compact("a", s_first, frozenset(x.hash for x in c[:3]), base_gen=0)])
    assert r1.gen == 1
    before = await store.load("a")
    s_second = _snapshot_of(c[:2])  # lacks c2, which the first bridge accepted
    (_, r2) = await store.commit([AppendChanges("a", _pairs(c[3:])), Compact("a", s_second, frozenset(x.hash for x in c[:2]), base_gen=0)])
    assert r2.gen is None, "skipped: generation 1 is newer than the writer's base"
    after = await store.load("a")
    assert after.snapshots == before.snapshots and after.gen == 1
    assert after.changes == _pairs(c), "the append in the same batch still committed"
    assert _heads(after.as_bytes()) == doc.get_heads()
    (r3,) = await store.commit([Compact("a", _snapshot_of(c), frozenset(x.hash for x in c), base_gen=1)])
    assert r3.gen == 2


@pytest.mark.anyio
async def test_check_answers_on_an_open_store(store):
    await store.check()


@pytest.mark.anyio
async def test_doc_infos_list_in_id_order_with_sizes_and_change_times(store):
    _, c = _history(3)
    started = time.time()
    await store.commit([AppendChanges(doc_id, _pairs(c)) for doc_id in ("b", "a", "c-1", "C")])
    snapshot = _snapshot_of(c)
    await store.commit([Compact("b", snapshot, frozenset(x.hash for x in c))])
    everything = await store.doc_infos(limit=10)
    assert [i.doc_id for i in everything] == ["C", "a", "b", "c-1"]  # byte order, as Python sorts
    rows = sum(len(x.bytes) for x in c)
    sizes = {i.doc_id: i.size for i in everything}
    assert sizes == {"C": rows, "a": rows, "b": rows + len(snapshot), "c-1": rows}
    assert all(started - 1 <= i.changed_at <= time.time() + 1 for i in everything)
    page = await store.doc_infos(after="a", limit=2)
    assert [i.doc_id for i in page] == ["b", "c-1"]
    assert await store.doc_infos(after="c-1", limit=2) == []
    assert [i.doc_id for i in await store.doc_infos(only="b")] == ["b"]
    assert await store.doc_infos(only="nope") == []


@pytest.mark.anyio
async def test_delete_removes_everything_of_one_document_in_batch_order(store):
    _, c = _history(3)
    await store.commit([AppendChanges("a", _pairs(c[:2])), AppendChanges("b", _pairs(c))])
    await store.commit([Compact("a", _snapshot_of(c[:2]), frozenset(x.hash for x in c[:2]))])
    results = await store.commit([AppendChanges("a", _pairs(c[2:])), DeleteDoc("a")])
    assert len(results) == 2
    assert await store.load("a") is None
    assert await store.doc_ids() == ["b"] and [i.doc_id for i in await store.doc_infos()] == ["b"]
    assert (await store.load("b")).changes == _pairs(c), "another document is untouched"
    # After a delete in the same batch, an append starts the document over.
    await store.commit([AppendChanges("a", _pairs(c[:1])), DeleteDoc("a"), AppendChanges("a", _pairs(c[:1]))])
    again = await store.load("a")
    assert again.changes == _pairs(c[:1]) and again.snapshots == []
    await store.commit([DeleteDoc("never-stored")])  # nothing to delete is not an error
