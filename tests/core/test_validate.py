"""Which incoming changes may reach a document (bridge/core/validate.py)."""

from __future__ import annotations

from automerge import core

from bridge.core.chunks import Bounds, split_chunks
from bridge.core.validate import ChangeIndex, plan

from .. import crafting


def put(doc: core.Document, key: str, value: int = 1) -> bytes:
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, value)
    return doc.get_last_local_change().bytes


def parsed(*chunks: bytes):
    return [c for chunk in chunks for c in split_chunks(chunk, Bounds())]


def test_honest_changes_apply_in_causal_order_even_when_sent_reversed():
    base, theirs = core.Document(), core.Document()
    first, second = put(theirs, "a"), put(theirs, "b")
    result = plan(ChangeIndex.of(base), parsed(second, first))
    assert [c.hash for c in result.apply] == [crafting.change_hash(first), crafting.change_hash(second)]
    assert not result.rejected and not result.waiting


def test_changes_with_missing_dependencies_wait_and_apply_once_they_arrive():
    index = ChangeIndex.of(core.Document())
    theirs = core.Document()
    first, second = put(theirs, "a"), put(theirs, "b")
    held = plan(index, parsed(second))
    assert not held.apply and [c.hash for c in held.waiting] == [crafting.change_hash(second)]
    later = plan(index, parsed(first), held.waiting)
    assert len(later.apply) == 2 and not later.waiting


def test_known_changes_are_skipped_silently():
    doc = core.Document()
    chunk = put(doc, "a")
    result = plan(ChangeIndex.of(doc), parsed(chunk))
    assert not result.apply and not result.rejected and not result.waiting


def check_refused(chunk: bytes, reason: str, doc: core.Document | None = None):
    result = plan(ChangeIndex.of(doc or core.Document()), parsed(chunk))
    assert not result.apply and len(result.rejected) == 1, result
    assert reason in result.rejected[0][1]


def test_a_seq_gap_is_refused():
    check_refused(crafting.rewrite(put(core.Document(), "a"), seq=2), "seq 2")


def test_timestamps_out_of_range_are_refused():
    check_refused(crafting.rewrite(put(core.Document(), "a"), time=-(2**63)), "timestamp")
    check_refused(crafting.rewrite(put(core.Document(), "a"), time=2**62), "timestamp")


def test_start_op_must_follow_the_ops_it_has_seen():
    check_refused(crafting.rewrite(put(core.Document(), "a"), start_op=2**32 - 1), "skips past")
    doc = core.Document()
    put(doc, "a")
    put(doc, "b")
    theirs = core.Document.load(doc.save())
    theirs.set_actor(b"\x07" * 16)
    honest = put(theirs, "c")  # start_op 3, after the two ops it depends on
    check_refused(crafting.rewrite(honest, start_op=2), "not above its dependencies", doc)


def test_descendants_of_a_refused_change_are_refused_too():
    theirs = core.Document()
    first = crafting.rewrite(put(theirs, "a"), time=-(2**63))
    second = crafting.rewrite(put(theirs, "b"), deps=[crafting.change_hash(first)])
    result = plan(ChangeIndex.of(core.Document()), parsed(first, second))
    assert not result.apply and not result.waiting
    assert [reason for _, reason in result.rejected][1] == "depends on a refused change"


def test_the_index_follows_accepted_changes():
    doc = core.Document()
    index = ChangeIndex.of(doc)
    put(doc, "a")
    change = doc.get_last_local_change()
    index.add_changes([change])
    assert index.contains_all([change.hash]) and index.actors[change.actor_id] == (1, 1) and index.max_op == 1
