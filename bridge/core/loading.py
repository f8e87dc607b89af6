"""Loading a document from what a store holds, surviving any single bad record.

Stored rows are checked exactly like a peer's changes before the core loads
them: a row written before a check existed, or damaged on disk, must not
slip in through the back door. So loading is:

1. the base is the newest snapshot that loads to a non-empty document (the
   previous snapshot plus the rows always hold everything, see
   :mod:`bridge.storage`); with no usable snapshot, the rows alone, but only
   if they hold a whole history;
2. every row is parsed and sorted by :func:`bridge.core.validate.plan`
   against the base's :class:`ChangeIndex`: what is refused, and what lacks
   dependencies (a lost row takes its descendants with it), is left out and
   reported;
3. the base plus the rows that passed is loaded in one ``Document.load``,
   and the result must save and load back to the same heads (what a later
   compaction needs; the core accepts some damaged changes it cannot write
   back). Should it fail, the first change that breaks it is found by
   bisection and left out with its descendants, and loading tries again.

What was left out is in :attr:`Loaded.skipped`: the document is *degraded*,
served and reported, and never compacted (its rows may be the only copy of
what was skipped). If nothing usable is left, :class:`Unloadable` is raised:
a document is never served empty in its own place.

The index built on the way is returned, so the loaded document does not walk
its history again on the first incoming change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from automerge import core

from .binding import CoreFailure, call_core
from .chunks import Bounds, Change, ChunkError, split_chunks
from .validate import ChangeIndex, plan


class Unloadable(Exception):
    """No snapshot of the document loads: it cannot be served."""


@dataclass
class Loaded:
    doc: core.Document
    skipped: list[str] = field(default_factory=list)  # what was left out, and why
    index: ChangeIndex | None = None  # of ``doc``, when loading built one


def load_stored(
    snapshots: list[bytes], rows: list[bytes], bounds: Bounds, hashes: list[bytes | None] | None = None
) -> Loaded:
    """``snapshots`` newest first; ``rows`` in append order; ``hashes``, when
    the store keeps them, the hash each row was stored under: a row whose
    bytes are not that change (replaced or damaged on disk) is reported, even
    when nothing depends on the change it lost."""
    if not snapshots and not rows:
        return Loaded(core.Document(), index=ChangeIndex())
    skipped: list[str] = []
    stored_as = hashes or [None] * len(rows)

    def parse(known: ChangeIndex) -> list[Change]:
        """The rows' changes, but for rows the base already holds: the
        snapshot has those, and a damaged copy of them costs nothing."""
        parsed: list[Change] = []
        for number, (row, stored_hash) in enumerate(zip(rows, stored_as)):
            if stored_hash is not None and stored_hash in known.hashes:
                continue
            try:
                changes = [c for c in split_chunks(row, bounds) if isinstance(c, Change)]
            except ChunkError as exc:
                skipped.append(f"change row {number} does not parse: {exc}")
                continue
            if not changes:
                skipped.append(f"change row {number} holds no change")
            elif stored_hash is not None and stored_hash not in {c.hash for c in changes}:
                # Damaged into some other change: never trust it. Worse than
                # useless, it may be a twin of an honest change (same actor
                # and seq) that would crowd the real one out.
                skipped.append(f"change row {number} does not hold the change {stored_hash.hex()} it was stored as")
                continue
            parsed.extend(changes)
        return parsed

    for number, snapshot in enumerate(snapshots):
        # A document chunk carries a checksum the core verifies: a snapshot
        # that loads is the one that was written (and verified) by compaction.
        try:
            base = call_core(core.Document.load, snapshot)
        except CoreFailure as exc:
            skipped.append(f"snapshot {number} does not load: {exc}")
            continue
        if not base.get_heads():
            skipped.append(f"snapshot {number} is empty")
            continue
        if not rows:
            return Loaded(base, skipped)  # the index is built when first needed
        index = ChangeIndex.of(base)
        return _rows_onto(snapshot, base, index, parse(index), skipped)  # type: ignore[return-value]
    # No usable snapshot (or none at all): the rows alone, if they hold a
    # whole history. Rows that lean on a lost snapshot would make a
    # near-empty document, and that is never served in the document's place.
    loaded = _rows_onto(b"", core.Document(), ChangeIndex(), parse(ChangeIndex()), skipped, whole=bool(snapshots))
    if loaded is None:
        raise Unloadable("; ".join(skipped) + "; the change rows alone do not hold the whole document")
    return loaded


def _sound(snapshot: bytes, changes: list[Change]) -> core.Document | None:
    """The document these records load to, if it also saves and loads back
    to the same heads (what compaction will need); else None."""
    data = snapshot + b"".join(c.chunk for c in changes)
    try:
        doc = call_core(core.Document.load, data) if data else core.Document()
        heads = doc.get_heads()
        if call_core(core.Document.load, call_core(doc.save)).get_heads() == heads:
            return doc
    except CoreFailure:
        pass
    return None


def _rows_onto(
    snapshot: bytes,
    base: core.Document,
    index: ChangeIndex,
    parsed: list[Change],
    skipped: list[str],
    whole: bool = False,
) -> Loaded | None:
    """``index`` is the base's. ``whole``: return None unless every row's
    dependencies are there."""
    planned = plan(index, parsed)
    if whole and (planned.waiting or not planned.apply):
        return None
    skipped += [f"change {c.hash.hex()}: {reason}" for c, reason in planned.rejected]
    skipped += [f"change {c.hash.hex()}: dependencies missing" for c in planned.waiting]
    good = planned.apply
    doc = _sound(snapshot, good) if good else base
    while doc is None:
        # The core fails on something the checks did not catch: find the
        # first change that breaks the document (the base alone is sound),
        # leave it and what depends on it out, and try again.
        lo, hi = 0, len(good)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _sound(snapshot, good[:mid]) is not None else (lo, mid)
        bad, prefix = good[hi - 1], good[: hi - 1]
        skipped.append(f"change {bad.hash.hex()}: the core cannot load it back")
        view = index.copy()
        for change in prefix:
            view.add(change.hash, change.actor, change.seq, change.max_op, change.ops)
        rest = plan(view, good[hi:], refused={bad.hash})
        skipped += [f"change {c.hash.hex()}: {reason}" for c, reason in rest.rejected]
        good = prefix + rest.apply
        doc = _sound(snapshot, good)
    for change in good:
        index.add(change.hash, change.actor, change.seq, change.max_op, change.ops)
    return Loaded(doc, skipped, index)
