"""How much of a document's store sequence a bridge has seen (sans-IO).

A shared store numbers each document's change rows 1, 2, 3... in commit
order (:class:`~bridge.storage.Committed`). Every commit, this bridge's or
another's, covers a range ``(prev, seq]``; this bridge learns of its own from
the store and of the others' from the bus, in any order, and some never (the
bus may drop them). ``seen`` is the watermark below which nothing is missing;
ranges past it wait in ``ahead`` until the gap before them closes. While
there is a gap, or when the store says it is further along than ``seen``,
the bridge reads what it lacks from the store (:meth:`ClusterNode.heal`).
"""

from __future__ import annotations


class SeqTracker:
    __slots__ = ("seen", "_ahead", "gap_since")

    def __init__(self, seen: int = 0) -> None:
        self.seen = seen
        self._ahead: dict[int, int] = {}  # prev -> seq of ranges past the watermark
        self.gap_since: float | None = None  # when the oldest open gap was noticed

    def note(self, prev: int, seq: int, now: float) -> bool:
        """A commit covered ``(prev, seq]``. True if it holds rows not seen yet."""
        if seq <= self.seen:
            return False
        if prev <= self.seen:
            self.seen = seq
            self._advance()
        else:
            self._ahead[prev] = max(seq, self._ahead.get(prev, 0))
            if self.gap_since is None:
                self.gap_since = now
        return True

    def pending(self) -> set[int]:
        """The ranges waiting past the watermark (by their start)."""
        return set(self._ahead)

    def healed(self, seq: int, noted_before: set[int] = frozenset()) -> None:
        """Everything up to ``seq`` was read from the store. Ranges in
        ``noted_before`` (:meth:`pending` before the read) that still reach
        past ``seq`` were never committed: messages are published after the
        commit, so the read would have seen their rows. A corrupt or forged
        message, then: forgotten, or the gap would never close."""
        self.seen = max(self.seen, seq)
        for prev in noted_before:
            if self._ahead.get(prev, 0) > seq:
                del self._ahead[prev]
        self._advance()

    @property
    def has_gap(self) -> bool:
        return bool(self._ahead)

    def _advance(self) -> None:
        # Ranges that now touch the watermark extend it; those wholly below it go.
        while True:
            for prev in [p for p in self._ahead if p <= self.seen]:
                self.seen = max(self.seen, self._ahead.pop(prev))
                break
            else:
                break
        if not self._ahead:
            self.gap_since = None
