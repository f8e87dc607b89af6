"""One peer of the bridge, sans-IO: the protocol without the socket.

:class:`PeerSession` is what h11's ``Connection`` is to HTTP: it never awaits
and never touches a socket. The pump (:mod:`bridge.server.ws`) feeds it
*events* through one method, :meth:`PeerSession.handle`, and performs the
*effects* it returns::

    effects = session.handle(FrameReceived(data))

Events (what happened)             Effects (what to do)
---------------------------------  -------------------------------------------
Connected()                        StartTimer(name, seconds) / CancelTimer(name)
FrameReceived(data)                Send(frame): write now, ahead of the outbox
TimerFired(name)                   Close(code, reason): close the connection
Authenticated(principal | None)    Authenticate(hello): run the auth hook,
DocOpened(doc_id, live)              answer Authenticated
DocOpenFailed(doc_id, error)       Subscribe(doc_id): await hub.subscribe(doc_id,
FlushDurable(wait)                   session), answer DocOpened / DocOpenFailed
FlushTimedOut(wait)                WaitDurable(id, docs, heads, timeout): wait
RecoveryFinished(wait)               (bounded) until the heads are durable, answer
OutboxOverflowed()                   FlushDurable / FlushTimedOut
Poll()                             WaitForRecovery(doc_id, done, retry): wait for
GoingAway()                          a document's reload, answer RecoveryFinished
Disconnected()
                                   Pause(seconds): read the next frame no sooner

``Authenticate``, ``Subscribe`` and ``WaitForRecovery`` *gate* the frame
order: the session answers nothing else until their result comes back (a
frame fed meanwhile is held and replayed afterwards), so the pump reads the
next frame only after feeding the result. ``WaitDurable`` runs beside
everything else: a flush never holds up the frames behind it.

Everything else the session sends goes into its :class:`~bridge.core.outbox.Outbox`
(``session.outbox``), drained by the pump's writer: control frames in order,
the latest ``saved`` per document, and sync messages pulled from
:meth:`PeerSession.sync_frames` when the socket can take one. A peer that lets
``max_outbox`` control frames pile up is closed with 4409.

The session is also the :class:`~bridge.hub.Subscriber` the hub calls:
``doc_changed``, ``doc_saved``, ``doc_reloaded`` and ``ephemeral`` stay
synchronous and only touch the outbox — except that the coalesced ``saved``
for other peers' commits needs a timer: such effects are queued, the pump is
asked to ``Poll()`` (through ``session.wakeup``), and every ``handle`` returns
them. Synchronous hub calls (``accept``, ``unsubscribe``, ``relay_ephemeral``,
``damaged``) are made directly: they never wait.

Rate limits: every frame received is charged to two token buckets (frames/s
and bytes/s, :class:`~bridge.config.Limits`), *before* anything else looks at
it. A peer over either one is closed with ``Close(4429, "retry after N s: over
...")`` and nothing it sent afterwards is handled. The buckets come from the
app's :class:`~bridge.core.ratelimit.ClientLedger` at the welcome and go back
to it at the end, so a client's next connection inherits what this one owed
(one that connects while still in debt is closed with 4429 at its welcome).
The time each frame took to handle is charged to the client's share of the
event loop; a client over its share gets ``Pause(seconds)``: the pump reads
its next frame only after that. The session never reads the time itself: it
asks its ``clock`` (``time.monotonic`` unless a test passes a fake one), so
the decision stays deterministic.

Relayed ``eph`` frames are latest-state: the outbox keeps only the newest one
per (document, sender), so a flooding sender can never fill a bystander's
control queue (and get the *bystander* closed with 4409); the sender runs
into its own rate limit instead.

A fatal protocol violation becomes ``Close(code, reason)``; an exception that
escapes ``handle`` is a bug of the bridge, and the pump closes with 1011.
"""

from __future__ import annotations

import logging

from ..logs import doc_extra, get_logger
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Union

from ..auth import READ, WRITE, Principal, quota_key
from ..config import Limits
from ..core.binding import CoreFailure
from ..core.outbox import Outbox
from ..core.ratelimit import Allowance, ClientLedger
from ..core.sync import BadSyncMessage, DocSync
from ..errors import CloseCode, ErrorCode, ProtocolError, QuotaExceeded
from ..hub import DocNotFound, DocUnavailable, Hub, LiveDoc
from ..protocol import native as m

