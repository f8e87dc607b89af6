"""Loading a document past bad records (bridge/core/loading.py)."""

from __future__ import annotations

import pytest
from automerge import core

from bridge.core.chunks import Bounds
from bridge.core.loading import Unloadable, load_stored

from .. import crafting


def history(n: int) -> tuple[core.Document, list[bytes]]:
    doc = core.Document()
    for i in range(n):
        with doc.transaction() as tx:
            tx.put(core.ROOT, f"k{i}", core.ScalarType.Int, i)
    return doc, [c.bytes for c in doc.get_changes([])]


def test_snapshot_and_rows_load_on_the_fast_path():
    doc, rows = history(10)
    loaded = load_stored([doc.save()], rows, Bounds())
    assert loaded.doc.get_heads() == doc.get_heads() and loaded.skipped == []


def test_a_garbage_row_is_skipped_and_reported():
    doc, rows = history(10)
    loaded = load_stored([], rows[:5] + [b"\x85oJ\x83garbage"] + rows[5:], Bounds())
    assert loaded.doc.get_heads() == doc.get_heads()
    assert len(loaded.skipped) == 1 and "does not parse" in loaded.skipped[0]


def test_on_the_slow_path_rows_are_checked_like_a_peers_changes():
    # The fast path trusts what the core loads; once it fails (here: a
    # garbage row), every row is checked, and a poisoned one left out.
    doc, rows = history(3)
    poison = crafting.rewrite(rows[2], time=-(2**63))
    loaded = load_stored([], rows[:2] + [poison, b"\x85oJ\x83garbage"], Bounds())
    assert core.extract(loaded.doc) == {"k0": 0, "k1": 1}
    assert any("timestamp" in s for s in loaded.skipped)


def test_a_truncated_newest_snapshot_falls_back_to_the_previous_one():
    doc, rows = history(20)
    previous = core.Document.load(b"".join(rows[:10])).save()
    newest = doc.save()
    loaded = load_stored([newest[: len(newest) // 2], previous], rows[10:], Bounds())
    assert loaded.doc.get_heads() == doc.get_heads()
    assert loaded.skipped and "snapshot 0" in loaded.skipped[0]


def test_rows_alone_serve_when_they_hold_the_whole_history():
    doc, rows = history(5)
    loaded = load_stored([b"\x85oJ\x83broken"], rows, Bounds())
    assert loaded.doc.get_heads() == doc.get_heads()


def test_never_an_empty_document_in_place_of_a_lost_one():
    doc, rows = history(10)
    with pytest.raises(Unloadable):
        load_stored([b"\x85oJ\x83broken"], [], Bounds())
    with pytest.raises(Unloadable):
        load_stored([b"\x85oJ\x83broken"], rows[5:], Bounds())  # they lean on the lost snapshot
