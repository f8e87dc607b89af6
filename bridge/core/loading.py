"""Loading a document from what a store holds, surviving any single bad record.

The fast path loads the newest snapshot followed by every change row in one
``Document.load``. When that fails (a truncated snapshot, a garbage row, a
row the core chokes on), the slow path takes the records one at a time:

1. the newest snapshot that loads is the base (the previous snapshot plus
   the rows always hold everything, see :mod:`bridge.storage`);
2. every row is parsed and checked like a peer's change
   (:mod:`bridge.core.validate`) against what the base holds;
3. what passed is loaded on top; should the core still fail, rows are added
   one by one and the one that fails is left out.

What was left out is reported in :attr:`Loaded.skipped`, so the document can
be marked degraded (never compacted over, since its rows are the only copy
of what was skipped). If no snapshot loads at all, the document is
unavailable: :class:`Unloadable` is raised, and nothing is ever served as an
empty document in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from automerge import core

from .binding import CoreFailure, apply_chunks, call_core
from .chunks import Bounds, Change, ChunkError, split_chunks
from .validate import ChangeIndex, plan


class Unloadable(Exception):
    """No snapshot of the document loads: it cannot be served."""


@dataclass
class Loaded:
    doc: core.Document
    skipped: list[str] = field(default_factory=list)  # what was left out, and why


def load_stored(snapshots: list[bytes], rows: list[bytes], bounds: Bounds) -> Loaded:
    """``snapshots`` newest first; ``rows`` in append order."""
    if not snapshots and not rows:
        return Loaded(core.Document())
    try:
        return Loaded(call_core(core.Document.load, (snapshots[0] if snapshots else b"") + b"".join(rows)))
    except CoreFailure:
        pass
    skipped: list[str] = []
    for number, snapshot in enumerate(snapshots):
        try:
            base = call_core(core.Document.load, snapshot)
        except CoreFailure as exc:
            skipped.append(f"snapshot {number} does not load: {exc}")
            continue
        return _rows_onto(snapshot, base, rows, bounds, skipped)  # type: ignore[return-value]
    # No snapshot loads (or there is none): the rows alone, but only if they
    # hold a whole history. Rows that lean on a lost snapshot would make a
    # near-empty document, and that is never served in the document's place.
    loaded = _rows_onto(b"", core.Document(), rows, bounds, skipped, whole=bool(snapshots))
    if loaded is None:
        raise Unloadable("; ".join(skipped) + "; the change rows alone do not hold the whole document")
    return loaded


def _rows_onto(
    snapshot: bytes, base: core.Document, rows: list[bytes], bounds: Bounds, skipped: list[str], whole: bool = False
) -> Loaded | None:
    """``whole``: return None unless every row's dependencies are there."""
    parsed: list[Change] = []
    for number, row in enumerate(rows):
        try:
            parsed.extend(c for c in split_chunks(row, bounds) if isinstance(c, Change))
        except ChunkError as exc:
            skipped.append(f"change row {number} does not parse: {exc}")
    planned = plan(ChangeIndex.of(base), parsed)
    if whole and (planned.waiting or not planned.apply):
        return None
    skipped += [f"change {c.hash.hex()}: {reason}" for c, reason in planned.rejected]
    skipped += [f"change {c.hash.hex()}: dependencies missing" for c in planned.waiting]
    good = [c.chunk for c in planned.apply]
    try:
        return Loaded(call_core(core.Document.load, snapshot + b"".join(good)), skipped)
    except CoreFailure:
        pass
    # The core fails on something the checks did not catch: find it.
    doc, kept = base, []
    for chunk in good:
        try:
            apply_chunks(doc, [chunk])
            kept.append(chunk)
        except CoreFailure as exc:
            skipped.append(f"change {split_chunks(chunk, bounds)[0].hash.hex()}: the core fails on it: {exc}")  # type: ignore[union-attr]
            doc = call_core(core.Document.load, snapshot + b"".join(kept)) if snapshot or kept else core.Document()
    return Loaded(doc, skipped)