log = get_logger(__name__)

HANDSHAKE = "handshake"  # timer: no hello in time
EXPIRY = "expiry"  # timer: the principal's token expires
EPH = "eph"  # timer: the window in which relayed presence is coalesced
SAVED = "saved"  # timer: send the coalesced `saved` heads of others' commits

BAD_DOC_ID_TEXT = "document ids are 1-256 chars of [A-Za-z0-9._:~-]"


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The socket was accepted."""


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """One binary frame, already checked for size by the pump."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The auth hook's verdict: None refuses (4401)."""

    principal: Principal | None


@dataclass(frozen=True, slots=True)
class DocOpened:
    doc_id: str
    live: LiveDoc


@dataclass(frozen=True, slots=True)
class DocOpenFailed:
    doc_id: str
    error: BaseException  # DocNotFound, DocUnavailable or QuotaExceeded; anything else is a bug


@dataclass(frozen=True, slots=True)
class FlushDurable:
    wait: "WaitDurable"


@dataclass(frozen=True, slots=True)
class FlushTimedOut:
    wait: "WaitDurable"


@dataclass(frozen=True, slots=True)
class RecoveryFinished:
    wait: "WaitForRecovery"


@dataclass(frozen=True, slots=True)
class OutboxOverflowed:
    """The writer found the outbox overflowed (by a hub callback)."""


@dataclass(frozen=True, slots=True)
class Poll:
    """The session asked for attention (``wakeup``): collect queued effects."""


@dataclass(frozen=True, slots=True)
class GoingAway:
    """The server is shutting down. The pump has stopped reading, and what
    the peer sent is committed and answered: close 1001 (reconnect)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is over (either side): let go of every document."""


Event = Union[
    Connected, FrameReceived, TimerFired, Authenticated, DocOpened, DocOpenFailed,
    FlushDurable, FlushTimedOut, RecoveryFinished, OutboxOverflowed, Poll, GoingAway, Disconnected,
]


