"""Application hooks: what was committed, for the app around the bridge.

``hub.committed()`` is an async iterator of :class:`Commit` events, one per
commit this bridge made, emitted once the changes are durable::

    async with hub.committed() as commits:
        async for commit in commits:
            index(commit.doc_id, commit.heads)

Semantics, exactly:

- An event means the document's durable heads are ``heads`` (hashes) and the
  changes just committed came from ``origin``: the authenticated identity of
  the WebSocket peer that sent them (its peer name when auth is off),
  ``"http:<identity>"`` for ``POST /docs/{id}/changes``, the ``peer`` an
  in-process handle was opened with (``open_local``), or ``None``.
- A bridge reports its own commits. In a cluster every commit is reported
  once, by the bridge that made it; changes it merely merged from another
  bridge (docs/cluster.md) are not reported again.
- Consumers never slow the bridge. Each subscription buffers at most one
  pending event per document: a newer commit of a document replaces the
  pending one (its heads include the older ones; ``coalesced`` counts how
  many were folded in, and ``origin`` is then the latest). A consumer that
  falls behind by more than ``max_docs`` documents gets one :class:`Missed`
  marker instead of the events that did not fit: rescan what you index
  (e.g. the admin listing) and carry on.
- ``doc_ids``: only these documents. Subscriptions end with their ``async
  with`` block, with :meth:`CommitSubscription.close`, or when nothing
  references them any more.

The webhook (:mod:`bridge.webhook`) is one such consumer.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import AsyncIterator, Iterable

import anyio


@dataclass(frozen=True)
class Commit:
    doc_id: str
    heads: list[bytes]  # the document's durable heads after this commit
    origin: str | None  # whose changes these were (see the module's docstring)
    at: float  # wall-clock time of the commit (time.time())
    coalesced: int = 1  # commits of this document this event stands for

    @property
    def heads_hex(self) -> list[str]:
        return [h.hex() for h in self.heads]


@dataclass(frozen=True)
class Missed:
    """The subscriber fell behind: ``dropped`` events did not fit its buffer."""

    dropped: int


class CommitSubscription:
    """One consumer's bounded view of the commits (see the module's docstring)."""

    def __init__(self, feed: CommitFeed, doc_ids: Iterable[str] | None, max_docs: int) -> None:
        self._feed = feed
        self._doc_ids = frozenset(doc_ids) if doc_ids is not None else None
        self.max_docs = max(1, max_docs)
        self._pending: OrderedDict[str, Commit] = OrderedDict()
        self._missed = 0
        self._ready = anyio.Event()
        self._closed = False

    def offer(self, commit: Commit) -> None:
        """Called by the feed, synchronously: never waits, never grows past the bound."""
        if self._closed or (self._doc_ids is not None and commit.doc_id not in self._doc_ids):
            return
        earlier = self._pending.pop(commit.doc_id, None)
        if earlier is not None:
            commit = replace(commit, coalesced=earlier.coalesced + commit.coalesced)
        elif len(self._pending) >= self.max_docs:
            self._missed += commit.coalesced
            self._ready.set()
            return
        self._pending[commit.doc_id] = commit
        self._ready.set()

    async def next(self) -> Commit | Missed:
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                return Missed(missed)
            if self._pending:
                return self._pending.popitem(last=False)[1]
            if self._closed:
                raise StopAsyncIteration
            self._ready = anyio.Event()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[Commit | Missed]:
        return self

    async def __anext__(self) -> Commit | Missed:
        return await self.next()

    def close(self) -> None:
        """Stop receiving; an iteration in progress ends once the buffer is empty."""
        self._closed = True
        self._feed.unsubscribe(self)
        self._ready.set()

    async def __aenter__(self) -> CommitSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class CommitFeed:
    """The hub's side: :meth:`publish` after each commit, to every subscription."""

    def __init__(self) -> None:
        # Weak: a subscription nobody holds any more stops costing anything.
        self._subscriptions: weakref.WeakSet[CommitSubscription] = weakref.WeakSet()

    def subscribe(self, doc_ids: Iterable[str] | None = None, max_docs: int = 10_000) -> CommitSubscription:
        subscription = CommitSubscription(self, doc_ids, max_docs)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: CommitSubscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, doc_id: str, heads: list[bytes], origin: str | None) -> None:
        if not self._subscriptions:
            return  # the common case: nobody listens, nothing is built
        commit = Commit(doc_id, list(heads), origin, time.time())
        for subscription in list(self._subscriptions):
            subscription.offer(commit)


def origin_of(subscriber: object | None) -> str | None:
    """Who a subscriber's changes come from: a peer session's authenticated
    identity, else the name it goes by (``peer``)."""
    if subscriber is None:
        return None
    principal = getattr(subscriber, "principal", None)
    identity = getattr(principal, "identity", None)
    return identity or getattr(subscriber, "peer", None)
