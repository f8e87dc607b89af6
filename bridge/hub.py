"""Documents in memory and who is subscribed to them.

The hub is the only owner of loaded ``automerge.core.Document`` objects. It
loads each document once however many peers open it at the same moment,
hands every accepted change to group commit, tells subscribers when a
document changed (they generate their own sync messages) and when its durable
heads advanced, and unloads documents nobody has used for a while.

It also keeps the integrity promises that concern a whole document:

- every change that reaches a document was checked first
  (:class:`~bridge.core.sync.DocSync` guarded by the document's
  :class:`~bridge.core.validate.ChangeIndex`; HTTP goes through
  :meth:`Hub.merge_bytes`, the same checks);
- if the core fails anyway while applying something, the in-memory copy is
  dropped and reloaded from the store plus what was accepted but is not yet
  committed, and every peer resyncs (:meth:`Hub.recover`);
- a snapshot replaces nothing until it has been loaded back with the same
  heads, and it retires only the rows it covers;
- a document loaded with records left out is *degraded*: served, reported,
  never compacted; one that cannot be loaded at all is reported and refused,
  never replaced by an empty one;
- background work (compaction, unloading) is contained per document: a
  failure is logged and reported in :meth:`Hub.health`, never fatal.

Everything here runs on one event loop; Automerge calls are synchronous, so a
document never changes between two statements without an ``await``.
"""

from __future__ import annotations

import logging

from .logs import doc_extra, get_logger
import time
from typing import Iterable, Protocol

import anyio
from automerge import core

from .core.binding import CoreFailure, apply_chunks, call_core, expand_chunks
from .core.chunks import Bounds, ChunkError
from .core.loading import Unloadable, load_stored
from .core.validate import ChangeIndex, plan
from .core.sync import DocSync
from .core.ratelimit import KeyedBuckets
from .errors import ErrorCode, QuotaExceeded
from .hooks import CommitFeed, CommitSubscription, origin_of
from .metrics import Metrics, uncounted
from .storage import AppendChanges, Committed, Compact, DeleteDoc, Store, StoredDoc
from .storage.batcher import GroupCommit

log = get_logger(__name__)


class DocNotFound(LookupError):
    pass


class DocUnavailable(Exception):
    """The document's stored state cannot be loaded (see the log and health)."""


class Subscriber(Protocol):
    """Anything that follows a document: a WebSocket peer or an in-process handle."""

    peer: str

    def doc_changed(self, doc_id: str, origin: "Subscriber | None") -> None:
        """The document gained changes; generate sync messages when convenient.

        ``origin`` is the subscriber whose changes these are (None: the HTTP
        routes or a reload): a peer still answers its own sync messages, an
        in-process handle does not wake itself up."""

    def doc_saved(self, doc_id: str, heads: list[bytes], own: bool) -> None:
        """The document's durable heads advanced; ``own`` when changes this
        subscriber sent are among the ones that just became durable."""

    def doc_reloaded(self, doc_id: str) -> None:
        """The in-memory copy was replaced (after a core failure): start over
        against ``live.doc``."""

    def doc_deleted(self, doc_id: str) -> None:
        """An operator deleted the document: it is gone from the hub (this
        subscriber is unsubscribed already) and from the store."""

    def ephemeral(self, doc_id: str, sender: str, data: bytes, source: object = None) -> None:
        """Presence from another subscriber: ``sender`` is its authenticated
        identity (what the frame says it is ``from``); ``source`` tells its
        connections apart (two tabs of one user are two sources)."""