# --- effects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``frame`` now, ahead of anything in the outbox (the welcome)."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Feed ``TimerFired(name)`` after ``seconds`` (restarts a running one)."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Gating: run the auth hook on ``hello`` (plus the upgrade request), feed
    ``Authenticated``. ``token``: an ``auth`` frame's fresh token, judged in
    place of the hello's."""

    hello: m.Hello
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Gating: ``await hub.subscribe(doc_id, session, create=create,
    creator=creator)``, feed ``DocOpened`` (or ``DocOpenFailed`` for
    DocNotFound, DocUnavailable and QuotaExceeded). ``create``: whether an
    unknown document may be created (the principal may write it; None: the
    hub's default); ``creator`` is who a new document is charged to."""

    doc_id: str
    creator: str
    create: bool | None = None


@dataclass(frozen=True, slots=True, eq=False)
class WaitDurable:
    """Beside the rest: wait, at most ``timeout`` seconds, until each
    ``docs[d].wait_durable(heads[d])`` returns; feed ``FlushDurable(self)``,
    or ``FlushTimedOut(self)`` when time runs out.

    ``docs`` are the documents captured when the flush was read: a document
    closed since still gets a correct answer, because durability belongs to
    the document, not to this connection's subscription."""

    request_id: int
    docs: Mapping[str, LiveDoc]
    heads: Mapping[str, list[bytes]]
    timeout: float


@dataclass(frozen=True, slots=True, eq=False)
class WaitForRecovery:
    """Gating: wait until ``done`` is set (the document's reload finished),
    feed ``RecoveryFinished(self)``. ``retry`` is a sync message that arrived
    during the reload: it is applied to the fresh copy then, never dropped."""

    doc_id: str
    done: object  # an anyio.Event: has ``async wait()``
    retry: m.Sync | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Read the peer's next frame no sooner than ``seconds`` from now: its
    client is over its share of the event loop. Only ever returned for the
    events the reader feeds (a frame, or the answer to a gating effect)."""

    seconds: float


Effect = Union[Send, Close, StartTimer, CancelTimer, Authenticate, Subscribe, WaitDurable, WaitForRecovery, Pause]

GATING = (Authenticate, Subscribe, WaitForRecovery)
# What the pump's reader feeds: a Pause is returned only for these.
READER_EVENTS = (FrameReceived, Authenticated, DocOpened, DocOpenFailed, RecoveryFinished)


# --- rate limits --------------------------------------------------------------


def _per_second(amount: float, unit: str) -> str:
    if unit == "bytes" and amount >= 1024 * 1024 and amount % (1024 * 1024) == 0:
        return f"{amount / (1024 * 1024):g} MiB/s"
    return f"{amount:g} {unit}/s"


# --- the session --------------------------------------------------------------


class PeerSession:
    """Protocol v1 for one peer: handshake, documents, flushes, the outbox."""

    AWAITING_HELLO, AUTHENTICATING, OPEN, CLOSED = "awaiting_hello", "authenticating", "open", "closed"
    DIALECT = "native"  # the `dialect` label of its metrics

    def __init__(
        self,
        hub: Hub,
        *,
        server_peer: str,
        limits: Limits,
        session_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        address: str = "?",
        identity_verified: bool = False,
        ledger: ClientLedger | None = None,
        reader_presence: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.server_peer = server_peer
        self.limits = limits
        self.metrics = hub.metrics.dialect(self.DIALECT)
        self.session_id = session_id or secrets.token_hex(8)
        self.peer = "?"  # the hello's peer name: used in logs and `eph` relays
        self.principal: Principal | None = None
        # The client's address; and whether an auth hook vouches for the
        # principal's identity (without one, the identity is the peer's own
        # claim and quotas go by address).
        self.address = address
        self.identity_verified = identity_verified
        # The pump's admission ticket hears when the handshake is over.
        self.on_welcome: Callable[[], None] = lambda: None
        self._flushes_in_flight = 0
        self.state = self.AWAITING_HELLO
        self.outbox = Outbox(limits.max_outbox, limits.max_outbox_bytes)
        # The pump sets this: called (synchronously, from any task) when
        # effects are queued outside `handle`; it answers with `Poll()`.
        self.wakeup: Callable[[], None] = lambda: None
        self._docs: dict[str, tuple[LiveDoc, DocSync]] = {}
        self._hello: m.Hello | None = None
        self._gate: Effect | None = None  # the gating effect whose answer we wait for
        self._held: deque[bytes] = deque()  # frames fed while gated
        self._deferred: list[Effect] = []  # effects raised by hub callbacks
        self._lazy_saved: dict[str, list[bytes]] = {}
        self._lazy_eph: dict[tuple, bytes] = {}  # presence waiting for the window to end
        self._eph_timer = False
        self._saved_timer = False
        self._closed_with: Close | None = None
        self.clock = clock
        # The app shares one ledger between its sessions; a session on its
        # own (tests) keeps a private one.
        self.ledger = ledger or ClientLedger.from_limits(limits)
        self._allowance: Allowance | None = None  # from the ledger at the welcome
        # Whether read-only principals' `eph` is relayed (viewers' presence).
        self.reader_presence = reader_presence
        self.wall = wall  # epoch seconds: what token expiry is written in
        self._access: dict[str, str] = {}  # per open document: "read" or "write"
        self._expiry_watched = False
        self._client_key: str | None = None
        self._hello_bytes = 0

    # --- the one decision point --------------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; return what the pump must do, in order."""
        effects: list[Effect] = []
        if self.state == self.CLOSED:
            if isinstance(event, DocOpened):  # subscribed while we closed: let go
                self.hub.unsubscribe(event.doc_id, self)
            return effects
        started = self.clock()
        self._handle(event, effects)
        pause = self._charge(self.clock() - started)
        if pause and self.state != self.CLOSED and isinstance(event, READER_EVENTS):
            self.ledger.paused(pause)
            effects.append(Pause(pause))
        return effects

    def _handle(self, event: Event, effects: list[Effect]) -> None:
        try:
            self._dispatch(event, effects)
            # Frames that arrived while a gating effect was out, in order.
            while self._gate is None and self._held and self.state != self.CLOSED:
                self._on_frame(self._held.popleft(), effects)
        except ProtocolError as exc:
            self._close(exc.close_code, str(exc), effects)
        if self.state != self.CLOSED and self.outbox.overflowed:
            self._close(CloseCode.TOO_SLOW, "too slow to keep up; reconnect and resync", effects)
        if self.state == self.CLOSED:
            self._deferred.clear()
        else:
            effects.extend(self._deferred)
            self._deferred.clear()

    def _dispatch(self, event: Event, effects: list[Effect]) -> None:
        if isinstance(event, FrameReceived):
            if not self._within_rate(len(event.data), effects):
                return
            if self.state == self.AWAITING_HELLO and len(event.data) > self.limits.max_hello_bytes:
                raise ProtocolError(
                    f"first frame of {len(event.data)} bytes exceeds {self.limits.max_hello_bytes}", CloseCode.TOO_BIG)
            if self._gate is not None:
                self._held.append(event.data)
            else:
                self._on_frame(event.data, effects)
        elif isinstance(event, TimerFired):
            self._on_timer(event.name, effects)
        elif isinstance(event, Authenticated):
            self._on_authenticated(event.principal, effects)
        elif isinstance(event, DocOpened):
            self._ungate(event.doc_id, Subscribe)
            self._on_doc_opened(event.doc_id, event.live)
        elif isinstance(event, DocOpenFailed):
            self._ungate(event.doc_id, Subscribe)
            if isinstance(event.error, DocNotFound):
                self._error(ErrorCode.NOT_FOUND, "no such document", event.doc_id)
            elif isinstance(event.error, DocUnavailable):
                self._error(ErrorCode.UNAVAILABLE, "the document's stored state cannot be loaded; an operator has been told", event.doc_id)
            elif isinstance(event.error, QuotaExceeded):
                self._error(ErrorCode.QUOTA, str(event.error), event.doc_id)
            else:
                raise event.error
        elif isinstance(event, FlushDurable):
            self._flushes_in_flight -= 1
            wait = event.wait
            durable = {doc_id: live.durable_heads for doc_id, live in wait.docs.items()}
            self._send(m.Flushed(id=wait.request_id, docs=durable))
        elif isinstance(event, FlushTimedOut):
            self._flushes_in_flight -= 1
            self._error(ErrorCode.FLUSH_TIMEOUT, f"not durable within {event.wait.timeout}s", None, event.wait.request_id)
        elif isinstance(event, RecoveryFinished):
            if self._gate is not event.wait:
                raise RuntimeError(f"RecoveryFinished for {event.wait.doc_id} without its WaitForRecovery")
            self._gate = None
            retry = event.wait.retry
            if retry is not None and retry.doc in self._docs:
                self._on_sync(retry, effects)
        elif isinstance(event, OutboxOverflowed):
            self._close(CloseCode.TOO_SLOW, "too slow to keep up; reconnect and resync", effects)
        elif isinstance(event, GoingAway):
            self._close(CloseCode.GOING_AWAY, "server shutting down; reconnect", effects)
        elif isinstance(event, Connected):
            effects.append(StartTimer(HANDSHAKE, self.limits.handshake_timeout))
        elif isinstance(event, Disconnected):
            self._release()
            self.state = self.CLOSED
        elif isinstance(event, Poll):
            pass  # queued effects are returned by handle()
        else:
            raise TypeError(f"not a PeerSession event: {event!r}")

    def _within_rate(self, size: int, effects: list[Effect]) -> bool:
        """Charge one received frame to the buckets; close 4429 when over.
        Before the welcome there are no buckets yet: the hello is charged
        when they come (only one frame is read before it)."""
        allowance = self._allowance
        if allowance is None:
            self._hello_bytes = size
            return True
        now = self.clock()
        for bucket, cost, unit in ((allowance.frames, 1, "frames"), (allowance.bytes, size, "bytes")):
            if bucket is not None and not bucket.take(cost, now):
                retry = bucket.refill_seconds
                self.ledger.block(self.client_key, retry, now)
                self.metrics.rate_limited[unit].inc()
                self._close(CloseCode.RATE_LIMITED, f"retry after {retry} s: over {_per_second(bucket.rate, unit)}", effects)
                return False
        return True

    def _charge(self, seconds: float) -> float:
        """Charge handling time to the client's loop share; the pause it owes."""
        if self._allowance is None:
            return 0.0
        return self.ledger.charge_loop(self.client_key, seconds, self.clock())

    def _ungate(self, doc_id: str, kind: type) -> None:
        gate = self._gate
        if not isinstance(gate, kind) or getattr(gate, "doc_id", None) != doc_id:
            raise RuntimeError(f"{kind.__name__} answer for {doc_id} that was not asked for (waiting for {gate!r})")
        self._gate = None

    def _gated(self, effect: Effect, effects: list[Effect]) -> None:
        self._gate = effect
        effects.append(effect)

    def _close(self, code: int, reason: str, effects: list[Effect]) -> None:
        if self.state == self.CLOSED:
            return
        close = Close(code, reason[:120])
        self._closed_with = close
        self.state = self.CLOSED
        self._gate = None
        self._held.clear()
        self._release()
        effects.append(close)

    @property
    def closed_with(self) -> Close | None:
        """The Close the session decided on, if any."""
        return self._closed_with

    # --- handshake ------------------------------------------------------------------

    def _on_timer(self, name: str, effects: list[Effect]) -> None:
        if name == HANDSHAKE:
            # The deadline runs from the upgrade to the welcome: frames do not
            # extend it, and a slow auth hook is inside it too.
            if self.state in (self.AWAITING_HELLO, self.AUTHENTICATING):
                self._close(CloseCode.HANDSHAKE_TIMEOUT, "no handshake in time", effects)
        elif name == EXPIRY:
            if self.principal is not None and not self._expired(self.principal, effects):
                self._watch_expiry(self.principal, effects)  # refreshed meanwhile: watch the new one
        elif name == EPH:
            pending, self._lazy_eph = self._lazy_eph, {}
            for key, frame in pending.items():
                if key[1] in self._docs:
                    self.outbox.push_latest(key, frame)
            # Quiet for a whole window: the next one goes at once again.
            self._eph_timer = bool(pending)
            if pending:
                effects.append(StartTimer(EPH, self.limits.eph_interval))
        elif name == SAVED:
            self._saved_timer = False
            pending, self._lazy_saved = self._lazy_saved, {}
            for doc_id, heads in pending.items():
                if doc_id in self._docs:
                    self.outbox.push_latest(("saved", doc_id), m.encode(m.Saved(doc=doc_id, heads=heads)))

    def _on_hello(self, message: m.ClientMessage, effects: list[Effect]) -> None:
        if not isinstance(message, m.Hello):
            raise ProtocolError(f"first frame must be hello, got {type(message).__name__.lower()}")
        if m.PROTOCOL_VERSION not in message.v:
            raise ProtocolError(f"no common protocol version: server speaks {list(m.SUPPORTED_VERSIONS)}")
        self._hello = message
        self.state = self.AUTHENTICATING
        self._gated(Authenticate(message), effects)

    def _on_authenticated(self, principal: Principal | None, effects: list[Effect]) -> None:
        if not isinstance(self._gate, Authenticate) or self.state not in (self.AUTHENTICATING, self.OPEN):
            raise RuntimeError("Authenticated without an Authenticate to answer")
        self._gate = None
        if self.state == self.OPEN:
            self._on_refreshed(principal, effects)
            return
        if principal is None:
            self._close(CloseCode.UNAUTHORIZED, "unauthorized", effects)
            return
        if self._expired(principal, effects):
            return
        assert self._hello is not None
        self.principal = principal
        self.peer = self._hello.peer
        # A client closed for its rate comes back after the delay it was
        # given; then its buckets are as its previous connections left them,
        # and the hello is their first frame.
        blocked = self.ledger.blocked_for(self.client_key, self.clock())
        if blocked:
            self.metrics.rate_limited["reconnect"].inc()
            self._close(CloseCode.RATE_LIMITED, f"retry after {blocked} s: rate limited, and reconnected too soon", effects)
            return
        self._allowance = self.ledger.join(self.client_key, self.clock())
        if not self._within_rate(self._hello_bytes, effects):
            return
        self.state = self.OPEN
        self.on_welcome()  # the HANDSHAKE timer, when it fires, finds us OPEN
        limits = {"max_frame_bytes": self.limits.max_frame_bytes, "max_docs": self.limits.max_docs_per_connection}
        welcome = m.Welcome(v=m.PROTOCOL_VERSION, peer=self.server_peer, session=self.session_id, caps=[], limits=limits,
                            identity=principal.identity, expires_in=self._expires_in(principal))
        effects.append(Send(m.encode(welcome)))
        self._watch_expiry(principal, effects)

    # --- tokens that expire, and their refresh ------------------------------------

    def _expires_in(self, principal: Principal) -> float | None:
        if principal.expires_at is None:
            return None
        return round(principal.expires_at - self.wall(), 3)

    def _expired(self, principal: Principal, effects: list[Effect]) -> bool:
        left = self._expires_in(principal)
        if left is not None and left <= 0:
            self._close(CloseCode.UNAUTHORIZED, "token expired", effects)
            return True
        return False

    def _watch_expiry(self, principal: Principal, effects: list[Effect]) -> None:
        left = self._expires_in(principal)
        if left is not None:
            effects.append(StartTimer(EXPIRY, left))
        elif self._expiry_watched:  # refreshed with a token that does not expire
            effects.append(CancelTimer(EXPIRY))
        self._expiry_watched = left is not None

    def _on_auth(self, message: m.Auth, effects: list[Effect]) -> None:
        assert self._hello is not None
        self._gated(Authenticate(self._hello, token=message.token), effects)

    def _on_refreshed(self, principal: Principal | None, effects: list[Effect]) -> None:
        """An ``auth`` frame's token was judged. The identity may not change
        mid-connection (what others were told this peer is); its access may:
        documents it may no longer read are closed with ``forbidden``, and
        ``opened`` tells it of any other change."""
        assert self.principal is not None
        if principal is None:
            self._close(CloseCode.UNAUTHORIZED, "unauthorized: the new token was refused", effects)
            return
        if principal.identity != self.principal.identity:
            self._close(CloseCode.UNAUTHORIZED, "unauthorized: a token for another identity", effects)
            return
        if self._expired(principal, effects):
            return
        self.principal = principal
        self._watch_expiry(principal, effects)
        for doc_id in list(self._docs):
            access = principal.access(doc_id)
            if access is None:
                self._forget(doc_id)
                self._error(ErrorCode.FORBIDDEN, "the new token does not grant this document", doc_id)
            elif access != self._access.get(doc_id):
                self._access[doc_id] = access
                self._send(m.Opened(doc=doc_id, access=access))

    # --- frames -----------------------------------------------------------------------

    def _on_frame(self, data: bytes, effects: list[Effect]) -> None:
        message = m.decode_client(data)
        if self.state == self.AWAITING_HELLO:
            self._on_hello(message, effects)
        elif isinstance(message, m.Sync):
            self._on_sync(message, effects)
        elif isinstance(message, m.Open):
            self._on_open(message.doc, effects)
        elif isinstance(message, m.Flush):
            self._on_flush(message, effects)
        elif isinstance(message, m.Eph):
            if self._opened(message.doc) and (self.reader_presence or self._access[message.doc] == WRITE):
                live, _ = self._docs[message.doc]
                assert self.principal is not None
                self.hub.relay_ephemeral(live, self, message.data, self.principal.identity)
        elif isinstance(message, m.Close):
            self._forget(message.doc)
        elif isinstance(message, m.Auth):
            self._on_auth(message, effects)
        elif isinstance(message, m.Bye):
            self._close(CloseCode.NORMAL, "bye", effects)
        else:  # a second hello
            raise ProtocolError("hello after the handshake")

    def _opened(self, doc_id: str, request_id: int | None = None) -> bool:
        if doc_id in self._docs:
            return True
        if not m.valid_doc_id(doc_id):
            self._error(ErrorCode.BAD_DOC_ID, BAD_DOC_ID_TEXT, doc_id, request_id)
        else:
            self._error(ErrorCode.NOT_OPEN, "open the document first", doc_id, request_id)
        return False

    def _on_open(self, doc_id: str, effects: list[Effect]) -> None:
        assert self.principal is not None
        if not m.valid_doc_id(doc_id):
            self._error(ErrorCode.BAD_DOC_ID, BAD_DOC_ID_TEXT, doc_id)
        elif (access := self.principal.access(doc_id)) is None:
            # Nothing of it is sent, not even whether it exists.
            self._error(ErrorCode.FORBIDDEN, "you may not read this document", doc_id)
        elif doc_id in self._docs:  # re-open: the peer starts over
            self._docs[doc_id][1].reset()
            self._opened_now(doc_id)
        elif len(self._docs) >= self.limits.max_docs_per_connection:
            self._error(ErrorCode.TOO_MANY_DOCS, f"at most {self.limits.max_docs_per_connection} open documents", doc_id)
        else:
            # Creating a document is writing it.
            self._gated(Subscribe(doc_id, self.client_key, create=None if access == WRITE else False), effects)

    def _on_doc_opened(self, doc_id: str, live: LiveDoc) -> None:
        assert self.principal is not None
        self._docs[doc_id] = (live, live.guarded_sync(self.hub.bounds))
        self._access[doc_id] = self.principal.access(doc_id) or READ
        self._opened_now(doc_id)

    def _opened_now(self, doc_id: str) -> None:
        self._send(m.Opened(doc=doc_id, access=self._access[doc_id]))
        self.doc_changed(doc_id)
        # Tell the peer what is durable already: a client waits for its
        # document to include these heads before it calls the open complete.
        self.doc_saved(doc_id, self._docs[doc_id][0].durable_heads, own=True)

    def _on_sync(self, message: m.Sync, effects: list[Effect]) -> None:
        if not self._opened(message.doc):
            return
        live, sync = self._docs[message.doc]
        if live.recovering is not None:
            # Apply nothing to a copy being replaced, and drop nothing either:
            # the message waits for the reload, then goes to the fresh copy.
            self._gated(WaitForRecovery(message.doc, live.recovering, retry=message), effects)
            return
        try:
            changes = sync.receive(message.data, read_only=self._access[message.doc] == READ)
        except BadSyncMessage as exc:
            log.warning("peer %s doc %s: %s", self.peer, message.doc, exc, extra=doc_extra(message.doc))
            code = ErrorCode.READ_ONLY if exc.read_only else ErrorCode.QUOTA if exc.full else ErrorCode.BAD_SYNC
            self.hub.metrics.rejected[code].inc()
            self._error(code, str(exc), message.doc)
            # The valid part (if any) is accepted, and accept() answers it.
            # Nothing more: an answer to a refusal would name the refused
            # heads as needed, and the peer would send them again at once,
            # forever (an honest peer with a full document would spin).
            self.hub.accept(live, exc.applied, self)
            return
        except CoreFailure as exc:
            # The core failed half-way: what it applied is not trusted. The
            # document goes back to its durable (plus accepted) state and
            # every peer resyncs; this peer hears that its message was bad,
            # and its next frames wait for the reload.
            log.warning("peer %s doc %s: the core failed on its message: %s", self.peer, message.doc, exc,
                extra=doc_extra(message.doc))
            self.hub.metrics.rejected[ErrorCode.BAD_SYNC].inc()
            self._error(ErrorCode.BAD_SYNC, "the sync message could not be applied", message.doc)
            self.hub.damaged(live, exc)
            if live.recovering is not None:
                self._gated(WaitForRecovery(message.doc, live.recovering), effects)
            return
        self.hub.accept(live, changes, self)
        self.doc_changed(message.doc)  # answer even when nothing was new

    def _on_flush(self, message: m.Flush, effects: list[Effect]) -> None:
        for doc_id in message.docs:
            if not self._opened(doc_id, message.id):
                return
        if self._flushes_in_flight >= self.limits.max_flushes_in_flight:
            self._error(ErrorCode.QUOTA, f"at most {self.limits.max_flushes_in_flight} flushes may wait at once", None, message.id)
            return
        self._flushes_in_flight += 1
        # The documents as they are now, while the flush is read: the answer
        # comes later, and the peer may `close` one of them meanwhile.
        docs = {doc_id: self._docs[doc_id][0] for doc_id in message.docs}
        # A reader has nothing of its own to wait for: its heads are whatever
        # it was sent, and its changes are never applied.
        heads = {doc_id: [] if self._access[doc_id] == READ else heads for doc_id, heads in message.docs.items()}
        effects.append(WaitDurable(message.id, docs, heads, self.limits.flush_timeout))

    def _forget(self, doc_id: str) -> None:
        self._access.pop(doc_id, None)
        if self._docs.pop(doc_id, None) is not None:
            self.hub.unsubscribe(doc_id, self)
        self._lazy_saved.pop(doc_id, None)
        for key in [k for k in self._lazy_eph if k[1] == doc_id]:
            del self._lazy_eph[key]
        self.outbox.forget(doc_id)

    def _release(self) -> None:
        for doc_id in list(self._docs):
            self._forget(doc_id)
        allowance, self._allowance = self._allowance, None
        if allowance is not None:
            self.ledger.leave(self.client_key, allowance, self.clock())

    @property
    def open_docs(self) -> list[str]:
        return list(self._docs)

    @property
    def client_key(self) -> str:
        """Who quotas and shares charge: the principal when an auth hook
        vouches for it, else the client's address (a peer name is only a claim)."""
        if self._client_key is None:
            key = quota_key(self.principal, self.address, self.identity_verified)
            if self.principal is None:
                return key  # not settled until the handshake is over
            self._client_key = key
        return self._client_key

    # --- the outbox --------------------------------------------------------------------

    def _send(self, message: m.ServerMessage) -> None:
        self.outbox.push(m.encode(message))

    def _error(self, code: str, text: str, doc: str | None = None, request_id: int | None = None) -> None:
        log.info("peer %s: error %s (%s) doc=%s id=%s", self.peer, code, text, doc, request_id, extra=doc_extra(doc))
        self.metrics.error_sent(code)
        self._send(m.Error(code=code, msg=text, doc=doc, id=request_id))

    def sync_frames(self, doc_id: str) -> list[bytes]:
        """The pull side of the outbox: this peer's sync messages for a dirty
        document, generated when the socket can take them."""
        if doc_id not in self._docs:
            return []
        live, sync = self._docs[doc_id]
        if live.recovering is not None:
            return []  # doc_reloaded marks it dirty again
        started = self.clock()
        try:
            return [m.encode(m.Sync(doc=doc_id, data=data)) for data in sync.generate()]
        except CoreFailure as exc:
            # What this peer told us (its have/need) made the core fail:
            # forget it and start this peer's sync over.
            log.warning("peer %s doc %s: generating a sync message failed: %s", self.peer, doc_id, exc,
                extra=doc_extra(doc_id))
            sync.reset()
            self._error(ErrorCode.BAD_SYNC, "your sync state could not be served; starting over", doc_id)
            self.hub.damaged(live, exc)
            return []
        finally:
            # Answering this peer is its client's work too; the debt pauses
            # its next read (the writer itself never waits for it).
            self._charge(self.clock() - started)

    # --- Subscriber (called by the hub; synchronous) ------------------------------------

    def doc_changed(self, doc_id: str, origin: object = None) -> None:
        # A peer answers its own sync messages too: origin does not matter here.
        self.outbox.mark_dirty(doc_id)

    def doc_deleted(self, doc_id: str) -> None:
        if doc_id in self._docs:
            self._forget(doc_id)
            self._error(ErrorCode.NOT_FOUND, "the document was deleted", doc_id)

    def doc_reloaded(self, doc_id: str) -> None:
        if doc_id in self._docs:
            live, sync = self._docs[doc_id]
            sync.rebind(live.doc)
            self.outbox.mark_dirty(doc_id)

    def doc_saved(self, doc_id: str, heads: list[bytes], own: bool) -> None:
        # The peer whose changes just became durable hears it at once: that is
        # its acknowledgement. Everyone else learns the new durable heads at
        # most every `saved_interval`: on a hot document a `saved` per commit
        # per peer was half of all frames sent (bench/README.md, profile).
        if own:
            self._lazy_saved.pop(doc_id, None)
            self.outbox.push_latest(("saved", doc_id), m.encode(m.Saved(doc=doc_id, heads=heads)))
            return
        self._lazy_saved[doc_id] = heads
        if not self._saved_timer:
            self._saved_timer = True
            self._deferred.append(StartTimer(SAVED, self.limits.saved_interval))
            self.wakeup()

    def ephemeral(self, doc_id: str, sender: str, data: bytes, source: object = None) -> None:
        # Presence is latest-state: only the newest eph per (doc, sending
        # connection) waits for the socket, so a flood from one sender cannot
        # fill this peer's control queue, and two tabs of one user do not
        # overwrite each other. And it goes out at most once per
        # `eph_interval` window: the first at once, what comes during the
        # window (latest per sender) when it ends. Cursors need no more, and
        # a peer's own client then decodes tens of presence frames a second,
        # not the hundreds another peer may send (limits bench).
        key = ("eph", doc_id, source if source is not None else sender)
        frame = m.encode(m.EphRelay(doc=doc_id, from_=sender, data=data))
        if self._eph_timer:
            self._lazy_eph[key] = frame
            return
        self.outbox.push_latest(key, frame)
        self._eph_timer = True
        self._deferred.append(StartTimer(EPH, self.limits.eph_interval))
        self.wakeup()
