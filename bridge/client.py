"""Python client for remote backend services (anyio: asyncio or trio).

::

    async with BridgeClient("ws://127.0.0.1:8080/sync", peer="billing") as client:
        doc = await client.open("invoice-42")
        with doc.change() as d:
            d["status"] = "paid"          # str -> collaborative Text, as in JS
        await doc.flush()                 # returns once the server made it durable
        async for heads in doc.updates(): # someone else changed it
            ...

Documents live locally (offline-first): edits made while the connection is
down are kept and synced after the client reconnects (exponential backoff
with jitter). Each (re)connection starts every document's sync state afresh,
as the server's state for us is new too. Pending flushes are re-sent after a
reconnect.

``client.status`` is the same vocabulary as the browser client's:
``connecting``, ``offline``, ``saving`` (online, some local change is not
known durable yet), ``saved`` (online, everything durable), plus a terminal
``closed`` (after :meth:`BridgeClient.close`, or when the client gave up:
then ``client.failure`` says why).

Errors are the shared tree of :mod:`bridge.errors`: an ``error`` frame
raises the :class:`~bridge.errors.DocError` subclass for its code
(``Forbidden``, ``BadDocId``, ``FlushTimeout``...); a flush not durable in
time raises :class:`~bridge.errors.FlushTimeout`; the client gives up for good
(no more reconnects) on a final HTTP error answering the WebSocket upgrade
(:class:`~bridge.errors.ConnectionRejected`: 3xx and 4xx but 408 and 429;
a 5xx is retried with backoff) and on the fatal close codes
4400, 4401, 4403 and 1009 (:class:`~bridge.errors.ConnectionClosed`). 1001 and
4409 reconnect at once (with jitter), 4429 after the delay in the close
reason (seconds), anything else with backoff.

Authorization: ``token`` is a string, or a *token provider*: a callable
returning the token (or an awaitable of it), called at each (re)connect.
With a provider the client refreshes the token before the server's
``welcome.expires_in`` runs out (an ``auth`` frame on the live connection),
and a close 4401 (token refused or expired) fetches a fresh token and
reconnects once; refused again before a welcome, the client gives up
(:class:`~bridge.errors.ConnectionClosed` 4401). With a static token 4401 is
fatal at once. A document the server opened read-only
(:attr:`RemoteDoc.read_only`) refuses local changes
(:class:`~bridge.errors.ReadOnly`, before touching the local copy). The
token is never logged.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import itertools
import json
import logging
import random
import re
import secrets
import sys
import time
from contextlib import contextmanager
from typing import AsyncIterator, Awaitable, Callable, Iterator, Protocol, Union, get_args

import anyio
import httpx
import msgspec
from automerge import core
from automerge.document import MapReadProxy, MapWriteProxy
from httpx_ws import HTTPXWSException, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from wsproto.utilities import LocalProtocolError

from .core.outbox import Outbox, OutboxOverflow
from .core.sync import BadSyncMessage, DocSync, HashIndex
from .errors import (
    BridgeError,
    CloseCode,
    ConnectionClosed,
    ConnectionRejected,
    DocError,
    FlushTimeout,
    Forbidden,
    NotFound,
    ProtocolError,
    ReadOnly,
)
from .protocol import native as m
from .tasks import first_leaf, race

__all__ = [
    "BridgeClient",
    "BridgeError",
    "ConnectionClosed",
    "ConnectionRejected",
    "DocError",
    "FlushTimeout",
    "PendingFlush",
    "ReadOnly",
    "RemoteDoc",
    "TokenProvider",
]

log = logging.getLogger(__name__)

Heads = list[bytes]

# Close codes after which reconnecting cannot help (the browser client's too).
FATAL_CLOSE_CODES = CloseCode.FATAL
# Close codes after which coming back at once is right: the server restarts,
# or we fell behind and resync from scratch.
QUICK_RECONNECT_CODES = frozenset({CloseCode.GOING_AWAY, CloseCode.TOO_SLOW})
# A 4429 reason carries the delay in seconds; honoured up to this bound.
MAX_RATE_LIMIT_DELAY = 600.0
# A session shorter than this does not reset the backoff: a server that
# welcomes and then drops us every time must not be hammered.
STABLE_SESSION_SECONDS = 1.0

# A token is refreshed at max(lifetime - REFRESH_MARGIN, lifetime * REFRESH_FRACTION)
# after it was handed over; refreshes of a token provider that hands out
# short-lived (or cached, nearly expired) tokens are at least
# min(MIN_REFRESH_INTERVAL, the first refresh delay) apart, and a provider that
# failed is asked again after that long.
REFRESH_MARGIN = 30.0
REFRESH_FRACTION = 0.8
MIN_REFRESH_INTERVAL = 1.0

# A token, or what the client calls for a fresh one at each (re)connect and
# before the current one expires.
TokenProvider = Callable[[], Union[str, Awaitable[str]]]

# What ends a connection without making reconnecting pointless.
_TRANSIENT = (
    HTTPXWSException,
    LocalProtocolError,  # sending on a socket that is already closing
    OSError,
    httpx.HTTPError,
    TimeoutError,
    ProtocolError,  # the server sent something we cannot read: reconnect, with backoff
    OutboxOverflow,
    anyio.BrokenResourceError,
)


# --- lenient decoding of server frames --------------------------------------

_SERVER_TAGS = frozenset(cls.__struct_config__.tag for cls in get_args(m.ServerMessage))


class _Envelope(msgspec.Struct):
    t: object = None


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_TRUSTED_RECURSION_LIMIT = 10_000  # as in bridge.protocol.native


def decode_server_frame(frame: bytes) -> m.ServerMessage | None:
    """Decode a server frame; ``None`` for a message type this client does
    not know (forward compatibility: a newer server may send more types, and
    they are ignored, as unknown fields are). Anything else that does not
    decode raises :class:`ProtocolError`."""
    try:
        return m.decode_server(frame)
    except ProtocolError:
        if _has_unknown_type(frame):
            return None
        raise


def _has_unknown_type(frame: bytes) -> bool:
    if sys.getrecursionlimit() > _TRUSTED_RECURSION_LIMIT and m.nesting_exceeds(frame):
        return False
    try:
        t = _envelope_decoder.decode(frame).t
    except Exception:  # not a map, malformed MessagePack...: a bad frame
        return False
    return isinstance(t, str) and t not in _SERVER_TAGS


# --- tokens -------------------------------------------------------------------


def refresh_delay(lifetime: float) -> float:
    """When to refresh a token that expires in ``lifetime`` seconds."""
    return max(0.0, lifetime - REFRESH_MARGIN, lifetime * REFRESH_FRACTION)


def _token_exp(token: str | None) -> float | None:
    """The ``exp`` claim of a JWT, read without checking anything (only to
    schedule the next refresh; the server judges the token). None for
    anything else."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


