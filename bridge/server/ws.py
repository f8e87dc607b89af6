"""The socket pump: one WebSocket peer, driven by a sans-IO session.

Everything the protocol decides lives in :class:`bridge.server.peer.PeerSession`;
this module only moves bytes and waits. :class:`SocketPump` accepts the
socket, reads frames (binary only, at most ``max_frame_bytes``), feeds each to
the session, and performs the effects the session returns:

- ``Send``: written at once; ``Close``: ends every task and closes with the
  code; ``StartTimer`` / ``CancelTimer``: a sleeping task that feeds
  ``TimerFired``;
- ``Authenticate``, ``Subscribe``, ``WaitForRecovery`` gate the frame order:
  the reader awaits them (the auth hook, ``hub.subscribe``, the reload) and
  feeds the result before it reads the next frame;
- ``WaitDurable`` runs in the connection's task group, bounded by its
  timeout, and feeds ``FlushDurable`` or ``FlushTimedOut``;
- ``Pause``: the reader sleeps before it reads on (the client is over its
  share of the event loop: its frames wait in its own socket buffer).

The reader yields to the event loop after every frame, so connections take
turns one frame at a time however many frames one of them has queued.

Beside the reader, the writer drains the session's outbox (control frames in
order, the latest ``saved`` per document and ``eph`` per sender, sync messages pulled from the
session when the socket can take them), and a poller feeds ``Poll`` when the
session queued effects from a hub callback. Any session with the same shape
(``handle``, ``outbox``, ``sync_frames``, ``wakeup``, ``closed_with``) can be
pumped: a second dialect needs only its own session class.

Close codes: the session's ``Close``; a fatal frame (text: 4400, too big:
1009); nothing when the peer is gone; 1011 only for a bug of the bridge.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ..logs import get_logger
from typing import Callable, Protocol

import anyio
import anyio.lowlevel
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth import Authenticate, AuthRequest, authenticate
from ..config import Limits
from ..core.outbox import Outbox, OutboxOverflow
from ..errors import CloseCode, ProtocolError, QuotaExceeded
from ..hub import DocNotFound, DocUnavailable, Hub
from ..metrics import PEER_CLOSED, DialectMetrics, uncounted
from ..tasks import first_leaf
from . import peer as p

log = get_logger(__name__)

__all__ = ["Authenticate", "Session", "SocketPump"]


class Session(Protocol):
    """What the pump needs of a sans-IO session."""

    peer: str
    session_id: str
    outbox: Outbox
    wakeup: Callable[[], None]

    def handle(self, event: object) -> list: ...

    def sync_frames(self, doc_id: str) -> list[bytes]: ...

    @property
    def closed_with(self) -> p.Close | None: ...


class SocketPump:
    def __init__(
        self,
        websocket: WebSocket,
        session: Session,
        hub: Hub,
        *,
        limits: Limits,
        authenticate: Authenticate | None = None,
        metrics: DialectMetrics | None = None,
    ) -> None:
        self.ws = websocket
        self.session = session
        self.hub = hub
        # What its frames and closes count on: the session's dialect.
        self._m = metrics or uncounted().dialect("native")
        self.max_frame_bytes = limits.max_frame_bytes
        self.send_timeout = limits.send_timeout
        self.authenticate = authenticate
        self._tg: anyio.abc.TaskGroup
        self._timers: dict[str, anyio.CancelScope] = {}
        self._poll = anyio.Event()
        self._send_lock = anyio.Lock()
        self._closing = False
        self._reading = anyio.CancelScope()
        self.finished = anyio.Event()  # the close frame has gone (or the peer is gone)

    # --- entry point --------------------------------------------------------

    async def serve(self) -> None:
        await self.ws.accept()
        self.session.wakeup = self._wake
        outcome: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._perform(self.session.handle(p.Connected()))
                if not self._closing:
                    tg.start_soon(self._reader)
                    tg.start_soon(self._writer)
                    tg.start_soon(self._poller)
        except Exception as exc:  # classified by _close
            outcome = first_leaf(exc)
        finally:
            self.session.wakeup = lambda: None
            self.session.handle(p.Disconnected())
        try:
            await self._close(outcome)
        finally:
            self.finished.set()

    async def _close(self, outcome: BaseException | None) -> None:
        if isinstance(outcome, WebSocketDisconnect):
            self._m.closed(PEER_CLOSED)
            return
        decided = self.session.closed_with
        if isinstance(outcome, ProtocolError):
            code, reason = outcome.close_code, str(outcome)
        elif outcome is not None:
            log.error("peer %s session %s: internal error", self.session.peer, self.session.session_id, exc_info=outcome)
            code, reason = CloseCode.INTERNAL, "internal error"
        elif decided is not None:
            code, reason = decided.code, decided.reason
        else:
            code, reason = CloseCode.NORMAL, ""
        self._m.closed(code)
        if code != CloseCode.NORMAL:
            log.warning("peer %s session %s: closing %d %s", self.session.peer, self.session.session_id, code, reason)
        try:
            # Bounded: a peer that stopped reading may never take the close frame.
            with anyio.move_on_after(self.send_timeout):
                await self.ws.close(code, reason[:120])
        except Exception:
            pass  # the peer is already gone

    # --- effects ------------------------------------------------------------

    async def _feed(self, event: object) -> None:
        await self._perform(self.session.handle(event))

    async def _perform(self, effects: list) -> None:
        for effect in effects:
            if self._closing:
                return
            if isinstance(effect, p.Send):
                await self._send_frame(effect.frame)
            elif isinstance(effect, p.Close):
                self._closing = True
                self._tg.cancel_scope.cancel()
                return
            elif isinstance(effect, p.StartTimer):
                self._start_timer(effect.name, effect.seconds)
            elif isinstance(effect, p.CancelTimer):
                scope = self._timers.pop(effect.name, None)
                if scope is not None:
                    scope.cancel()
            elif isinstance(effect, p.Authenticate):
                request = AuthRequest.from_hello(effect.hello, self.ws)
                if effect.token is not None:  # an `auth` frame's fresh token
                    request = dataclasses.replace(request, token=effect.token)
                principal = await authenticate(self.authenticate, request)
                await self._feed(p.Authenticated(principal))
            elif isinstance(effect, p.Subscribe):
                try:
                    live = await self.hub.subscribe(
                        effect.doc_id, self.session, create=effect.create, creator=effect.creator)
                except (DocNotFound, DocUnavailable, QuotaExceeded) as exc:
                    await self._feed(p.DocOpenFailed(effect.doc_id, exc))
                else:
                    # No checkpoint between the subscription and the session
                    # learning of it: a cancellation cannot leak it.
                    await self._feed(p.DocOpened(effect.doc_id, live))
            elif isinstance(effect, p.WaitForRecovery):
                await effect.done.wait()
                await self._feed(p.RecoveryFinished(effect))
            elif isinstance(effect, p.WaitDurable):
                self._tg.start_soon(self._wait_durable, effect)
            elif isinstance(effect, p.Pause):
                # Only the reader's own events pause: this is the reader.
                await anyio.sleep(effect.seconds)
            else:
                raise TypeError(f"unknown effect {effect!r}")

    def _start_timer(self, name: str, seconds: float) -> None:
        previous = self._timers.pop(name, None)
        if previous is not None:
            previous.cancel()
        scope = self._timers[name] = anyio.CancelScope()

        async def timer() -> None:
            with scope:
                await anyio.sleep(seconds)
                if self._timers.get(name) is scope:
                    del self._timers[name]
                await self._feed(p.TimerFired(name))

        self._tg.start_soon(timer)

    async def _wait_durable(self, wait: p.WaitDurable) -> None:
        durable = False
        started = time.perf_counter()
        with anyio.move_on_after(wait.timeout):
            for doc_id, heads in wait.heads.items():
                await wait.docs[doc_id].wait_durable(heads)
            durable = True
        if durable:
            self.hub.metrics.flush_seconds.observe(time.perf_counter() - started)
        else:
            self.hub.metrics.flush_timeouts.inc()
        await self._feed(p.FlushDurable(wait) if durable else p.FlushTimedOut(wait))

    def _wake(self) -> None:
        self._poll.set()

    async def _poller(self) -> None:
        while True:
            await self._poll.wait()
            self._poll = anyio.Event()
            await self._feed(p.Poll())

    # --- reading ------------------------------------------------------------

    async def _receive_frame(self) -> bytes:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("text frames are not part of the protocol; send binary MessagePack")
        self._m.frames_in.inc()
        self._m.bytes_in.inc(len(data))
        if len(data) > self.max_frame_bytes:
            raise ProtocolError(f"frame of {len(data)} bytes exceeds {self.max_frame_bytes}", CloseCode.TOO_BIG)
        return data

    async def _reader(self) -> None:
        with self._reading:
            while True:
                await self._feed(p.FrameReceived(await self._receive_frame()))
                # receive() returns at once while frames are queued: without this
                # one connection's backlog would be handled back to back, and
                # every other peer would wait for all of it. One frame, then
                # everyone else's turn.
                await anyio.lowlevel.checkpoint()

    def stop_reading(self) -> None:
        """Shutdown, first step: handle no frame from now on (one being
        handled finishes; what it gave the hub will be committed)."""
        self._reading.cancel()

    async def go_away(self, timeout: float) -> None:
        """Shutdown, last step, once group commit has drained: let what is
        queued for the peer go out (its ``saved`` and ``flushed`` answers;
        bounded, a peer may not read), then close 1001: come back soon."""
        if not self._closing:
            with anyio.move_on_after(timeout):
                await self.session.outbox.wait_idle()
                async with self._send_lock:  # the frame being written goes out whole
                    pass
            await self._feed(p.GoingAway())
        # The close frame is written by the connection's own task: wait for
        # it, or the server's shutdown (next) would fail the socket with 1012.
        with anyio.move_on_after(timeout):
            await self.finished.wait()

    # --- writing ------------------------------------------------------------

    async def _send_frame(self, frame: bytes) -> None:
        # A peer that stops reading fills its socket buffer and the write
        # waits: past send_timeout it is too slow, and it is the one closed.
        try:
            with anyio.fail_after(self.send_timeout):
                async with self._send_lock:
                    await self.ws.send_bytes(frame)
            self._m.frames_out.inc()
            self._m.bytes_out.inc(len(frame))
        except OSError as exc:
            raise WebSocketDisconnect(1006) from exc
        except RuntimeError as exc:
            # uvicorn answers a peer's close frame itself; a send racing it
            # is refused with this RuntimeError. The peer left: not a bug.
            if str(exc).startswith("Unexpected ASGI message 'websocket.send'"):
                raise WebSocketDisconnect(1006) from exc
            raise
        except TimeoutError:
            raise ProtocolError(f"a frame waited {self.send_timeout} s for the socket; reconnect and resync",
                                CloseCode.TOO_SLOW) from None

    async def _writer(self) -> None:
        try:
            await self.session.outbox.pump(self._send_frame, self.session.sync_frames)
        except OutboxOverflow:
            await self._feed(p.OutboxOverflowed())