class Replicator(Protocol):
    """What the hub tells the other bridges sharing its store (the cluster
    layer, :class:`bridge.cluster.node.ClusterNode`); :class:`Standalone`
    when there are none."""

    def loaded(self, live: "LiveDoc") -> None: ...

    async def catch_up(self, live: "LiveDoc") -> None:
        """A peer opens ``live``, loaded earlier: bring it up to what the
        store holds first, so that what was acknowledged anywhere before the
        open is in what the peer is sent."""

    def unloaded(self, live: "LiveDoc") -> None: ...

    def committed(self, live: "LiveDoc", result: Committed, changes: list[tuple[bytes, bytes]]) -> None:
        """Changes this bridge accepted are committed (``result``: their place
        in the store's sequence)."""

    def stale(self, live: "LiveDoc") -> None:
        """A compaction was skipped: another bridge wrote a newer snapshot."""

    def ephemeral(self, live: "LiveDoc", identity: str, data: bytes, source: object) -> None: ...


class Standalone:
    """The only bridge on its store: nobody to tell."""

    def loaded(self, live: "LiveDoc") -> None:
        pass

    async def catch_up(self, live: "LiveDoc") -> None:
        pass

    def unloaded(self, live: "LiveDoc") -> None:
        pass

    def committed(self, live: "LiveDoc", result: Committed, changes: list[tuple[bytes, bytes]]) -> None:
        pass

    def stale(self, live: "LiveDoc") -> None:
        pass

    def ephemeral(self, live: "LiveDoc", identity: str, data: bytes, source: object) -> None:
        pass


class LiveDoc:
    """One loaded document, its subscribers and what of it is durable."""

    def __init__(
        self,
        doc_id: str,
        doc: core.Document,
        stored_rows: Iterable[bytes] = (),
        skipped: list[str] | None = None,
        index: ChangeIndex | None = None,
        store_gen: int = 0,
        store_seq: int = 0,
    ) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.subscribers: set[Subscriber] = set()
        self.durable_heads: list[bytes] = doc.get_heads()
        # Hashes of change rows in the store that the next snapshot may retire.
        self.stored_rows: set[bytes] = set(stored_rows)
        self.changes_since_snapshot = len(self.stored_rows)
        # The newest stored snapshot this copy is known to contain (its
        # generation; 0: none): compaction names it (Compact.base_gen).
        self.store_gen = store_gen
        # The store's sequence for this document when it was read (shared
        # stores): the cluster layer follows it from there.
        self.store_seq = store_seq
        # Records the load had to leave out: the document is degraded and its
        # stored rows are never compacted away (they may be the only copy).
        self.skipped = skipped or []
        self.compaction_problem: str | None = None
        # Changes accepted but not yet committed (hash -> chunk), in order:
        # a reload after a core failure puts them back.
        self._unsaved: dict[bytes, bytes] = {}
        # Hashes committed since load: answers most flushes without the index.
        self._committed_since_load: set[bytes] = set()
        self._index: ChangeIndex | None = index
        self._durable_advanced = anyio.Event()
        self.unload_scope: anyio.CancelScope | None = None  # set while an unload is pending
        self.compacting = False
        self.recovering: anyio.Event | None = None
        self.deleted = False  # evicted by Hub.delete: nothing more of it may be written

    @property
    def index(self) -> ChangeIndex:
        """Built on first use (it walks the whole history), then kept current."""
        if self._index is None:
            self._index = ChangeIndex.of(self.doc)
        return self._index

    def replace(self, doc: core.Document, index: ChangeIndex | None = None) -> None:
        self.doc = doc
        self._index = index

    def guarded_sync(self, bounds: Bounds) -> DocSync:
        """A sync state for one more peer, checking its changes against this document."""
        return DocSync(self.doc, index=lambda: self.index, bounds=bounds)

    @property
    def has_unsaved(self) -> bool:
        return bool(self._unsaved)

    @property
    def degraded(self) -> bool:
        return bool(self.skipped)

    def is_durable(self, heads: Iterable[bytes]) -> bool:
        """True when every hash in ``heads`` is in the document and committed."""
        pending = [h for h in heads if h not in self.durable_heads]
        if not pending:
            return True
        if any(h in self._unsaved for h in pending):
            return False
        pending = [h for h in pending if h not in self._committed_since_load]
        return not pending or self.index.contains_all(pending)

    async def wait_durable(self, heads: list[bytes]) -> None:
        """Return once every hash in ``heads`` is durable (callers bound the wait)."""
        while not self.is_durable(heads):
            await self._durable_advanced.wait()

    async def wait_all_saved(self) -> None:
        """Return once nothing accepted is waiting for its commit."""
        while self._unsaved:
            await self._durable_advanced.wait()

    # Hub-side bookkeeping (called by Hub only).

    def note_accepted(self, changes: list[core.Change]) -> None:
        for change in changes:
            self._unsaved[change.hash] = change.bytes
        if self._index is not None:
            self._index.add_changes(changes)
        self.stored_rows.update(change.hash for change in changes)
        self.changes_since_snapshot += len(changes)

    def note_committed(self, hashes: list[bytes], heads: list[bytes]) -> None:
        for change_hash in hashes:
            self._unsaved.pop(change_hash, None)
        self._committed_since_load.update(hashes)
        self.durable_heads = heads
        self._durable_advanced.set()
        self._durable_advanced = anyio.Event()

    def note_committed_elsewhere(self, changes: list[core.Change]) -> None:
        """Changes another bridge committed to the shared store: durable
        already, and rows that this bridge's next snapshot may retire."""
        if self._index is not None:
            self._index.add_changes(changes)
        hashes = [change.hash for change in changes]
        self.stored_rows.update(hashes)
        self.changes_since_snapshot += len(changes)
        self._committed_since_load.update(hashes)
        if not self._unsaved:
            self.durable_heads = self.doc.get_heads()
        self._durable_advanced.set()
        self._durable_advanced = anyio.Event()

    def unsaved_rows(self) -> list[tuple[bytes, bytes]]:
        return list(self._unsaved.items())


