"""Python client for remote backend services (anyio: asyncio or trio).

::

    async with BridgeClient("ws://127.0.0.1:8080/sync", peer="billing") as client:
        doc = await client.open("invoice-42")
        with doc.change() as d:
            d["status"] = "paid"          # str -> collaborative Text, as in JS
        await doc.flush()                 # returns once the server made it durable
        async for heads in doc.updates(): # someone else changed it
            ...

Documents live locally: edits made while the connection is down are kept and
synced after the client reconnects (exponential backoff with jitter). Each
(re)connection starts every document's sync state afresh, as the server's
state for us is new too. Pending flushes are re-sent after a reconnect.
"""

from __future__ import annotations

import itertools
import random
import logging
import secrets
from contextlib import contextmanager
from typing import AsyncIterator, Iterator

import anyio
import httpx
from automerge import core
from automerge.document import MapReadProxy, MapWriteProxy
from httpx_ws import HTTPXWSException, WebSocketDisconnect, aconnect_ws
from wsproto.utilities import LocalProtocolError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from .protocol import native as m
from .protocol.native import CloseCode, ProtocolError
from .core.outbox import Outbox
from .core.sync import BadSyncMessage, DocSync, HashIndex
from .tasks import first_leaf, race

log = logging.getLogger(__name__)

# Close codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = {CloseCode.PROTOCOL, CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.TOO_BIG}


# What ends a connection without making reconnecting pointless.
_TRANSIENT = (
    HTTPXWSException,
    LocalProtocolError,  # sending on a socket that is already closing
    OSError,
    httpx.HTTPError,
    TimeoutError,
    ProtocolError,
    anyio.BrokenResourceError,
)


