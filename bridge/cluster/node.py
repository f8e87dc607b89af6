"""One bridge among several sharing a store and a bus.

The store (PostgreSQL) is the truth: a change is acknowledged once it is
committed there, whichever bridge committed it. The bus (Redis pub/sub) only
makes the others hear of it quickly. After each commit this bridge publishes
the changes, with their place ``(prev, seq]`` in the document's store
sequence, on the document's channel; every other bridge with the document
loaded checks and applies them like any peer's changes, relays them to its
own peers, and counts them durable (they are committed).

Pub/sub may lose messages: the broker restarts, a subscription drops, a slow
consumer is cut off. Hocuspocus' Redis extension then leaves documents apart
until users reconnect. Here each bridge tracks, per loaded document, the
store sequence it has seen (:class:`~bridge.cluster.tracker.SeqTracker`) and
reads what it lacks from the store (:meth:`ClusterNode.heal`):

- on a gap (a message whose range does not follow what it has seen) that
  the missing message does not fill within ``gap_grace``;
- when the bus (re)connects (anything may have been lost meanwhile);
- every ``heal_interval``, for every loaded document, by one query of the
  store's positions (so a bridge converges even while the bus is down);
- when its own compaction was skipped because another bridge compacted first.

If the store holds a snapshot newer than the one this bridge's copy is known
to contain, rows may have been retired since: it reads the whole stored
document instead of the rows after ``seen``.
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol, Sequence

import anyio
import msgspec

from ..hub import Hub, LiveDoc
from ..logs import doc_extra, get_logger
from ..storage import Committed, Store, StoredDoc
from . import Bus
from .tracker import SeqTracker

log = get_logger(__name__)


class SequencedStore(Store, Protocol):
    """A store shared by several bridges: it keeps a sequence per document
    (:class:`~bridge.storage.postgres.PostgresStore`)."""

    async def read_since(self, doc_id: str, seq: int) -> StoredDoc | None: ...

    async def positions(self, doc_ids: Sequence[str]) -> dict[str, tuple[int, int]]: ...


def shares_store(store: Store) -> bool:
    return callable(getattr(store, "read_since", None)) and callable(getattr(store, "positions", None))


# --- what travels on the bus ----------------------------------------------------------


class Changes(msgspec.Struct, tag="c", array_like=True):
    """Rows ``(prev, seq]`` of the channel's document, committed by ``node``;
    ``data`` is their change chunks, or None when too large to publish (the
    receivers read them from the store)."""

    node: str
    prev: int
    seq: int
    data: bytes | None


class Presence(msgspec.Struct, tag="e", array_like=True):
    """An ``eph`` frame from a peer of ``node``: ``sender`` is its
    authenticated identity, ``source`` tells that node's connections apart."""

    node: str
    sender: str
    source: int
    data: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Changes | Presence)


