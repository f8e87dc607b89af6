"""The bus on Redis pub/sub (redis-py's asyncio client).

One channel per document (``automerge-bridge:doc:<id>``; Redis does not
scope pub/sub channels by database number, so two deployments on one Redis
need different prefixes: ``?channel_prefix=...`` in the URL). A bridge
subscribes to the channels of the documents it has loaded.

Fire and forget, on purpose: ``publish`` queues and returns; a sender task
pipelines what queued. While disconnected, or when the queue is full (a
broker that cannot keep up), payloads are dropped, the *newest* first: the
bus is an optimisation, and a receiver heals from the store on the gap the
drop leaves (:mod:`bridge.cluster.node`), so holding memory for a broker that
is down would buy nothing. After every (re)connection the handler hears
``bus_connected()`` and heals everything it follows.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from tenacity import wait_exponential_jitter

from ..logs import get_logger
from . import BusHandler

log = get_logger(__name__)

MiB = 1024 * 1024
_IDLE = b"\x00idle"


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


class RedisBus:
    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str = "automerge-bridge:doc:",
        max_queued: int = 10_000,
        max_queued_bytes: int = 64 * MiB,
    ) -> None:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        for key, value in query:
            if key == "channel_prefix":
                channel_prefix = value
        self._url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "channel_prefix"])))
        self.prefix = channel_prefix.encode()
        self.max_queued, self.max_queued_bytes = max_queued, max_queued_bytes
        self.connected = False
        self._was_connected = False
        self._followed: set[str] = set()
        self._subscription_changed = anyio.Event()
        self._queue: list[tuple[bytes, bytes]] = []
        self._queued_bytes = 0
        self._queue_filled = anyio.Event()
        self.published = self.received = self.dropped = self.reconnects = 0

    def __repr__(self) -> str:
        return f"RedisBus({redact(self._url)!r})"

    def _client(self) -> aioredis.Redis:
        # Keepalive and a health check: a server that vanished without closing
        # the socket is noticed within seconds, not at the next publish.
        return aioredis.Redis.from_url(
            self._url, decode_responses=False, socket_connect_timeout=5, socket_keepalive=True,
            health_check_interval=5, retry_on_timeout=False,
        )

    def snapshot(self) -> dict:
        return {"connected": self.connected, "followed": len(self._followed), "published": self.published,
                "received": self.received, "dropped": self.dropped, "reconnects": self.reconnects}

    # --- synchronous side, called from the bridge ------------------------------------

    def follow(self, doc_id: str) -> None:
        self._followed.add(doc_id)
        self._subscription_changed.set()

    def unfollow(self, doc_id: str) -> None:
        self._followed.discard(doc_id)
        self._subscription_changed.set()

    def publish(self, doc_id: str, payload: bytes) -> None:
        if not self.connected or len(self._queue) >= self.max_queued \
                or self._queued_bytes + len(payload) > self.max_queued_bytes:
            self.dropped += 1
            return
        self._queue.append((self.prefix + doc_id.encode(), payload))
        self._queued_bytes += len(payload)
        self._queue_filled.set()

    async def check(self) -> None:
        client = self._client()
        try:
            with anyio.fail_after(2):
                await client.ping()
        finally:
            await client.aclose()

    # --- the connection ------------------------------------------------------------

    async def run(self, handler: BusHandler, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        wait = wait_exponential_jitter(multiplier=0.1, max=5, jitter=0.1)
        failures = 0
        while True:
            self._was_connected = False
            try:
                await self._session(handler)
            except Exception as exc:
                trouble = _connection_trouble(exc)
                if trouble is None:
                    raise
                if failures == 0 or self._was_connected:  # once per outage, not per retry
                    log.warning("bus %s lost (%s); serving on, reconnecting, healing from the store meanwhile",
                                redact(self._url), trouble)
            finally:
                self.connected = False
                self._drop_queue()
            failures = 1 if self._was_connected else failures + 1

            class _Attempt:  # what tenacity's wait strategies read
                attempt_number = failures

            await anyio.sleep(wait(_Attempt()))  # type: ignore[arg-type]

    async def _session(self, handler: BusHandler) -> None:
        client = self._client()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await client.ping()
            # redis-py reads only while subscribed to something: a channel
            # nobody publishes to keeps the connection in pub/sub mode.
            await pubsub.subscribe(self.prefix + _IDLE)
            subscribed: set[str] = set()
            await self._resubscribe(pubsub, subscribed)
            self.connected = self._was_connected = True
            if self.reconnects:
                log.info("bus %s connected again, following %d documents", redact(self._url), len(subscribed))
            self.reconnects += 1
            handler.bus_connected()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sender, client)
                tg.start_soon(self._subscriber, pubsub, subscribed)
                await self._reader(pubsub, handler)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await pubsub.aclose()
                finally:
                    await client.aclose()

    async def _resubscribe(self, pubsub, subscribed: set[str]) -> None:
        """Bring ``subscribed`` to the followed set, in batches."""
        wanted = set(self._followed)
        new, gone = wanted - subscribed, subscribed - wanted
        for batch in _batches([self.prefix + d.encode() for d in new]):
            await pubsub.subscribe(*batch)
        for batch in _batches([self.prefix + d.encode() for d in gone]):
            await pubsub.unsubscribe(*batch)
        subscribed.clear()
        subscribed.update(wanted)

    async def _subscriber(self, pubsub, subscribed: set[str]) -> None:
        while True:
            await self._subscription_changed.wait()
            self._subscription_changed = anyio.Event()
            await self._resubscribe(pubsub, subscribed)

    async def _reader(self, pubsub, handler: BusHandler) -> None:
        prefix = self.prefix
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if not channel.startswith(prefix):
                continue
            self.received += 1
            try:
                handler.bus_message(channel[len(prefix):].decode(), message["data"])
            except Exception:
                log.exception("bus: handling a message failed")

    async def _sender(self, client: aioredis.Redis) -> None:
        while True:
            await self._queue_filled.wait()
            self._queue_filled = anyio.Event()
            while self._queue:
                batch, self._queue = self._queue[:500], self._queue[500:]
                self._queued_bytes -= sum(len(payload) for _, payload in batch)
                async with client.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
                self.published += len(batch)

    def _drop_queue(self) -> None:
        self.dropped += len(self._queue)
        self._queue, self._queued_bytes = [], 0


def _connection_trouble(exc: BaseException) -> str | None:
    """What went wrong, if ``exc`` (or every exception in a group) is the
    connection's trouble; None for anything else (a bug: let it raise)."""
    if isinstance(exc, (RedisError, OSError, TimeoutError)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, BaseExceptionGroup):
        inner = [_connection_trouble(e) for e in exc.exceptions]
        return None if any(t is None for t in inner) else inner[0]
    return None


def _batches(items: list[bytes], size: int = 1000) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
