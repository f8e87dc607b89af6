"""Documents in memory and who is subscribed to them.

The hub is the only owner of loaded ``automerge.core.Document`` objects. It
loads each document once however many peers open it at the same moment,
hands every accepted change to group commit, tells subscribers when a
document changed (they generate their own sync messages) and when its durable
heads advanced, and unloads documents nobody has used for a while.

Everything here runs on one event loop; Automerge calls are synchronous, so a
document never changes between two statements without an ``await``.
"""

from __future__ import annotations

import logging
from typing import Iterable, Protocol

import anyio
from automerge import core

from .session import HashIndex
from .storage import AppendChanges, Compact, Store
from .storage.batcher import GroupCommit

log = logging.getLogger(__name__)


class DocNotFound(LookupError):
    pass


class Subscriber(Protocol):
    """Anything that follows a document: a WebSocket peer or an in-process handle."""

    peer: str

    def doc_changed(self, doc_id: str) -> None:
        """The document gained changes; generate sync messages when convenient."""

    def doc_saved(self, doc_id: str, heads: list[bytes], own: bool) -> None:
        """The document's durable heads advanced; ``own`` when changes this
        subscriber sent are among the ones that just became durable."""

    def ephemeral(self, doc_id: str, sender: str, data: bytes) -> None: ...


class LiveDoc:
    """One loaded document, its subscribers and what of it is durable."""

    def __init__(self, doc_id: str, doc: core.Document, stored_changes: int) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.subscribers: set[Subscriber] = set()
        self.durable_heads: list[bytes] = doc.get_heads()
        self.changes_since_snapshot = stored_changes
        # Hashes accepted but not yet committed, in acceptance order.
        self._unsaved: dict[bytes, None] = {}
        # Hashes committed since load: answers most flushes without the
        # index, whose first build walks the whole history on the loop.
        self._committed_since_load: set[bytes] = set()
        self._index = HashIndex(doc)
        self._durable_advanced = anyio.Event()
        self._unload_scope: anyio.CancelScope | None = None

    @property
    def has_unsaved(self) -> bool:
        return bool(self._unsaved)

    def _accepted(self, hashes: list[bytes]) -> None:
        self._unsaved.update(dict.fromkeys(hashes))

    def _committed(self, hashes: list[bytes], heads: list[bytes]) -> None:
        for change_hash in hashes:
            self._unsaved.pop(change_hash, None)
        self._committed_since_load.update(hashes)
        self.durable_heads = heads
        self._durable_advanced.set()
        self._durable_advanced = anyio.Event()

    def is_durable(self, heads: Iterable[bytes]) -> bool:
        """True when every hash in ``heads`` is in the document and committed."""
        pending = [h for h in heads if h not in self.durable_heads]
        if not pending:
            return True
        if any(h in self._unsaved for h in pending):
            return False
        pending = [h for h in pending if h not in self._committed_since_load]
        return not pending or self._index.contains_all(pending)

    async def wait_durable(self, heads: list[bytes]) -> None:
        """Return once every hash in ``heads`` is durable (callers bound the wait)."""
        while not self.is_durable(heads):
            await self._durable_advanced.wait()