_TOKEN_IN_URL = re.compile(r"(?i)(token=)[^&#\s'\"]+")


class _Scrubber:
    """Keeps tokens out of log lines (a token on the URL, or a provider's)."""

    KEEP = 4  # the latest tokens: one in use, one being handed over, and some slack

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def remember(self, token: str | None) -> None:
        if token and token not in self.secrets:
            self.secrets = [*self.secrets[-(self.KEEP - 1) :], token]

    def __call__(self, text: object) -> str:
        text = _TOKEN_IN_URL.sub(r"\1***", str(text))
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


# --- the interface between documents and their client -----------------------


class DocHost(Protocol):
    """What a :class:`RemoteDoc` needs from its client (internal)."""

    @property
    def failure(self) -> BridgeError | None:
        """Why the client gave up for good, if it did."""

    def changed(self, doc: RemoteDoc) -> None:
        """A local change was made: send it when the link allows."""

    async def flush(self, docs: dict[str, Heads], timeout: float | None) -> dict[str, Heads]:
        """Wait until the server has made ``docs`` durable."""

    def release(self, doc: RemoteDoc) -> None:
        """The document was closed: stop syncing it."""


class PendingFlush:
    """One ``flush`` request: re-sent after each reconnect until answered."""

    def __init__(self, request_id: int, docs: dict[str, Heads]) -> None:
        self.id = request_id
        self.docs = docs
        self.result: dict[str, Heads] | None = None
        self.error: BridgeError | None = None
        self._done = anyio.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def frame(self) -> bytes:
        return m.encode(m.Flush(id=self.id, docs=self.docs))

    def resolve(self, docs: dict[str, Heads]) -> None:
        if not self.done:
            self.result = docs
            self._done.set()

    def fail(self, error: BridgeError) -> None:
        if not self.done:
            self.error = error
            self._done.set()

    async def wait(self, timeout: float) -> dict[str, Heads]:
        with anyio.move_on_after(timeout):
            await self._done.wait()
        if not self.done:
            doc = next(iter(self.docs)) if len(self.docs) == 1 else None
            raise FlushTimeout(f"not durable within {timeout:g} s", doc=doc, request=self.id)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _GiveUp(Exception):
    """Raised inside a connection attempt when reconnecting is pointless."""

    def __init__(self, error: BridgeError) -> None:
        super().__init__(str(error))
        self.error = error