class BridgeError(Exception):
    """An ``error`` frame from the server, or the client gave up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class _ConnectionLost(Exception):
    pass


class RemoteDoc:
    """A local Automerge document kept in sync with the bridge."""

    def __init__(self, client: BridgeClient, doc_id: str) -> None:
        self.id = doc_id
        self._client = client
        self._doc = core.Document()
        self._sync = DocSync(self._doc)
        self._index = HashIndex(self._doc)
        self.server_durable_heads: list[bytes] | None = None  # from `saved`
        self._changed = anyio.Event()
        self._progress = anyio.Event()  # any sync, saved or error for this doc
        self.error: BridgeError | None = None
        self.closed = False

    @property
    def heads(self) -> list[bytes]:
        return self._doc.get_heads()

    @property
    def root(self) -> MapReadProxy:
        return MapReadProxy(self._doc, core.ROOT, None)

    def to_py(self) -> dict:
        return core.extract(self._doc)

    def has_heads(self, heads: list[bytes]) -> bool:
        return self._index.contains_all(heads)

    @contextmanager
    def change(self) -> Iterator[MapWriteProxy]:
        """Edit in one transaction; it is sent as soon as the link allows."""
        with self._doc.transaction() as tx:
            yield MapWriteProxy(tx, core.ROOT, None)
        self._client._outbox.mark_dirty(self.id)

    async def flush(self, timeout: float | None = None) -> list[bytes]:
        """Return once the server has made every local change durable."""
        return (await self._client._flush({self.id: self.heads}, timeout))[self.id]

    async def updates(self) -> AsyncIterator[list[bytes]]:
        """Yield the heads each time remote changes arrive (coalesced)."""
        while not self.closed:
            await self._changed.wait()
            self._changed = anyio.Event()
            if not self.closed:
                yield self.heads

    async def wait_for(self, heads: list[bytes], timeout: float = 10.0) -> None:
        """Wait until the local document includes ``heads``."""
        with anyio.fail_after(timeout):
            while not self.has_heads(heads):
                await self._wait_progress()

    async def close(self) -> None:
        self.closed = True
        self._changed.set()
        self._client._close_doc(self)

    async def _wait_progress(self) -> None:
        await self._progress.wait()

    def _signal(self, changed: bool) -> None:
        if changed:
            self._changed.set()
        self._progress.set()
        self._progress = anyio.Event()


class BridgeClient:
    def __init__(
        self,
        url: str,
        *,
        peer: str | None = None,
        token: str | None = None,
        flush_timeout: float = 30.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_frame_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.peer = peer or f"py-{secrets.token_hex(4)}"
        self.token = token
        self.flush_timeout = flush_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame_bytes = max_frame_bytes
        self.docs: dict[str, RemoteDoc] = {}
        self.status = "connecting"  # connecting | online | offline | failed
        self.connections = 0  # successful handshakes so far
        self.failure: BridgeError | None = None
        self._outbox = Outbox()
        self._flush_ids = itertools.count(1)
        self._flushes: dict[int, tuple[dict[str, list[bytes]], anyio.Event, list]] = {}
        self._status_changed = anyio.Event()
        self._eph_send, self._eph_receive = anyio.create_memory_object_stream[tuple[str, str, bytes]](1000)
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._ws = None  # the live socket, for diagnostics and tests
        self._supervisor = anyio.CancelScope()

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> BridgeClient:
        self._tg_cm = anyio.create_task_group()
        self._tg = await self._tg_cm.__aenter__()
        self._tg.start_soon(self._supervise)
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            if exc_info[0] is None and self.status != "failed":
                await self.close()
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg_cm.__aexit__(None, None, None)

    async def close(self, timeout: float | None = None) -> None:
        """Flush every document, say ``bye`` and disconnect."""
        if self._closing:
            return
        if self.docs:
            await self._flush({d.id: d.heads for d in self.docs.values()}, timeout)
        self._closing = True
        self._outbox.push(m.encode(m.Bye()))
        with anyio.move_on_after(5):
            while self.status == "online":
                await self._wait_status()
        self._set_status("closed")
        self._supervisor.cancel()

    def abandon(self) -> None:
        """Stop at once without flushing: unsent edits are dropped with this
        object. For shutting down when the server is known to be gone."""
        self._closing = True
        self._set_status("closed")
        self._supervisor.cancel()

    async def wait_online(self, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while self.status != "online":
                if self.failure:
                    raise self.failure
                await self._wait_status()

    async def _wait_status(self) -> None:
        await self._status_changed.wait()

    def _set_status(self, status: str) -> None:
        self.status = status
        self._status_changed.set()
        self._status_changed = anyio.Event()

    # --- documents ----------------------------------------------------------

    async def open(self, doc_id: str, *, timeout: float = 10.0) -> RemoteDoc:
        """Open a document; returns once it holds everything the server had
        durably when it answered (or at once, offline, with local state)."""
        if not m.valid_doc_id(doc_id):
            raise ValueError(f"invalid document id {doc_id!r}")
        if doc_id in self.docs:
            return self.docs[doc_id]
        doc = self.docs[doc_id] = RemoteDoc(self, doc_id)
        if self.status == "online":
            self._send_open(doc)
        with anyio.fail_after(timeout):
            while doc.server_durable_heads is None or not doc.has_heads(doc.server_durable_heads):
                if doc.error:
                    del self.docs[doc_id]
                    raise doc.error
                if self.failure:
                    raise self.failure
                await doc._wait_progress()
        return doc

    def _send_open(self, doc: RemoteDoc) -> None:
        doc._sync.reset()
        doc.server_durable_heads = None
        self._outbox.push(m.encode(m.Open(doc=doc.id)))
        self._outbox.mark_dirty(doc.id)

    def _close_doc(self, doc: RemoteDoc) -> None:
        if self.docs.pop(doc.id, None) is not None:
            self._outbox.forget(doc.id)
            self._outbox.push(m.encode(m.Close(doc=doc.id)))

    def ephemeral(self, doc_id: str, data: bytes) -> None:
        self._outbox.push(m.encode(m.Eph(doc=doc_id, data=data)))

    async def ephemeral_messages(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """Yield ``(doc, from_peer, data)`` for relayed ephemeral messages."""
        async for item in self._eph_receive:
            yield item

    async def _flush(self, docs: dict[str, list[bytes]], timeout: float | None) -> dict[str, list[bytes]]:
        request_id = next(self._flush_ids)
        done = anyio.Event()
        result: list = []
        self._flushes[request_id] = (docs, done, result)
        if self.status == "online":
            self._outbox.push(m.encode(m.Flush(id=request_id, docs=docs)))
        try:
            with anyio.fail_after(timeout or self.flush_timeout):
                await done.wait()
        finally:
            self._flushes.pop(request_id, None)
        if isinstance(result[0], BridgeError):
            raise result[0]
        return result[0]

    # --- connection ---------------------------------------------------------

    async def _supervise(self) -> None:
        with self._supervisor:
            await self._reconnect_forever()

    async def _reconnect_forever(self) -> None:
        while not self._closing:
            retrying = AsyncRetrying(
                sleep=anyio.sleep,
                wait=wait_random_exponential(multiplier=self.backoff_initial, max=self.backoff_max),
                retry=retry_if_exception_type(_ConnectionLost),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._connect_once()
                # The session had been established: come back soon, but not
                # all at once with every other client of a restarting server.
                await anyio.sleep(random.uniform(0, self.backoff_initial))
            except BridgeError as exc:
                self.failure = exc
                self._set_status("failed")
                for _, done, result in self._flushes.values():
                    result.append(exc)
                    done.set()
                for doc in self.docs.values():
                    doc._signal(False)
                return

    async def _connect_once(self) -> None:
        """One connection. Returns after a session that had been established
        ended (so backoff starts afresh); raises _ConnectionLost when it could
        not be established, BridgeError when retrying is pointless."""
        established = False
        try:
            async with httpx.AsyncClient() as http, aconnect_ws(
                self.url, http, max_message_size_bytes=self.max_frame_bytes, keepalive_ping_interval_seconds=20
            ) as ws:
                await ws.send_bytes(
                    m.encode(m.Hello(v=list(m.SUPPORTED_VERSIONS), peer=self.peer, token=self.token, caps=[]))
                )
                with anyio.fail_after(10):
                    welcome = m.decode_server(await ws.receive_bytes())
                if not isinstance(welcome, m.Welcome):
                    raise ProtocolError(f"expected welcome, got {welcome!r}")
                established = True
                self._ws = ws
                self.connections += 1
                # Frames queued for the previous connection are stale: opens
                # and flushes are re-sent below and sync state starts afresh.
                self._outbox = Outbox(self._outbox.max_control)
                for doc in self.docs.values():
                    self._send_open(doc)
                for request_id, (docs, _, _) in self._flushes.items():
                    self._outbox.push(m.encode(m.Flush(id=request_id, docs=docs)))
                self._set_status("online")
                await race(lambda: self._read(ws), lambda: self._outbox.pump(ws.send_bytes, self._sync_frames))
        except Exception as raised:
            exc = first_leaf(raised)
            if isinstance(exc, WebSocketDisconnect) and exc.code in FATAL_CLOSE_CODES:
                raise BridgeError(f"closed_{exc.code}", exc.reason or "connection refused by server") from None
            if not isinstance(exc, _TRANSIENT):
                raise
            log.info("%s: connection ended: %r", self.peer, exc)
        finally:
            if self.status == "online":
                self._set_status("offline")
        if not established:
            raise _ConnectionLost

    def _sync_frames(self, doc_id: str) -> list[bytes]:
        doc = self.docs.get(doc_id)
        if doc is None:
            return []
        return [m.encode(m.Sync(doc=doc_id, data=data)) for data in doc._sync.generate()]

    async def _read(self, ws) -> None:
        while True:
            message = m.decode_server(await ws.receive_bytes())
            if isinstance(message, m.Sync):
                doc = self.docs.get(message.doc)
                if doc is None:
                    continue
                try:
                    changes = doc._sync.receive(message.data)
                except BadSyncMessage as exc:
                    log.error("%s: bad sync message from server for %s: %s", self.peer, message.doc, exc)
                    changes = exc.applied
                self._outbox.mark_dirty(message.doc)
                doc._signal(bool(changes))
            elif isinstance(message, m.Saved):
                if (doc := self.docs.get(message.doc)) is not None:
                    doc.server_durable_heads = message.heads
                    doc._signal(False)
            elif isinstance(message, m.Flushed):
                if (pending := self._flushes.get(message.id)) is not None:
                    pending[2].append(message.docs)
                    pending[1].set()
            elif isinstance(message, m.EphRelay):
                try:
                    self._eph_send.send_nowait((message.doc, message.from_, message.data))
                except anyio.WouldBlock:
                    pass  # presence is best effort: drop when nobody reads
            elif isinstance(message, m.Error):
                self._on_error(message)

    def _on_error(self, message: m.Error) -> None:
        log.warning("%s: server error %s: %s (doc=%s id=%s)", self.peer, message.code, message.msg, message.doc, message.id)
        error = BridgeError(message.code, message.msg)
        if message.id is not None and (pending := self._flushes.get(message.id)) is not None:
            pending[2].append(error)
            pending[1].set()
        elif message.doc is not None and (doc := self.docs.get(message.doc)) is not None:
            doc.error = error
            doc._signal(False)