class Hub:
    def __init__(
        self,
        store: Store,
        *,
        idle_unload_after: float = 30.0,
        compact_after: int = 1000,
        create_on_open: bool = True,
    ) -> None:
        self.store = store
        self.idle_unload_after = idle_unload_after
        self.compact_after = compact_after
        self.create_on_open = create_on_open
        self.writer = GroupCommit(store)
        self._docs: dict[str, LiveDoc] = {}
        self._loading: dict[str, anyio.Event] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    # --- lifecycle ----------------------------------------------------------

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's background tasks until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.writer.run)
            task_status.started()
            await anyio.sleep_forever()

    async def drain(self) -> None:
        """Make everything accepted so far durable (used at shutdown)."""
        await self.writer.drain()

    @property
    def loaded(self) -> dict[str, LiveDoc]:
        return self._docs

    # --- loading and subscribing -------------------------------------------

    async def subscribe(self, doc_id: str, subscriber: Subscriber, *, create: bool | None = None) -> LiveDoc:
        live = await self._get(doc_id, self.create_on_open if create is None else create)
        live.subscribers.add(subscriber)
        if live._unload_scope is not None:
            live._unload_scope.cancel()
            live._unload_scope = None
        return live

    def unsubscribe(self, doc_id: str, subscriber: Subscriber) -> None:
        live = self._docs.get(doc_id)
        if live is None:
            return
        live.subscribers.discard(subscriber)
        if not live.subscribers:
            self._schedule_unload(live)

    async def _get(self, doc_id: str, create: bool) -> LiveDoc:
        while True:
            if doc_id in self._docs:
                return self._docs[doc_id]
            if doc_id not in self._loading:
                break
            await self._loading[doc_id].wait()
        loaded = self._loading[doc_id] = anyio.Event()
        try:
            stored = await self.store.load(doc_id)
            if stored is None:
                if not create:
                    raise DocNotFound(doc_id)
                live = LiveDoc(doc_id, core.Document(), 0)
            else:
                doc = await anyio.to_thread.run_sync(core.Document.load, stored.as_bytes())
                live = LiveDoc(doc_id, doc, len(stored.changes))
            self._docs[doc_id] = live
            return live
        finally:
            del self._loading[doc_id]
            loaded.set()

    def _schedule_unload(self, live: LiveDoc) -> None:
        if self._tg is None or live._unload_scope is not None:
            return
        live._unload_scope = anyio.CancelScope()
        self._tg.start_soon(self._unload_when_idle, live, live._unload_scope)

    async def _unload_when_idle(self, live: LiveDoc, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(self.idle_unload_after)
            if live.changes_since_snapshot:
                self._compact(live)
            while live.has_unsaved:
                await live._durable_advanced.wait()
            # Nothing awaits past this point: a subscriber arriving during the
            # waits above cancelled this scope, so the document is idle now.
            del self._docs[live.doc_id]
            log.debug("unloaded %s", live.doc_id)

    # --- changes ------------------------------------------------------------

    def accept(self, live: LiveDoc, changes: list[core.Change], origin: Subscriber | None = None) -> None:
        """Persist and relay changes that were just applied to ``live.doc``.

        ``origin`` is told too: its sync state may need an answer from us.
        """
        if not changes:
            return
        hashes = [change.hash for change in changes]
        heads = live.doc.get_heads()
        live._accepted(hashes)
        self.writer.submit(
            AppendChanges(live.doc_id, [(c.hash, c.bytes) for c in changes]),
            lambda: self._on_durable(live, hashes, heads, origin),
        )
        live.changes_since_snapshot += len(changes)
        if live.changes_since_snapshot >= self.compact_after:
            self._compact(live)
        for subscriber in list(live.subscribers):
            subscriber.doc_changed(live.doc_id)

    def _compact(self, live: LiveDoc) -> None:
        heads = live.doc.get_heads()
        live.changes_since_snapshot = 0
        self.writer.submit(Compact(live.doc_id, live.doc.save()), lambda: self._on_durable(live, [], heads, None))

    def _on_durable(self, live: LiveDoc, hashes: list[bytes], heads: list[bytes], origin: Subscriber | None) -> None:
        live._committed(hashes, heads)
        for subscriber in list(live.subscribers):
            subscriber.doc_saved(live.doc_id, heads, subscriber is origin)

    def change_locally(self, live: LiveDoc, heads_before: list[bytes], origin: Subscriber | None) -> list[bytes]:
        """Accept whatever was applied to the document since ``heads_before``."""
        if live.doc.get_heads() != heads_before:
            self.accept(live, live.doc.get_changes(heads_before), origin)
        return live.doc.get_heads()

    def merge_bytes(self, live: LiveDoc, data: bytes) -> list[bytes]:
        """Merge a saved document or change chunks; return the heads it carried.

        Raises ``ValueError`` when ``data`` is not Automerge data.
        """
        try:
            incoming = core.Document.load(data)
        except Exception:
            # Change chunks whose dependencies we already have: load them on
            # top of our own state. Slower, and only for this fallback.
            try:
                incoming = core.Document.load(live.doc.save() + data)
            except Exception as exc:
                raise ValueError(f"not Automerge data: {exc}") from None
        before = live.doc.get_heads()
        live.doc.merge(incoming)
        self.change_locally(live, before, None)
        return incoming.get_heads()

    def relay_ephemeral(self, live: LiveDoc, sender: Subscriber, data: bytes) -> None:
        for subscriber in list(live.subscribers):
            if subscriber is not sender:
                subscriber.ephemeral(live.doc_id, sender.peer, data)