class ClusterNode:
    """The hub's :class:`~bridge.hub.Replicator` and the bus's handler."""

    def __init__(
        self,
        store: SequencedStore,
        bus: Bus,
        *,
        node_id: str | None = None,
        heal_interval: float = 2.0,
        gap_grace: float = 0.2,
        max_published_bytes: int = 256 * 1024,
    ) -> None:
        self.store = store
        self.bus = bus
        self.node_id = node_id or secrets.token_hex(6)
        self.heal_interval = heal_interval
        self.gap_grace = gap_grace
        self.max_published_bytes = max_published_bytes
        self.hub: Hub | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._trackers: dict[str, SeqTracker] = {}
        self._to_heal: set[str] = set()
        self._heal_wanted = anyio.Event()
        # Counters for health and metrics.
        self.heals = 0  # documents read back from the store
        self.healed_changes = 0  # ... that brought changes the bus had not
        self.applied = 0  # bus messages that brought changes
        self.refused = 0  # bus payloads that did not decode

    # --- running ------------------------------------------------------------------

    async def run(self, hub: Hub, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        self.hub = hub
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.bus.run, self)
            tg.start_soon(self._healer)
            tg.start_soon(self._periodic_check)
            task_status.started()

    def health(self) -> dict:
        behind = sum(1 for t in self._trackers.values() if t.has_gap)
        # How far behind the bus this bridge is: the oldest gap still open.
        gaps = [t.gap_since for t in self._trackers.values() if t.gap_since is not None]
        oldest = round(time.monotonic() - min(gaps), 3) if gaps else 0.0
        return {
            "node": self.node_id, "bus_connected": self.bus.connected, "followed_docs": len(self._trackers),
            "docs_with_gaps": behind, "oldest_gap_seconds": oldest, "heals": self.heals,
            "healed_changes": self.healed_changes, "applied": self.applied, "refused": self.refused,
        }

    # --- the hub's side (Replicator) ------------------------------------------------

    def loaded(self, live: LiveDoc) -> None:
        self._trackers[live.doc_id] = SeqTracker(live.store_seq)
        self.bus.follow(live.doc_id)
        # Commits between the load and the subscription taking effect reach
        # us through no message: look once the subscription is surely up.
        self._heal_later(live.doc_id, 1.0, only_if_gap=False)

    async def catch_up(self, live: LiveDoc) -> None:
        # One query when nothing is missing. Bounded: a store that is down
        # must not stop peers from opening what this bridge has in memory.
        with anyio.move_on_after(2):
            try:
                await self.heal(live.doc_id)
            except Exception as exc:
                log.warning("document %s: catching up from the store failed: %s", live.doc_id, exc,
                    extra=doc_extra(live.doc_id))

    def unloaded(self, live: LiveDoc) -> None:
        self._trackers.pop(live.doc_id, None)
        self._to_heal.discard(live.doc_id)
        self.bus.unfollow(live.doc_id)

    def committed(self, live: LiveDoc, result: Committed, changes: list[tuple[bytes, bytes]]) -> None:
        if result.seq == result.prev_seq:
            return  # nothing new reached the store (every change was there already)
        tracker = self._trackers.get(live.doc_id)
        if tracker is not None:
            self._note(live.doc_id, tracker, result.prev_seq, result.seq)
        data = b"".join(chunk for _, chunk in changes)
        inline = data if len(data) <= self.max_published_bytes else None
        self.bus.publish(live.doc_id, _encoder.encode(Changes(self.node_id, result.prev_seq, result.seq, inline)))

    def stale(self, live: LiveDoc) -> None:
        self._heal_now(live.doc_id)

    def ephemeral(self, live: LiveDoc, identity: str, data: bytes, source: object) -> None:
        self.bus.publish(live.doc_id, _encoder.encode(Presence(self.node_id, identity, id(source), data)))

    # --- the bus's side (BusHandler) ------------------------------------------------

    def bus_message(self, doc_id: str, payload: bytes) -> None:
        hub = self.hub
        live = hub.loaded.get(doc_id) if hub is not None else None
        tracker = self._trackers.get(doc_id)
        if live is None or tracker is None:
            return
        try:
            message = _decoder.decode(payload)
        except msgspec.DecodeError:
            self.refused += 1
            log.warning("document %s: a bus message that does not decode (%d bytes), ignored", doc_id, len(payload),
                extra=doc_extra(doc_id))
            return
        if message.node == self.node_id:
            return  # our own, echoed back
        if isinstance(message, Presence):
            for subscriber in list(live.subscribers):
                subscriber.ephemeral(doc_id, message.sender, message.data, (message.node, message.source))
            return
        if message.seq <= tracker.seen:
            return  # already here (read from the store meanwhile)
        if message.data is None:
            self._heal_now(doc_id)
            return
        self.applied += 1
        if hub.merge_committed(live, message.data):
            self._note(doc_id, tracker, message.prev, message.seq)
        else:
            # Their dependencies are in rows we lack (a message lost or still
            # on its way): the range stays unseen, so the store read covers it.
            self._heal_now(doc_id)

    def bus_connected(self) -> None:
        # Whatever was published while we were away is lost: read the store.
        for doc_id in self._trackers:
            self._heal_now(doc_id)

    # --- healing from the store -----------------------------------------------------

    def _note(self, doc_id: str, tracker: SeqTracker, prev: int, seq: int) -> bool:
        had_gap = tracker.has_gap
        fresh = tracker.note(prev, seq, time.monotonic())
        if tracker.has_gap and not had_gap:
            self._heal_later(doc_id, self.gap_grace)  # the missing message may be on its way
        return fresh

    def _heal_now(self, doc_id: str) -> None:
        self._to_heal.add(doc_id)
        self._heal_wanted.set()

    def _heal_later(self, doc_id: str, delay: float, only_if_gap: bool = True) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._heal_after, doc_id, delay, only_if_gap)

    async def _heal_after(self, doc_id: str, delay: float, only_if_gap: bool) -> None:
        await anyio.sleep(delay)
        tracker = self._trackers.get(doc_id)
        if tracker is not None and (tracker.has_gap or not only_if_gap):
            self._heal_now(doc_id)

    async def _healer(self) -> None:
        """Heal the documents asked for, one at a time (a store that is down
        delays it; the next request or period tries again)."""
        while True:
            await self._heal_wanted.wait()
            self._heal_wanted = anyio.Event()
            while self._to_heal:
                doc_id = self._to_heal.pop()
                try:
                    await self.heal(doc_id)
                except Exception as exc:
                    log.warning("document %s: reading it back from the store failed (%s); will retry", doc_id, exc,
                        extra=doc_extra(doc_id))
                    await anyio.sleep(min(self.heal_interval, 1.0))
                    self._to_heal.add(doc_id)

    async def _periodic_check(self) -> None:
        """Every ``heal_interval``: is the store ahead of us on any loaded document?"""
        while True:
            await anyio.sleep(self.heal_interval)
            hub = self.hub
            if hub is None or not self._trackers:
                continue
            try:
                with anyio.fail_after(max(self.heal_interval, 5.0)):
                    positions = await self.store.positions(list(self._trackers))
            except Exception as exc:
                log.debug("the periodic look at the store failed: %s", exc)
                continue
            for doc_id, (seq, gen) in positions.items():
                tracker, live = self._trackers.get(doc_id), hub.loaded.get(doc_id)
                if tracker is not None and live is not None and (seq > tracker.seen or gen > live.store_gen):
                    self._heal_now(doc_id)

    async def heal(self, doc_id: str) -> None:
        """Read from the store what this bridge's copy of ``doc_id`` lacks."""
        hub = self.hub
        tracker = self._trackers.get(doc_id)
        live = hub.loaded.get(doc_id) if hub is not None else None
        if hub is None or tracker is None or live is None:
            return
        since, pending = tracker.seen, tracker.pending()
        stored = await self.store.read_since(doc_id, since)
        if stored is None or hub.loaded.get(doc_id) is not live:
            return
        whole = stored.gen > live.store_gen
        if whole:
            # A newer snapshot: rows after `seen` may have been retired into it.
            stored = await self._whole(doc_id, live)
            if stored is None:
                return
        self.heals += 1
        before = len(live.index.hashes)
        complete = self._merge(live, stored)
        if not complete and not whole:
            # Rows after `seen` depend on something we lack: read everything.
            whole, stored = True, await self._whole(doc_id, live)
            if stored is None:
                return
            complete = self._merge(live, stored)
        self.healed_changes += len(live.index.hashes) - before
        if complete:
            tracker.healed(stored.seq, pending)
            if whole:
                live.store_gen = stored.gen
        else:
            log.error("document %s: the stored document does not merge into this bridge's copy; "
                      "retrying at the next period", doc_id, extra=doc_extra(doc_id))
        if tracker.has_gap:  # commits after our read, whose messages are still missing
            self._heal_later(doc_id, self.gap_grace)

    async def _whole(self, doc_id: str, live: LiveDoc) -> StoredDoc | None:
        stored = await self.store.load(doc_id)
        hub = self.hub
        return stored if hub is not None and hub.loaded.get(doc_id) is live else None

    def _merge(self, live: LiveDoc, stored: StoredDoc) -> bool:
        assert self.hub is not None
        if not stored.snapshots and not stored.changes:
            return True
        return self.hub.merge_committed(live, stored.as_bytes())
