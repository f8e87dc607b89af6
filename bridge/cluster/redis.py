"""The bus on Redis pub/sub (redis-py's asyncio client).

One channel per document: ``<prefix><doc id>``, the prefix being
``automerge-bridge:doc:`` unless told otherwise. Redis does not scope pub/sub
channels by database number, so the prefix is what keeps two deployments on
one Redis apart: ``redis://host:6379/0?channel_prefix=staging:``.

The bus is an optimisation (:mod:`bridge.cluster.node` heals from the store),
so it is built to be fast and honest rather than reliable:

- ``publish`` queues and returns; a sender task pipelines what queued, many
  PUBLISHes per round trip. Nothing is kept for a broker that is down: while
  disconnected a payload is dropped at once. When the queue is over its
  bounds (a broker that cannot keep up) the *oldest* payloads go: a receiver
  notices a gap only when a later message of the document arrives, so the
  newest ones are the ones worth sending (they reveal the gap, and presence
  is latest-state anyway).
- One connection session at a time: connect, subscribe every followed
  channel, confirm with a PING (Redis answers in order, so its PONG means
  every SUBSCRIBE before it took effect), then ``connected`` and
  ``handler.bus_connected()``. Any trouble ends the session; ``run`` backs
  off with jitter and starts a new one. redis-py's own retries are off:
  they would reconnect and resubscribe behind our back, and the handler
  would never hear that messages may have been lost.
- A killed server closes the socket, which the reader sees at once. A
  server that vanished silently (a cable, a frozen VM) is noticed by the
  reader pinging over the subscription whenever it has been quiet, and
  giving up after ``dead_after`` seconds without a word. (redis-py's
  ``health_check_interval`` does not do this for pub/sub: it sends a PING
  but never notices a missing PONG.) Socket timeouts bound every other
  read, so a stuck PUBLISH fails the session too.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from tenacity import wait_exponential_jitter

from ..logs import get_logger
from ..urls import redact_url, take_query_param
from . import BusHandler

log = get_logger(__name__)

MiB = 1024 * 1024
DEFAULT_PREFIX = "automerge-bridge:doc:"

SOCKET_TIMEOUT = 5.0  # connect, and any read or write that is not the subscription's wait
CHECK_TIMEOUT = 2.0  # check(): a readiness probe answers fast or not at all
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE / UNSUBSCRIBE command
PUBLISH_BATCH = 1000  # PUBLISHes per pipeline round trip...
PUBLISH_BATCH_BYTES = 4 * MiB  # ...and payload bytes (a larger payload goes alone)
STEADY = 10.0  # connected this long: the next outage backs off from the start again


class RedisBus:
    """:class:`~bridge.cluster.Bus` on Redis pub/sub. Counters for health and
    metrics: ``published`` (acknowledged by Redis), ``received`` (handed to
    the handler), ``dropped`` (never sent, or lost in flight), ``reconnects``
    (connections after the first), and ``connected``."""

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str = DEFAULT_PREFIX,
        max_queued: int = 10_000,
        max_queued_bytes: int = 64 * MiB,
        dead_after: float = 5.0,
    ) -> None:
        self._url, url_prefix = take_query_param(url, "channel_prefix")  # redis-py does not know it
        self.channel_prefix = channel_prefix if url_prefix is None else url_prefix
        self._prefix = self.channel_prefix.encode()
        self.max_queued = max(1, max_queued)
        self.max_queued_bytes = max_queued_bytes
        self.dead_after = dead_after
        self.connected = False
        self.published = self.received = self.dropped = self.reconnects = 0
        self._ever_connected = False
        self._connected_at: float | None = None
        self._followed: set[str] = set()
        self._following_changed = anyio.Event()
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued_bytes = 0
        self._queue_filled = anyio.Event()

    def __repr__(self) -> str:
        return f"RedisBus({redact_url(self._url)!r}, channel_prefix={self.channel_prefix!r})"

    def snapshot(self) -> dict:
        return {
            "connected": self.connected, "followed": len(self._followed), "queued": len(self._queue),
            "published": self.published, "received": self.received, "dropped": self.dropped,
            "reconnects": self.reconnects,
        }

    # --- the bridge's side: synchronous, never blocks ----------------------------------

    def follow(self, doc_id: str) -> None:
        self._followed.add(doc_id)
        self._following_changed.set()

    def unfollow(self, doc_id: str) -> None:
        self._followed.discard(doc_id)
        self._following_changed.set()

    def publish(self, doc_id: str, payload: bytes) -> None:
        size = len(payload)
        if not self.connected or size > self.max_queued_bytes:
            self.dropped += 1  # no broker to hold it for, or it can never fit
            return
        # Over the bounds: the oldest go (see the module's docstring for why).
        while self._queue and (len(self._queue) >= self.max_queued
                               or self._queued_bytes + size > self.max_queued_bytes):
            _, old = self._queue.popleft()
            self._queued_bytes -= len(old)
            self.dropped += 1
        self._queue.append((self._channel(doc_id), payload))
        self._queued_bytes += size
        self._queue_filled.set()

    async def check(self) -> None:
        # A connection of its own: the answer must be about now, not about a
        # session that has not noticed yet that it is dead.
        client = self._client(timeout=CHECK_TIMEOUT)
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                await client.ping()
        finally:
            await _close(client)

    # --- the connection ------------------------------------------------------------

    async def run(self, handler: BusHandler, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # at once: a bridge serves its own peers while the bus is down
        backoff = wait_exponential_jitter(multiplier=0.1, max=5, jitter=0.5)
        attempt, outage_logged = 0, False
        try:
            while True:
                self._connected_at = None
                problem: BaseException = RedisConnectionError("the session ended")
                try:
                    await self._session(handler)
                except Exception as exc:
                    problem = exc
                self._disconnected()
                if self._connected_at is not None:  # a session was up: a new outage starts
                    outage_logged = False
                    if anyio.current_time() - self._connected_at >= STEADY:
                        attempt = 0  # a flapping connection keeps backing off
                attempt += 1
                self._log_trouble(problem, first=not outage_logged)
                outage_logged = True
                await anyio.sleep(backoff(SimpleNamespace(attempt_number=attempt)))  # type: ignore[arg-type]
        finally:
            self._disconnected()

    async def _session(self, handler: BusHandler) -> None:
        """Connect, subscribe, then read until something goes wrong (raises)."""
        client = self._client()
        pubsub = client.pubsub()
        try:
            await pubsub.connect()
            subscribed: set[str] = set()
            await self._sync_subscriptions(pubsub, subscribed)
            await self._confirm(pubsub, handler)
            await client.ping()  # the publishing side works too
            self.connected = True
            self._connected_at = anyio.current_time()
            if self._ever_connected:
                self.reconnects += 1
                log.info("bus %s: connected again, following %d documents", redact_url(self._url), len(subscribed))
            else:
                log.info("bus %s: connected, following %d documents", redact_url(self._url), len(subscribed))
            self._ever_connected = True
            try:
                handler.bus_connected()
            except Exception:
                log.exception("bus: the handler failed on connecting")
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sender, client)
                tg.start_soon(self._subscriber, pubsub, subscribed)
                await self._reader(pubsub, handler)
        finally:
            self.connected = False
            await _close(pubsub, client)

    def _client(self, timeout: float = SOCKET_TIMEOUT) -> aioredis.Redis:
        options: dict = dict(
            decode_responses=False,  # payloads are bytes and must arrive byte-identical
            socket_connect_timeout=timeout, socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # run() retries, and tells the handler
        )
        if not self._url.lower().startswith("unix:"):
            options["socket_keepalive"] = True  # the publishing connection idles between bursts
        return aioredis.Redis.from_url(self._url, **options)

    def _channel(self, doc_id: str) -> bytes:
        return self._prefix + doc_id.encode()

    def _disconnected(self) -> None:
        self.connected = False
        self.dropped += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0

    def _log_trouble(self, problem: BaseException, *, first: bool) -> None:
        trouble = _connection_trouble(problem)
        if trouble is None:  # a bug, not the network: say so every time, with its traceback
            log.error("bus %s: the session failed; reconnecting", redact_url(self._url), exc_info=problem)
        elif first:  # once per outage, not once per retry
            verb = "lost the connection" if self._ever_connected else "cannot connect"
            log.warning("bus %s: %s (%s); retrying with backoff, healing from the store meanwhile",
                        redact_url(self._url), verb, trouble)
        else:
            log.debug("bus %s: still down (%s)", redact_url(self._url), trouble)

    # --- the session's tasks ---------------------------------------------------------

    async def _sync_subscriptions(self, pubsub, subscribed: set[str]) -> None:
        """Bring ``subscribed`` to the followed set, many channels per command."""
        wanted = set(self._followed)
        for batch in _batches([self._channel(d) for d in wanted - subscribed]):
            await pubsub.subscribe(*batch)
        for batch in _batches([self._channel(d) for d in subscribed - wanted]):
            await pubsub.unsubscribe(*batch)
        subscribed.clear()
        subscribed.update(wanted)

    async def _subscriber(self, pubsub, subscribed: set[str]) -> None:
        while True:
            await self._following_changed.wait()
            self._following_changed = anyio.Event()  # follow() meanwhile sets the new one
            await self._sync_subscriptions(pubsub, subscribed)

    async def _confirm(self, pubsub, handler: BusHandler) -> None:
        """Wait for the PONG that follows every SUBSCRIBE sent so far."""
        await pubsub.ping()
        with anyio.fail_after(self.dead_after):
            while True:
                message = await pubsub.get_message(timeout=self.dead_after)
                if message is not None and message["type"] == "pong":
                    return
                if message is not None:
                    self._deliver(handler, message)  # published after our SUBSCRIBE: as good as later ones

    async def _reader(self, pubsub, handler: BusHandler) -> None:
        ping_every = self.dead_after / 4
        heard = anyio.current_time()
        while True:
            if not pubsub.connection.is_connected:
                # redis-py would reconnect and resubscribe silently on the next read.
                raise RedisConnectionError("the subscription's connection closed")
            message = await pubsub.get_message(timeout=ping_every)
            if message is not None:
                heard = anyio.current_time()
                self._deliver(handler, message)
            elif anyio.current_time() - heard > self.dead_after:
                raise TimeoutError(f"no word from Redis for {self.dead_after:g} s")
            else:
                await pubsub.ping()  # quiet: ask for a sign of life

    def _deliver(self, handler: BusHandler, message: dict) -> None:
        if message["type"] != "message":
            return  # subscribe confirmations, PONGs: signs of life only
        doc_id = message["channel"][len(self._prefix):].decode()
        if doc_id not in self._followed:
            return  # unfollowed, its UNSUBSCRIBE not applied yet
        self.received += 1
        try:
            handler.bus_message(doc_id, message["data"])
        except Exception:
            log.exception("bus: the handler failed on a message for document %s", doc_id)

    async def _sender(self, client: aioredis.Redis) -> None:
        while True:
            await self._queue_filled.wait()
            self._queue_filled = anyio.Event()  # publish() meanwhile sets the new one
            while self._queue:
                batch = self._take_batch()
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                except BaseException:
                    self.dropped += len(batch)  # sent or not: nobody can tell
                    raise
                self.published += len(batch)

    def _take_batch(self) -> list[tuple[bytes, bytes]]:
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        while self._queue and len(batch) < PUBLISH_BATCH and (not batch or size + len(self._queue[0][1]) <= PUBLISH_BATCH_BYTES):
            channel, payload = self._queue.popleft()
            self._queued_bytes -= len(payload)
            size += len(payload)
            batch.append((channel, payload))
        return batch


# --- helpers --------------------------------------------------------------------------


def _connection_trouble(exc: BaseException) -> str | None:
    """What went wrong, if ``exc`` (or every exception in a group) is the
    connection's trouble; None for anything else (a bug)."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [_connection_trouble(e) for e in exc.exceptions]
        return None if any(t is None for t in inner) else inner[0]
    if isinstance(exc, (RedisError, OSError)):  # OSError: TimeoutError too
        return str(exc) or type(exc).__name__
    return None


async def _close(*resources) -> None:
    """Close connections even while cancelled; redis-py bounds each close."""
    with anyio.CancelScope(shield=True):
        for resource in resources:
            try:
                await resource.aclose()
            except Exception as exc:
                log.debug("bus: closing a connection failed: %s", exc)


def _batches(items: list[bytes], size: int = SUBSCRIBE_BATCH) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