class Hub:
    def __init__(
        self,
        store: Store,
        *,
        idle_unload_after: float = 30.0,
        compact_after: int = 1000,
        create_on_open: bool = True,
        bounds: Bounds | None = None,
        docs_created_per_hour: int | None = None,
        replicator: Replicator | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or uncounted()
        self.replicator: Replicator = replicator or Standalone()
        self.idle_unload_after = idle_unload_after
        self.compact_after = compact_after
        self.create_on_open = create_on_open
        self.bounds = bounds or Bounds()
        self.writer = GroupCommit(store, metrics=self.metrics)
        self.commits = CommitFeed()  # application hooks: committed() and the webhook
        self._docs: dict[str, LiveDoc] = {}
        self._loading: dict[str, anyio.Event] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        # Documents whose stored state does not load: id -> why (for health).
        self.unavailable: dict[str, str] = {}
        self.recoveries = 0
        # Documents each client may create: a bucket per creator that holds
        # an hour's allowance and refills over the hour.
        self._creations = (
            KeyedBuckets(docs_created_per_hour / 3600, docs_created_per_hour) if docs_created_per_hour else None
        )

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

    def health(self) -> dict:
        """What an operator must know: is saving working, and which documents
        are not whole."""
        problems = []
        if self.writer.failing:
            problems.append(f"store: commits failing since {time.ctime(self.writer.failing_since)}: {self.writer.failing}")
        for doc_id, why in sorted(self.unavailable.items())[:20]:
            problems.append(f"document {doc_id} unavailable: {why}")
        for live in list(self._docs.values())[:10_000]:
            if live.degraded:
                problems.append(f"document {live.doc_id} degraded: {len(live.skipped)} stored records left out")
            if live.compaction_problem:
                problems.append(f"document {live.doc_id}: {live.compaction_problem}")
        status = "failing" if self.writer.failing else ("degraded" if problems else "ok")
        return {"status": status, "problems": problems[:50], "recoveries": self.recoveries}

    # --- loading and subscribing -------------------------------------------

    async def subscribe(
        self, doc_id: str, subscriber: Subscriber, *, create: bool | None = None, creator: str | None = None
    ) -> LiveDoc:
        """The loaded document, loading it (or creating it, if ``create``)
        first. ``creator`` is who a new document counts against
        (``docs_created_per_hour``; None: trusted, not counted): over it,
        :class:`~bridge.errors.QuotaExceeded`."""
        loaded = doc_id in self._docs
        live = await self._get(doc_id, self.create_on_open if create is None else create, creator)
        self._keep(live)
        if loaded:
            await self.replicator.catch_up(live)
            self._keep(live)
        live.subscribers.add(subscriber)
        return live

    async def delete(self, doc_id: str, timeout: float = 30.0) -> bool:
        """Delete a document for good: its subscribers are told (peers get
        ``error not_found``) and let go, then everything stored of it is
        removed, after whatever was queued for it. Opening it meanwhile
        waits, and afterwards finds nothing (or creates a new, empty
        document). Returns whether there was anything to delete.

        Not with a bus: the other bridges would keep their loaded copies and
        write their peers' changes back (refused with NotImplementedError)."""
        if not isinstance(self.replicator, Standalone):
            raise NotImplementedError("deleting a document is not supported when bridges share a store yet")
        while doc_id in self._loading:
            await self._loading[doc_id].wait()
        deleting = self._loading[doc_id] = anyio.Event()  # _get waits on it, as on a load
        try:
            live = self._docs.pop(doc_id, None)
            existed = live is not None or bool(await self.store.doc_infos(only=doc_id))
            if live is not None:
                live.deleted = True
                self._keep(live)  # its pending unload (and that unload's compaction) is off
                subscribers, live.subscribers = list(live.subscribers), set()
                for subscriber in subscribers:
                    subscriber.doc_deleted(doc_id)
            done = anyio.Event()
            self.writer.submit(DeleteDoc(doc_id), lambda result: done.set())
            with anyio.fail_after(timeout):
                await done.wait()
            self.unavailable.pop(doc_id, None)
            log.warning("document %s deleted", doc_id, extra=doc_extra(doc_id))
            return existed
        finally:
            del self._loading[doc_id]
            deleting.set()

    async def compact_now(self, doc_id: str) -> bool:
        """Compact a loaded document at once (the admin route); False when it
        is not loaded, degraded, or a compaction is under way."""
        live = self._docs.get(doc_id)
        if live is None or live.compacting or live.degraded:
            return False
        await self._contained(self._compact, live)
        return live.compaction_problem is None

    @staticmethod
    def _keep(live: LiveDoc) -> None:
        """Someone wants ``live``: an unload waiting for it to idle is off."""
        if live.unload_scope is not None:
            live.unload_scope.cancel()
            live.unload_scope = None

    def unsubscribe(self, doc_id: str, subscriber: Subscriber) -> None:
        live = self._docs.get(doc_id)
        if live is None:
            return
        live.subscribers.discard(subscriber)
        if not live.subscribers:
            self._schedule_unload(live)

    async def _get(self, doc_id: str, create: bool, creator: str | None = None) -> LiveDoc:
        while True:
            if doc_id in self._docs:
                return self._docs[doc_id]
            if doc_id not in self._loading:
                break
            await self._loading[doc_id].wait()
        loaded = self._loading[doc_id] = anyio.Event()
        started = time.perf_counter()
        try:
            try:
                stored = await self.store.load(doc_id)
            except Exception as exc:
                log.exception("document %s: reading it from the store failed", doc_id, extra=doc_extra(doc_id))
                raise DocUnavailable(doc_id) from exc
            if stored is None:
                if not create:
                    raise DocNotFound(doc_id)
                self._charge_creation(doc_id, creator)
                live = LiveDoc(doc_id, core.Document())
            else:
                live = self._load(doc_id, stored, [])
            self._docs[doc_id] = live
            self.replicator.loaded(live)
            self.metrics.load_seconds.observe(time.perf_counter() - started)
            return live
        finally:
            del self._loading[doc_id]
            loaded.set()

    def _charge_creation(self, doc_id: str, creator: str | None) -> None:
        if self._creations is None or creator is None:
            return
        if not self._creations.take(creator, time.monotonic()):
            retry = self._creations.retry_after(creator)
            raise QuotaExceeded(
                f"too many new documents: at most {round(self._creations.burst)} per hour; try again in {retry} s",
                doc=doc_id,
            )

    def _load(self, doc_id: str, stored: StoredDoc, unsaved: list[tuple[bytes, bytes]]) -> LiveDoc:
        rows = stored.changes + unsaved
        try:
            result = load_stored(stored.snapshots, [data for _, data in rows], self.bounds, [h for h, _ in rows])
        except Unloadable as exc:
            self.unavailable[doc_id] = str(exc)
            log.error("document %s: stored state does not load, refusing to serve it: %s", doc_id, exc,
                extra=doc_extra(doc_id))
            raise DocUnavailable(doc_id) from None
        self.unavailable.pop(doc_id, None)
        if result.skipped:
            log.error(
                "document %s loaded DEGRADED, %d stored records left out (kept in the store, never compacted): %s",
                doc_id, len(result.skipped), "; ".join(result.skipped[:5]), extra=doc_extra(doc_id),
            )
        # Only rows the document holds may be retired by its next snapshot.
        held = [h for h, _ in stored.changes if result.index is None or h in result.index.hashes]
        return LiveDoc(doc_id, result.doc, held, result.skipped, result.index, store_gen=stored.gen)

    def _schedule_unload(self, live: LiveDoc) -> None:
        if self._tg is None or live.unload_scope is not None:
            return
        live.unload_scope = anyio.CancelScope()
        self._tg.start_soon(self._contained, self._unload_when_idle, live, live.unload_scope)

    async def _contained(self, task, live: LiveDoc, *args) -> None:
        """Run a document's background task; its failure is that document's
        alone (logged, reported in health), never the hub's."""
        try:
            await task(live, *args)
        except Exception as exc:
            live.compaction_problem = f"{task.__name__} failed: {type(exc).__name__}: {exc}"[:300]
            log.exception("document %s: %s failed", live.doc_id, task.__name__, extra=doc_extra(live.doc_id))

    async def _unload_when_idle(self, live: LiveDoc, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(self.idle_unload_after)
            if live.changes_since_snapshot:
                await self._compact(live)
            await live.wait_all_saved()
            # Nothing awaits past this point: a subscriber arriving during the
            # waits above cancelled this scope, so the document is idle now.
            if self._docs.get(live.doc_id) is live:
                del self._docs[live.doc_id]
                self.replicator.unloaded(live)
            log.debug("unloaded %s", live.doc_id)

    # --- changes ------------------------------------------------------------

    def accept(self, live: LiveDoc, changes: list[core.Change], origin: Subscriber | None = None) -> None:
        """Persist and relay changes that were just applied to ``live.doc``.

        ``origin`` is told too: its sync state may need an answer from us.
        """
        if not changes:
            return
        if live.deleted:  # a handle kept past Hub.delete: the document is gone
            raise DocNotFound(live.doc_id)
        hashes = [change.hash for change in changes]
        heads = live.doc.get_heads()
        live.note_accepted(changes)
        self.metrics.changes_accepted.inc(len(changes))
        rows = [(c.hash, c.bytes) for c in changes]

        def on_durable(result: Committed) -> None:
            self._on_durable(live, hashes, heads, origin)
            self.replicator.committed(live, result, rows)

        self.writer.submit(AppendChanges(live.doc_id, rows), on_durable)
        if live.changes_since_snapshot >= self.compact_after and not live.compacting and self._tg is not None:
            self._tg.start_soon(self._contained, self._compact, live)
        for subscriber in list(live.subscribers):
            subscriber.doc_changed(live.doc_id, origin)

    async def _compact(self, live: LiveDoc) -> None:
        """Snapshot the document, verified before it may retire any row.

        Contained: a failure is logged and reported, and the rows stay.
        """
        if live.compacting or live.degraded or live.deleted:
            return
        live.compacting = True
        try:
            heads = live.doc.get_heads()
            covered = frozenset(live.stored_rows)
            try:
                snapshot = call_core(live.doc.save)
                reloaded = call_core(core.Document.load, snapshot).get_heads()
            except CoreFailure as exc:
                reloaded, snapshot = None, b""
                why = str(exc)
            else:
                why = f"heads {[h.hex()[:12] for h in reloaded]} != {[h.hex()[:12] for h in heads]}"
            if reloaded != heads:
                live.compaction_problem = f"snapshot does not load back ({why}); change rows kept"
                log.error("document %s: %s", live.doc_id, live.compaction_problem, extra=doc_extra(live.doc_id))
                return
            live.compaction_problem = None
            live.changes_since_snapshot = 0
            done = anyio.Event()

            def on_durable(result: Committed) -> None:
                if result.gen is None:
                    # Another bridge sharing the store compacted meanwhile:
                    # nothing was written; catch up, then compact again.
                    live.changes_since_snapshot += len(covered)
                    log.info("document %s: compaction skipped, another bridge compacted it first", live.doc_id,
                        extra=doc_extra(live.doc_id))
                    self.replicator.stale(live)
                else:
                    live.store_gen = result.gen
                    live.stored_rows -= covered
                    self._on_durable(live, [], heads, None)
                done.set()

            self.writer.submit(Compact(live.doc_id, snapshot, covered, base_gen=live.store_gen), on_durable)
            await done.wait()
        finally:
            live.compacting = False

    def _on_durable(self, live: LiveDoc, hashes: list[bytes], heads: list[bytes], origin: Subscriber | None) -> None:
        live.note_committed(hashes, heads)
        for subscriber in list(live.subscribers):
            subscriber.doc_saved(live.doc_id, heads, subscriber is origin)
        if hashes:  # changes, not a compaction
            self.commits.publish(live.doc_id, heads, origin_of(origin))

    def committed(self, doc_ids: Iterable[str] | None = None, *, max_docs: int = 10_000) -> CommitSubscription:
        """Commits this bridge makes from now on, as an async iterator of
        :class:`~bridge.hooks.Commit` (and :class:`~bridge.hooks.Missed` for
        a consumer that fell more than ``max_docs`` documents behind); see
        :mod:`bridge.hooks` for the exact semantics."""
        return self.commits.subscribe(doc_ids, max_docs)

    def change_locally(self, live: LiveDoc, heads_before: list[bytes], origin: Subscriber | None) -> list[bytes]:
        """Accept whatever was applied to the document since ``heads_before``."""
        if live.doc.get_heads() != heads_before:
            self.accept(live, live.doc.get_changes(heads_before), origin)
        return live.doc.get_heads()

    def merge_bytes(self, live: LiveDoc, data: bytes, origin: Subscriber | None = None) -> list[bytes]:
        """Merge a saved document or change chunks, checked like a peer's sync
        message; return the hashes it carried (all now in the document).
        ``origin``: the handle merging them (whose changes they are).

        Raises ``ValueError`` when ``data`` is not Automerge data, or when
        some of its changes are refused or lack dependencies, and
        :class:`~bridge.errors.QuotaExceeded` when they would take the
        document past ``max_doc_ops`` (either way the valid ones are applied
        and accepted all the same).
        """
        before = live.doc.get_heads()
        try:
            incoming, planned = self._apply_checked(live, data)
        except ValueError:
            self.metrics.rejected[ErrorCode.BAD_SYNC].inc()
            raise
        self.change_locally(live, before, origin)
        if planned.rejected or planned.waiting:
            self.metrics.rejected[ErrorCode.QUOTA if planned.rejected and planned.full else ErrorCode.BAD_SYNC].inc()
        if planned.rejected:
            change, reason = planned.rejected[0]
            if planned.full:
                raise QuotaExceeded(f"refused change {change.hash.hex()[:12]}: {reason}", doc=live.doc_id)
            raise ValueError(f"refused change {change.hash.hex()[:12]}: {reason}")
        if planned.waiting:
            raise ValueError(f"{len(planned.waiting)} changes lack dependencies the server does not have")
        return [change.hash for change in incoming]

    def merge_committed(self, live: LiveDoc, data: bytes) -> bool:
        """Merge changes another bridge committed to the shared store (from
        the bus or read back from the store): checked like any peer's, relayed
        to this bridge's peers, and durable already, so not written again.
        False when some could not be applied (refused, or their dependencies
        are missing): the caller reads the store again later."""
        before = live.doc.get_heads()
        try:
            _, planned = self._apply_checked(live, data)
        except ValueError as exc:
            log.warning("document %s: changes committed by another bridge not applied: %s", live.doc_id, exc,
                extra=doc_extra(live.doc_id))
            return False
        if planned.rejected:
            change, reason = planned.rejected[0]
            log.error("document %s: refused change %s that another bridge committed: %s (are the bridges' "
                      "limits the same?)", live.doc_id, change.hash.hex()[:12], reason, extra=doc_extra(live.doc_id))
        if live.doc.get_heads() != before:
            live.note_committed_elsewhere(live.doc.get_changes(before))
            heads = live.durable_heads
            for subscriber in list(live.subscribers):
                subscriber.doc_changed(live.doc_id, None)
                subscriber.doc_saved(live.doc_id, heads, False)
        return not planned.rejected and not planned.waiting

    def _apply_checked(self, live: LiveDoc, data: bytes):
        """Check ``data`` against the document and apply what passes;
        ``(incoming, plan)``. ValueError when it is not acceptable at all."""
        try:
            incoming = expand_chunks(data, self.bounds, live.index.hashes, live.doc.get_heads())
        except ChunkError as exc:
            raise ValueError(f"not acceptable Automerge data: {exc}") from None
        planned = plan(live.index, incoming, max_doc_ops=self.bounds.max_doc_ops)
        if planned.apply:
            try:
                apply_chunks(live.doc, [change.chunk for change in planned.apply])
            except CoreFailure as exc:
                self.damaged(live, exc)
                raise ValueError(f"the changes could not be applied: {exc}") from None
        return incoming, planned

    def relay_ephemeral(self, live: LiveDoc, sender: Subscriber, data: bytes, identity: str) -> None:
        """Presence from ``sender``, relayed ``from`` its ``identity`` (the
        principal's, never a name the peer chose) to everyone else on it."""
        for subscriber in list(live.subscribers):
            if subscriber is not sender:
                subscriber.ephemeral(live.doc_id, identity, data, sender)
        self.replicator.ephemeral(live, identity, data, sender)

    # --- recovery -----------------------------------------------------------

    def damaged(self, live: LiveDoc, cause: BaseException) -> None:
        """The core failed on ``live.doc``: reload it in the background."""
        if self._tg is not None and live.recovering is None:
            live.recovering = anyio.Event()
            self._tg.start_soon(self._contained, self._recover, live, str(cause))

    async def recover(self, live: LiveDoc, cause: BaseException) -> None:
        """Reload ``live`` after a core failure; return once it is usable."""
        self.damaged(live, cause)
        if live.recovering is not None:
            await live.recovering.wait()

    async def _recover(self, live: LiveDoc, cause: str) -> None:
        assert live.recovering is not None
        log.error("document %s: the core failed (%s); reloading it from the store", live.doc_id, cause,
            extra=doc_extra(live.doc_id))
        self.recoveries += 1
        try:
            stored = await self.store.load(live.doc_id) or StoredDoc()
            fresh = self._load(live.doc_id, stored, live.unsaved_rows())
            live.replace(fresh.doc, fresh.index)
            live.skipped = fresh.skipped
            live.store_gen = fresh.store_gen
            for subscriber in list(live.subscribers):
                subscriber.doc_reloaded(live.doc_id)
        except Exception:
            log.exception("document %s: reload after a core failure failed; unloading it", live.doc_id,
                extra=doc_extra(live.doc_id))
            if self._docs.get(live.doc_id) is live:
                del self._docs[live.doc_id]
                self.replicator.unloaded(live)
        finally:
            done, live.recovering = live.recovering, None
            done.set()