class RemoteDoc:
    """A local Automerge document kept in sync with the bridge."""

    def __init__(self, host: DocHost, doc_id: str) -> None:
        self.id = doc_id
        self._host = host
        self._doc = core.Document()
        self._sync = DocSync(self._doc)
        self._index = HashIndex(self._doc)
        self.server_durable_heads: Heads | None = None  # from `saved`, on this connection
        self._durable: set[bytes] = set()  # heads the server said are durable (saved + flushed)
        self._target: Heads | None = None  # heads of the latest local change not known durable
        self._changed = anyio.Event()
        self._progress = anyio.Event()  # any sync, saved, error, or client state change
        self.error: DocError | None = None
        self.closed = False
        # What the server lets this client do with the document ("read" or
        # "write"), from its latest `opened`; None until one arrives (servers
        # that predate it never send one). Kept across reconnects until the
        # next `opened` says otherwise: a change must not slip in meanwhile.
        self.access: str | None = None

    # --- reading ------------------------------------------------------------

    @property
    def heads(self) -> Heads:
        return self._doc.get_heads()

    @property
    def root(self) -> MapReadProxy:
        return MapReadProxy(self._doc, core.ROOT, None)

    def to_py(self) -> dict:
        return core.extract(self._doc)

    def has_heads(self, heads: Heads) -> bool:
        return self._index.contains_all(heads)

    @property
    def synced(self) -> bool:
        """True once this connection's initial sync finished: the document
        holds everything the server had durably when it answered ``open``."""
        return self.server_durable_heads is not None and self.has_heads(self.server_durable_heads)

    @property
    def unsaved(self) -> bool:
        """True while some local change is not known durable on the server."""
        return self._target is not None

    @property
    def read_only(self) -> bool:
        """True when the server opened the document read-only for this
        client: :meth:`change` raises :class:`~bridge.errors.ReadOnly`."""
        return self.access == "read"

    # --- writing ------------------------------------------------------------

    @contextmanager
    def change(self) -> Iterator[MapWriteProxy]:
        """Edit in one transaction; it is sent as soon as the link allows.

        Raises :class:`~bridge.errors.ReadOnly` on a read-only document,
        before anything is changed (the local copy does not diverge)."""
        if self.read_only:
            raise ReadOnly(f"{self.id} is read-only for this client", doc=self.id)
        before = self.heads
        with self._doc.transaction() as tx:
            yield MapWriteProxy(tx, core.ROOT, None)
        heads = self.heads
        if heads != before:
            self._target = heads
        self._host.changed(self)

    async def flush(self, timeout: float | None = None) -> Heads:
        """Return once the server has made every local change durable.

        Survives reconnects; raises :class:`~bridge.errors.FlushTimeout`
        after ``timeout`` (default: the client's ``flush_timeout``), and
        :class:`~bridge.errors.ReadOnly` / :class:`~bridge.errors.Forbidden`
        when the server refused this document's changes / access. On a
        read-only document it returns the server's durable heads at once
        (there is nothing of ours to wait for)."""
        self._raise_access_error()
        heads = (await self._host.flush({self.id: self.heads}, timeout))[self.id]
        self._raise_access_error()
        return heads

    def _raise_access_error(self) -> None:
        if self.read_only and self.unsaved and self.error is None:
            # Changes made before the server said "read" (offline, or before
            # an `auth` took write access away): they will never be durable.
            self.refused(ReadOnly(f"{self.id} is read-only: local changes were not accepted", doc=self.id))
        if isinstance(self.error, (ReadOnly, Forbidden)):
            raise self.error

    # --- waiting ------------------------------------------------------------

    async def updates(self) -> AsyncIterator[Heads]:
        """Yield the heads each time remote changes arrive (coalesced)."""
        while not self.closed:
            await self._changed.wait()
            self._changed = anyio.Event()
            if not self.closed:
                yield self.heads

    async def wait_for(self, heads: Heads, timeout: float = 10.0) -> None:
        """Wait until the local document includes ``heads``."""
        with anyio.fail_after(timeout):
            while not self.has_heads(heads):
                await self._progress.wait()

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait until the document holds everything the server had durably
        (the initial sync of the current connection), however long the
        client stays offline meanwhile. For a document :meth:`BridgeClient.open`
        returned while offline. Raises TimeoutError, the document's
        :class:`~bridge.errors.DocError`, or the client's failure."""
        with anyio.fail_after(timeout):
            while not self.synced:
                self.raise_if_failed()
                await self._progress.wait()

    async def close(self) -> None:
        self.closed = True
        self._changed.set()
        self._host.release(self)

    async def progress(self) -> None:
        """Return at the next sync, saved, error or change of the client's state."""
        await self._progress.wait()

    def raise_if_failed(self) -> None:
        """Raise the document's refusal or the client's failure, if any."""
        if self.error is not None:
            raise self.error
        if self._host.failure is not None:
            raise self._host.failure

    # --- called by BridgeClient (its side of the interface) ------------------

    def session_started(self) -> None:
        """A new connection: the server's sync state for us is new, start over."""
        self._sync.reset()
        self.server_durable_heads = None

    def outgoing_sync(self) -> list[bytes]:
        """Sync messages the server needs now."""
        return self._sync.generate()

    def incoming_sync(self, data: bytes) -> None:
        """Apply a sync message from the server."""
        try:
            changes = self._sync.receive(data)
        except BadSyncMessage as exc:
            log.error("bad sync message from server for %s: %s", self.id, exc)
            changes = exc.applied
        self.wake(changed=bool(changes))

    def saved(self, heads: Heads) -> None:
        """The server's durable heads for this document advanced."""
        self.server_durable_heads = heads
        self._durable = set(heads)
        self._recheck()
        self.wake()

    def flushed(self, heads: Heads) -> None:
        """The server answered a flush: ``heads`` are durable."""
        self._durable.update(heads)
        self._recheck()
        self.wake()

    def refused(self, error: DocError) -> None:
        """An ``error`` frame about this document."""
        if isinstance(self.error, Forbidden) and not isinstance(error, Forbidden):
            return  # closed to us (an `auth` took read access away): what follows is its echo (not_open...)
        self.error = error
        self.wake()

    def opened(self, access: str) -> None:
        """The server opened the document (again) with this access: a refusal
        it no longer stands by (forbidden; read_only, now that we may write)
        is forgotten."""
        self.access = access
        if isinstance(self.error, Forbidden) or (isinstance(self.error, ReadOnly) and access != "read"):
            self.error = None
        self.wake()

    def wake(self, changed: bool = False) -> None:
        """Something happened that waiters may be waiting for."""
        if changed:
            self._changed.set()
        self._progress.set()
        self._progress = anyio.Event()

    def _recheck(self) -> None:
        if self._target is not None and self._covered(self._target):
            self._target = None

    def _covered(self, heads: Heads) -> bool:
        """Whether every change up to ``heads`` is in the durable history."""
        if all(h in self._durable for h in heads):
            return True
        known = [h for h in self._durable if self._index.contains_all([h])]
        if not known:
            return False
        not_durable = {change.hash for change in self._doc.get_changes(known)}
        return not any(h in not_durable for h in heads)


