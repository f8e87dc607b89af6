"""The sans-IO core: two DocSyncs wired back to back converge without I/O."""

from automerge import core

from bridge.core.chunks import Bounds
from bridge.core.sync import BadSyncMessage, DocSync, HashIndex


def edit(doc: core.Document, key: str, value: int) -> None:
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, value)


def converge(a: DocSync, b: DocSync, max_rounds: int = 20) -> int:
    for rounds in range(1, max_rounds + 1):
        to_b, to_a = a.generate(), b.generate()
        if not to_a and not to_b:
            return rounds
        for msg in to_b:
            b.receive(msg)
        for msg in to_a:
            a.receive(msg)
    raise AssertionError("did not converge")


def test_pair_converges_on_concurrent_edits():
    left, right = core.Document(), core.Document()
    edit(left, "x", 1)
    edit(right, "y", 2)
    a, b = DocSync(left), DocSync(right)
    converge(a, b)
    assert left.get_heads() == right.get_heads()
    assert core.extract(left) == core.extract(right) == {"x": 1, "y": 2}


def changes_received_by_b(a: DocSync, b: DocSync, rounds: int = 5) -> list:
    received = []
    for _ in range(rounds):
        for msg in a.generate():
            received += b.receive(msg)
        for msg in b.generate():
            a.receive(msg)
    return received


def test_receive_returns_only_new_changes():
    left, right = core.Document(), core.Document()
    a, b = DocSync(left), DocSync(right)
    edit(left, "x", 1)
    assert [c.hash for c in changes_received_by_b(a, b)] == left.get_heads()
    edit(left, "x", 2)
    assert [c.hash for c in changes_received_by_b(a, b)] == left.get_heads()


def test_reset_resyncs_after_lost_state():
    left, right = core.Document(), core.Document()
    a, b = DocSync(left), DocSync(right)
    edit(left, "x", 1)
    converge(a, b)
    edit(left, "x", 2)
    a.reset()
    b.reset()
    converge(a, b)
    assert right.get_heads() == left.get_heads()


def test_garbage_is_rejected_and_changes_nothing():
    doc = core.Document()
    edit(doc, "x", 1)
    heads = doc.get_heads()
    sync = DocSync(doc)
    for garbage in [b"", b"\x00\x01", b"not a sync message", b"\x42\xff\xff\xff"]:
        try:
            sync.receive(garbage)
        except BadSyncMessage as exc:
            assert exc.applied == []
        else:
            raise AssertionError(f"{garbage!r} accepted")
    assert doc.get_heads() == heads


def test_hash_index_tracks_history():
    doc = core.Document()
    index = HashIndex(doc)
    edit(doc, "x", 1)
    first = doc.get_heads()
    edit(doc, "x", 2)
    assert index.contains_all(first)
    edit(doc, "x", 3)
    assert index.contains_all(doc.get_heads() + first)
    assert not index.contains_all([b"\x01" * 32])


def test_changes_waiting_for_dependencies_are_bounded_and_dropped_past_the_bound():
    from bridge.core.validate import ChangeIndex

    from .. import crafting

    server = core.Document()
    index = ChangeIndex.of(server)
    sync = DocSync(server, index=lambda: index, bounds=Bounds(max_waiting_changes=3))
    author = core.Document()
    edit(author, "root", 0)  # never sent: everything after it waits
    later = []
    for i in range(5):
        edit(author, f"k{i}", i)
        later.append(author.get_last_local_change().bytes)
    for chunk in later[:3]:
        assert sync.receive(crafting.sync_message([chunk])) == []
    assert len(sync.waiting) == 3
    try:
        sync.receive(crafting.sync_message([later[3]]))
    except BadSyncMessage as exc:
        assert "wait for missing dependencies" in str(exc)
    else:
        raise AssertionError("the fourth waiting change was kept")
    assert sync.waiting == {} and server.get_heads() == []


def test_document_chunks_are_read_only_past_what_we_hold():
    """Automerge sends the whole document as one chunk while it believes the
    other side has nothing; the guard reads only what may be new in it."""
    from bridge.core.binding import expand_chunks
    from bridge.core.chunks import SYNC_V1, SyncMessage, encode_sync_message
    from bridge.core.validate import ChangeIndex

    ours = core.Document()
    for n in range(30):
        with ours.transaction() as tx:
            tx.put(core.ROOT, f"k{n}", core.ScalarType.Int, n)
    index = ChangeIndex.of(ours)
    theirs = core.Document.load(ours.save())
    assert expand_chunks(theirs.save(), Bounds(), index.hashes, ours.get_heads()) == [], "all heads known: skipped"
    with theirs.transaction() as tx:
        tx.put(core.ROOT, "new", core.ScalarType.Int, 1)
    [new] = expand_chunks(theirs.save(), Bounds(), index.hashes, ours.get_heads())
    assert [new.hash] == theirs.get_heads()
    # Diverged: their chunk shares none of our heads, and we still find
    # every change of theirs we lack (and nothing we hold is lost).
    behind = core.Document.load(ours.save())
    with ours.transaction() as tx:
        tx.put(core.ROOT, "ours", core.ScalarType.Int, 2)
    index = ChangeIndex.of(ours)
    found = expand_chunks(theirs.save(), Bounds(), index.hashes, ours.get_heads())
    assert [c.hash for c in found if c.hash not in index.hashes] == theirs.get_heads()
    assert expand_chunks(behind.save(), Bounds(), index.hashes, ours.get_heads()) == [], "an older copy: nothing new"
    # Through a guarded DocSync: the peer's whole-document message applies only the new change.
    guarded = DocSync(ours, index=lambda: index)
    message = encode_sync_message(SyncMessage(SYNC_V1, theirs.get_heads(), [], [], [theirs.save()]))
    applied = guarded.receive(message)
    assert [c.hash for c in applied] == theirs.get_heads()
