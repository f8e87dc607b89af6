"""Which incoming changes the shared document may see (integrity rule 1).

The core panics on a change whose ``seq`` skips for its actor, writes
snapshots that do not load after a change with an extreme timestamp, and
trusts ``start_op`` and actor ids. So every change is checked here against
what the document already holds, *before* the core sees it:

- well formed and within :class:`~bridge.core.chunks.Bounds` (parsed by
  :mod:`bridge.core.chunks`: sizes, op counts, decompressed bytes);
- its dependencies are all in the document (or earlier in the same batch);
  otherwise it waits in the peer's bounded queue until they arrive, so the
  core only ever applies changes whose whole context it has;
- ``seq`` is exactly one more than the actor's last change in the document;
- ``start_op`` is above the highest op of every dependency and at most one
  above the document's highest op: an honest change starts right after the
  ops it has seen; and its dependencies reach at least as far as its actor's
  previous change (ops only grow along dependencies, so a change that drops
  its dependencies shows up here);
- the timestamp is one every implementation can represent (Python's
  ``datetime`` range, well inside ``i64`` so the core's delta columns cannot
  overflow);
- the document stays within its op bound (``max_doc_ops``): a change that
  would take it past is refused as *full* (error ``quota``), not as bad.

:class:`ChangeIndex` is what this needs to know about a document: its change
hashes, each actor's last ``seq`` and op, and the highest op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from automerge import core

from .chunks import Change

# Milliseconds from year 1 to year 9999: what Python's datetime (the binding's
# Change.timestamp) can hold, and far from i64 overflow in delta encoding.
MIN_TIME = -62_135_596_800_000
MAX_TIME = 253_402_300_799_999
MAX_OP = 1 << 53  # ops are JS numbers in @automerge/automerge


class ChangeIndex:
    """Hashes, per-actor progress, the highest op and the size (ops in all)
    of one document."""

    def __init__(self) -> None:
        self.hashes: dict[bytes, int] = {}  # hash -> the change's highest op
        self.actors: dict[bytes, tuple[int, int]] = {}  # actor -> (seq, max_op)
        self.max_op = 0
        # Ops in every change: what loading, saving and materialising cost
        # grows with (concurrent changes share op counters, so max_op is less).
        self.ops = 0

    @classmethod
    def of(cls, doc: core.Document) -> "ChangeIndex":
        index = cls()
        index.add_changes(doc.get_changes([]))
        return index

    def add(self, change_hash: bytes, actor: bytes, seq: int, max_op: int, ops: int) -> None:
        if change_hash in self.hashes:
            return
        self.hashes[change_hash] = max_op
        last_seq, last_op = self.actors.get(actor, (0, 0))
        self.actors[actor] = (max(seq, last_seq), max(max_op, last_op))
        self.max_op = max(self.max_op, max_op)
        self.ops += ops

    def add_changes(self, changes: Iterable[core.Change]) -> None:
        for change in changes:
            self.add(change.hash, change.actor_id, change.seq, change.max_op, change.max_op - change.start_op + 1)

    def copy(self) -> "ChangeIndex":
        other = ChangeIndex()
        other.hashes, other.actors = dict(self.hashes), dict(self.actors)
        other.max_op, other.ops = self.max_op, self.ops
        return other

    def contains_all(self, hashes: Iterable[bytes]) -> bool:
        return all(h in self.hashes for h in hashes)


class _View:
    """The index plus the changes planned so far in this batch."""

    def __init__(self, index: ChangeIndex) -> None:
        self.index = index
        self.hashes: dict[bytes, int] = {}
        self.actors: dict[bytes, tuple[int, int]] = {}
        self.max_op = index.max_op
        self.ops = index.ops

    def has(self, change_hash: bytes) -> bool:
        return change_hash in self.hashes or change_hash in self.index.hashes

    def max_op_of(self, change_hash: bytes) -> int:
        found = self.hashes.get(change_hash)
        return self.index.hashes[change_hash] if found is None else found

    def actor(self, actor: bytes) -> tuple[int, int]:
        return self.actors.get(actor) or self.index.actors.get(actor, (0, 0))

    def add(self, change: Change) -> None:
        self.hashes[change.hash] = change.max_op
        self.actors[change.actor] = (change.seq, change.max_op)
        self.max_op = max(self.max_op, change.max_op)
        self.ops += change.ops


DOC_FULL = "the document is full"


def problem(change: Change, view: _View) -> str | None:
    """Why ``change`` (whose deps are all present) may not be applied, if it may not."""
    last_seq, last_op = view.actor(change.actor)
    if change.seq != last_seq + 1:
        return f"seq {change.seq} for an actor whose last change is seq {last_seq}"
    if not MIN_TIME <= change.time <= MAX_TIME:
        return f"timestamp {change.time} out of range"
    if change.start_op <= last_op:
        return f"start_op {change.start_op} reuses ops of its actor (up to {last_op})"
    deps_op = max((view.max_op_of(dep) for dep in change.deps), default=0)
    if change.start_op <= deps_op:
        return f"start_op {change.start_op} is not above its dependencies' ops (up to {deps_op})"
    if deps_op < last_op:
        # An honest change has its actor's previous change among its
        # ancestors, and ops only grow along dependencies.
        return "its dependencies do not include its actor's previous change"
    if change.start_op > view.max_op + 1:
        return f"start_op {change.start_op} skips past the document's ops (up to {view.max_op})"
    if change.max_op >= MAX_OP:
        return "op counter out of range"
    if change.actor in change.other_actors or len(set(change.other_actors)) != len(change.other_actors):
        return "repeated actor ids"
    return None


@dataclass
class Plan:
    apply: list[Change] = field(default_factory=list)  # in an order the core can apply
    rejected: list[tuple[Change, str]] = field(default_factory=list)
    waiting: list[Change] = field(default_factory=list)  # deps still missing
    # Something was refused only because the document would pass max_doc_ops
    # (the peer did nothing wrong: the answer is `quota`, not `bad_sync`).
    full: bool = False


def plan(
    index: ChangeIndex,
    incoming: Iterable[Change],
    waiting: Iterable[Change] = (),
    refused: set[bytes] | None = None,
    max_doc_ops: int | None = None,
) -> Plan:
    """Sort ``incoming`` (plus changes still ``waiting`` from earlier) into
    what may be applied now, what is refused, and what still waits.
    ``refused``: hashes already refused, whose descendants are refused too.
    ``max_doc_ops``: the document's size bound (None: unbounded, as when a
    stored document is loaded: what was accepted once stays loadable)."""
    view = _View(index)
    result = Plan()
    refused = set(refused or ())
    pending: dict[bytes, Change] = {}
    for change in (*waiting, *incoming):
        if not view.has(change.hash):
            pending.setdefault(change.hash, change)
    progress = True
    while pending and progress:
        progress = False
        for change_hash, change in list(pending.items()):
            if any(dep in refused for dep in change.deps):
                reason: str | None = "depends on a refused change"
            elif all(view.has(dep) for dep in change.deps):
                reason = None if view.has(change_hash) else problem(change, view)
                if reason is None and max_doc_ops is not None and view.ops + change.ops > max_doc_ops:
                    reason = f"{DOC_FULL}: {view.ops} ops, and this change would take it past {max_doc_ops}"
                    result.full = True
            else:
                continue
            del pending[change_hash]
            progress = True
            if reason is not None:
                refused.add(change_hash)
                result.rejected.append((change, reason))
            elif not view.has(change_hash):
                view.add(change)
                result.apply.append(change)
    result.waiting = list(pending.values())
    return result