class _Link:
    """The client's side of :class:`DocHost`, handed to its documents."""

    def __init__(self, client: BridgeClient) -> None:
        self._client = client

    @property
    def failure(self) -> BridgeError | None:
        return self._client.failure

    def changed(self, doc: RemoteDoc) -> None:
        self._client._doc_changed(doc)

    async def flush(self, docs: dict[str, Heads], timeout: float | None) -> dict[str, Heads]:
        return await self._client._request_flush(docs, timeout)

    def release(self, doc: RemoteDoc) -> None:
        self._client._release(doc)


class BridgeClient:
    def __init__(
        self,
        url: str,
        *,
        peer: str | None = None,
        token: str | TokenProvider | None = None,
        flush_timeout: float = 30.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_frame_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.peer = peer or f"py-{secrets.token_hex(4)}"
        self.token = token  # as given: a string, a token provider, or None
        self.flush_timeout = flush_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame_bytes = max_frame_bytes
        self.docs: dict[str, RemoteDoc] = {}
        self.status = "connecting"  # connecting | offline | saving | saved | closed
        self.connections = 0  # successful handshakes so far
        self.failure: BridgeError | None = None  # why the client gave up, if it did
        self.session: str | None = None  # the server's session id, from the latest welcome
        self.identity: str | None = None  # who the server takes us for (welcome.identity)
        self._scrub = _Scrubber()
        self._unauthorized_retry = False  # a 4401 spent the one retry: until a welcome, 4401 is fatal
        self._link = _Link(self)
        self._state = "connecting"  # the connection: connecting | online | offline | closed
        self._outbox = Outbox()
        self._flush_ids = itertools.count(1)
        self._flushes: dict[int, PendingFlush] = {}
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
            if exc_info[0] is None and self.failure is None:
                await self.close()
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg_cm.__aexit__(None, None, None)

    @property
    def online(self) -> bool:
        """Connected and welcomed."""
        return self._state == "online"

    async def close(self, timeout: float | None = None) -> None:
        """Flush every document, say ``bye`` and disconnect (status ``closed``).

        Raises :class:`~bridge.errors.FlushTimeout` if the documents are not
        durable in time (the client stays open then)."""
        if self._closing:
            return
        # Read-only documents have nothing of ours to flush; closed (forbidden)
        # and deleted (not_found) ones cannot be.
        writable = {d.id: d.heads for d in self.docs.values()
                    if not d.read_only and not isinstance(d.error, (Forbidden, NotFound))}
        if writable and self.failure is None:
            await self._request_flush(writable, timeout)
        self._closing = True
        self._outbox.push(m.encode(m.Bye()))
        with anyio.move_on_after(5):
            while self._state == "online":
                await self._status_changed.wait()
        self._shut()

    def abandon(self) -> None:
        """Stop at once without flushing: unsent edits are dropped with this
        object. For shutting down when the server is known to be gone."""
        self._closing = True
        self._shut()

    def _shut(self) -> None:
        self._set_state("closed")
        closed = BridgeError("the client is closed", code="closed")
        for pending in list(self._flushes.values()):
            pending.fail(closed)
        self._supervisor.cancel()

    async def wait_online(self, timeout: float = 10.0) -> None:
        """Wait until connected; raises the client's failure if it gave up
        (:class:`~bridge.errors.ConnectionRejected`,
        :class:`~bridge.errors.ConnectionClosed`), TimeoutError otherwise."""
        with anyio.fail_after(timeout):
            while self._state != "online":
                if self.failure:
                    raise self.failure
                if self._state == "closed":
                    raise BridgeError("the client is closed", code="closed")
                await self._status_changed.wait()

    def _set_state(self, state: str) -> None:
        if self._state == "closed":
            return
        self._state = state
        self._update_status()
        for doc in self.docs.values():
            doc.wake()

    def _update_status(self) -> None:
        if self._state == "closed" and self.failure is not None:
            status = "failed"  # gave up for good (as the TS client says)
        elif self._state != "online":
            status = self._state
        else:
            status = "saving" if any(doc.unsaved for doc in self.docs.values()) else "saved"
        if status != self.status:
            self.status = status
        # Waiters re-check their own condition: wake them on every change of
        # the connection state too (online -> online is not a change, though).
        self._status_changed.set()
        self._status_changed = anyio.Event()

    # --- documents ----------------------------------------------------------

    async def open(self, doc_id: str, *, timeout: float = 10.0) -> RemoteDoc:
        """Open a document (created on the server on first open).

        Online, returns once the document holds everything the server had
        durably when it answered. Offline (the server could not be reached,
        or the connection dropped while waiting) it returns at once with the
        local state — empty for a document this client has not opened before
        — and syncs when the connection comes back: the client is
        offline-first, edits made meanwhile are kept and sent then. A caller
        that needs the server's content checks ``doc.synced`` or awaits
        ``doc.wait_synced()`` (or ``client.wait_online()`` before opening).

        When the server says how the document is open (``opened``, before
        its first ``saved``), :attr:`RemoteDoc.read_only` is set by the time
        this returns online.

        Raises the :class:`~bridge.errors.DocError` for a refusal
        (``Forbidden``, ``NotFound``, ``QuotaExceeded``, ``BadDocId``...),
        the client's failure if it gave up
        (``ConnectionRejected``, ``ConnectionClosed``), and TimeoutError if
        the initial sync does not finish within ``timeout`` while connected
        (or while the first connection attempt is still under way).
        """
        if not m.valid_doc_id(doc_id):
            raise ValueError(f"invalid document id {doc_id!r}")
        if self.failure:
            raise self.failure
        if self._state == "closed":
            raise BridgeError("the client is closed", code="closed")
        if doc_id in self.docs:
            return self.docs[doc_id]
        doc = self.docs[doc_id] = RemoteDoc(self._link, doc_id)
        if self._state == "online":
            self._send_open(doc)
        with anyio.fail_after(timeout):
            while not doc.synced:
                try:
                    doc.raise_if_failed()
                except BridgeError:
                    if self.docs.get(doc_id) is doc:
                        del self.docs[doc_id]
                    raise
                if self._state == "offline":
                    break  # offline-first: the local state, synced later
                await doc.progress()
        return doc

    def _send_open(self, doc: RemoteDoc) -> None:
        doc.session_started()
        self._outbox.push(m.encode(m.Open(doc=doc.id)))
        self._outbox.mark_dirty(doc.id)

    def _doc_changed(self, doc: RemoteDoc) -> None:
        self._outbox.mark_dirty(doc.id)
        self._update_status()

    def _release(self, doc: RemoteDoc) -> None:
        if self.docs.get(doc.id) is doc:
            del self.docs[doc.id]
            self._outbox.forget(doc.id)
            self._outbox.push(m.encode(m.Close(doc=doc.id)))
            self._update_status()

    def ephemeral(self, doc_id: str, data: bytes) -> None:
        self._outbox.push(m.encode(m.Eph(doc=doc_id, data=data)))

    async def ephemeral_messages(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """Yield ``(doc, from_peer, data)`` for relayed ephemeral messages."""
        async for item in self._eph_receive:
            yield item

    async def _request_flush(self, docs: dict[str, Heads], timeout: float | None) -> dict[str, Heads]:
        if self.failure:
            raise self.failure
        if self._state == "closed":
            raise BridgeError("the client is closed", code="closed")
        pending = PendingFlush(next(self._flush_ids), docs)
        self._flushes[pending.id] = pending
        if self._state == "online":
            self._outbox.push(pending.frame())
        try:
            return await pending.wait(timeout or self.flush_timeout)
        finally:
            self._flushes.pop(pending.id, None)

    # --- connection ---------------------------------------------------------

    async def _supervise(self) -> None:
        with self._supervisor:
            await self._reconnect_forever()

    async def _reconnect_forever(self) -> None:
        attempt = 0  # failed attempts since the last stable session
        while not self._closing:
            self._set_state("connecting")
            started = time.monotonic()
            try:
                established, close_code, reason = await self._connect_once()
            except _GiveUp as give_up:
                self._give_up(give_up.error)
                return
            self._set_state("offline")
            if self._closing:
                return
            stable = established and time.monotonic() - started >= STABLE_SESSION_SECONDS
            if established and (stable or close_code in QUICK_RECONNECT_CODES):
                attempt = 0
            await anyio.sleep(self._reconnect_delay(attempt, established, close_code, reason))
            attempt += 1

    def _reconnect_delay(self, attempt: int, established: bool, close_code: int | None, reason: str) -> float:
        if close_code == CloseCode.UNAUTHORIZED:
            return random.uniform(0, self.backoff_initial)  # the one retry with a fresh token
        if close_code == CloseCode.RATE_LIMITED:
            found = re.search(r"\d+(?:\.\d+)?", reason)
            if found:
                return min(float(found.group()), MAX_RATE_LIMIT_DELAY) + random.uniform(0, self.backoff_initial)
        if attempt == 0 and established:
            # The session had been established: come back soon, but not all
            # at once with every other client of a restarting server.
            return random.uniform(0, self.backoff_initial)
        return random.uniform(0, min(self.backoff_max, self.backoff_initial * 2 ** min(attempt + 1, 32)))

    def _give_up(self, error: BridgeError) -> None:
        log.error("%s: giving up: %s", self.peer, self._scrub(error))
        self.failure = error
        for pending in list(self._flushes.values()):
            pending.fail(error)
        self._set_state("closed")

    async def _connect_once(self) -> tuple[bool, int | None, str]:
        """One connection, until it ends. Returns (whether the session had
        been established, the server's close code if it closed, its reason);
        raises _GiveUp when reconnecting is pointless."""
        established = False
        try:
            token = await self._fetch_token()
        except Exception as exc:  # the provider's own failure: try again later, with backoff
            log.warning("%s: the token provider failed: %s", self.peer, self._scrub(repr(exc)))
            return False, None, ""
        try:
            async with httpx.AsyncClient() as http, aconnect_ws(
                self.url, http, max_message_size_bytes=self.max_frame_bytes, keepalive_ping_interval_seconds=20
            ) as ws:
                await ws.send_bytes(m.encode(m.Hello(v=list(m.SUPPORTED_VERSIONS), peer=self.peer, token=token, caps=[])))
                with anyio.fail_after(10):
                    welcome = await self._handshake(ws)
                if welcome.v not in m.SUPPORTED_VERSIONS:
                    raise _GiveUp(BridgeError(f"the server speaks protocol v{welcome.v}", code="version"))
                established = True
                self._unauthorized_retry = False  # the token was taken: a later 4401 may retry once more
                self._ws = ws
                self.connections += 1
                self.session = welcome.session
                self.identity = welcome.identity
                # Frames queued for the previous connection are stale: opens
                # and flushes are re-sent below and sync state starts afresh.
                self._outbox = Outbox(self._outbox.max_control)
                for doc in self.docs.values():
                    self._send_open(doc)
                for pending in self._flushes.values():
                    self._outbox.push(pending.frame())
                self._set_state("online")
                tasks = [lambda: self._read(ws), lambda: self._outbox.pump(ws.send_bytes, self._sync_frames)]
                if welcome.expires_in is not None:
                    if callable(self.token):
                        tasks.append(lambda: self._refresh_token(welcome.expires_in, token))
                    else:
                        log.info(
                            "%s: the token expires in %g s and there is no token provider to refresh it",
                            self.peer,
                            welcome.expires_in,
                        )
                await race(*tasks)
        except Exception as raised:
            exc = first_leaf(raised)
            if isinstance(exc, _GiveUp):
                raise exc from None
            if isinstance(exc, WebSocketUpgradeError):
                status = exc.response.status_code
                if ConnectionRejected.is_final(status):
                    raise _GiveUp(ConnectionRejected(status)) from None
                log.info("%s: the server answered the upgrade with HTTP %d: retrying with backoff", self.peer, status)
                return established, None, ""
            if isinstance(exc, WebSocketDisconnect):
                reason = self._scrub(exc.reason or "")
                if exc.code == CloseCode.UNAUTHORIZED and callable(self.token) and not self._unauthorized_retry:
                    # Refused or expired: one more try with a fresh token
                    # from the provider; refused again before a welcome, fatal.
                    self._unauthorized_retry = True
                    log.info("%s: token refused (4401 %s): reconnecting with a fresh one", self.peer, reason)
                    return established, exc.code, reason
                if exc.code in FATAL_CLOSE_CODES:
                    raise _GiveUp(ConnectionClosed(exc.code, reason)) from None
                log.info("%s: connection closed by the server: %s %s", self.peer, exc.code, reason)
                return established, exc.code, reason
            if not isinstance(exc, _TRANSIENT):
                raise
            if isinstance(exc, ProtocolError):
                log.warning("%s: bad frame from the server: %s", self.peer, exc)
                established = False  # no reset of the backoff for this one
            else:
                log.info("%s: connection ended: %s", self.peer, self._scrub(repr(exc)))
        finally:
            self._ws = None
        return established, None, ""

    async def _fetch_token(self) -> str | None:
        """The token for the next hello (or auth): the static one, or the provider's."""
        if not callable(self.token):
            self._scrub.remember(self.token)
            return self.token
        token = self.token()
        if inspect.isawaitable(token):
            token = await token
        if token is not None and not isinstance(token, str):
            raise TypeError(f"the token provider returned {type(token).__name__}, not a str")
        self._scrub.remember(token)
        return token

    async def _refresh_token(self, expires_in: float, token: str | None) -> None:
        """Hand the server a fresh token before the current one expires, for
        as long as the connection lasts (cancelled with it). The server does
        not answer an accepted ``auth``; it closes 4401 when it refuses one."""
        # The server's expires_in is relative (no clock skew); later tokens'
        # lifetimes come from their `exp` claim if they are JWTs, corrected by
        # the skew seen on this one, else are assumed to be as long as this one.
        exp = _token_exp(token)
        skew = (exp - time.time()) - expires_in if exp is not None else 0.0
        lifetime = expires_in
        delay = refresh_delay(expires_in)
        # However short-lived (or stale) the provider's next tokens look,
        # refreshes are no closer together than the first one (nor than
        # MIN_REFRESH_INTERVAL, for a token that lives long).
        floor = max(0.1, min(MIN_REFRESH_INTERVAL, delay))
        while True:
            await anyio.sleep(delay)
            try:
                fresh = await self._fetch_token()
            except Exception as exc:
                log.warning("%s: the token provider failed: %s; asking again", self.peer, self._scrub(repr(exc)))
                delay = floor
                continue
            if not fresh:
                log.warning("%s: the token provider gave no token; asking again", self.peer)
                delay = floor
                continue
            self._outbox.push(m.encode(m.Auth(token=fresh)))
            log.debug("%s: token refreshed", self.peer)
            exp = _token_exp(fresh)
            remaining = exp - time.time() - skew if exp is not None else lifetime
            delay = max(refresh_delay(remaining), floor)

    async def _handshake(self, ws) -> m.Welcome:
        while True:
            message = decode_server_frame(await ws.receive_bytes())
            if message is None:
                continue  # a message type from the future
            if isinstance(message, m.Welcome):
                return message
            if isinstance(message, m.Error):
                self._on_error(message)
                continue
            raise ProtocolError(f"expected welcome, got {message!r}")

    def _sync_frames(self, doc_id: str) -> list[bytes]:
        doc = self.docs.get(doc_id)
        if doc is None or isinstance(doc.error, Forbidden):
            return []  # not open on the server (any more)
        return [m.encode(m.Sync(doc=doc_id, data=data)) for data in doc.outgoing_sync()]

    async def _read(self, ws) -> None:
        while True:
            message = decode_server_frame(await ws.receive_bytes())
            if message is None:
                log.debug("%s: ignored a message of unknown type from the server", self.peer)
            elif isinstance(message, m.Sync):
                if (doc := self.docs.get(message.doc)) is not None:
                    doc.incoming_sync(message.data)
                    self._outbox.mark_dirty(message.doc)
            elif isinstance(message, m.Saved):
                if (doc := self.docs.get(message.doc)) is not None:
                    doc.saved(message.heads)
                    self._update_status()
            elif isinstance(message, m.Flushed):
                if (pending := self._flushes.get(message.id)) is not None:
                    pending.resolve(message.docs)
                for doc_id, heads in message.docs.items():
                    if (doc := self.docs.get(doc_id)) is not None:
                        doc.flushed(heads)
                self._update_status()
            elif isinstance(message, m.EphRelay):
                try:
                    self._eph_send.send_nowait((message.doc, message.from_, message.data))
                except anyio.WouldBlock:
                    pass  # presence is best effort: drop when nobody reads
            elif isinstance(message, m.Opened):
                if (doc := self.docs.get(message.doc)) is not None:
                    refused = isinstance(doc.error, ReadOnly)
                    doc.opened(message.access)
                    if refused and doc.error is None and doc.unsaved:
                        # Write access came back (an `auth` refresh): the
                        # server dropped our changes, and both sync states
                        # think them sent; open again to start over, sending them.
                        self._send_open(doc)
            elif isinstance(message, m.Error):
                self._on_error(message)
            # A Welcome mid-session is ignored.

    def _on_error(self, message: m.Error) -> None:
        log.warning("%s: server error %s: %s (doc=%s id=%s)", self.peer, message.code, message.msg, message.doc, message.id)
        error = DocError.of(message.code, message.msg, message.doc, message.id)
        if message.id is not None and (pending := self._flushes.get(message.id)) is not None:
            pending.fail(error)
        elif message.doc is not None and (doc := self.docs.get(message.doc)) is not None:
            doc.refused(error)
            if isinstance(error, (ReadOnly, Forbidden)):
                # Our changes were refused (or the document closed to us):
                # flushes waiting on them would only run out their time.
                for pending in list(self._flushes.values()):
                    if message.doc in pending.docs:
                        pending.fail(error)
