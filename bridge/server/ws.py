"""One WebSocket peer of the bridge: handshake, reader, writer.

The reader applies frames in order. The writer sends what the outbox holds:
control frames (welcome, flushed, error, eph) in order, the latest ``saved``
heads per document, and — pulled, not pushed — fresh sync messages for every
document marked dirty. Generating sync messages only when the socket can take
them means a slow peer never piles up a backlog of stale messages: Automerge's
sync state folds everything that happened meanwhile into the next message.
Only control frames queue, and a peer that lets them pile past
``max_outbox`` is closed with 4409 (reconnect and resync).
"""

from __future__ import annotations

import logging
import secrets
from typing import Awaitable, Callable

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config import Limits
from ..protocol import native as m
from ..core.binding import CoreFailure
from ..hub import DocNotFound, DocUnavailable, Hub, LiveDoc
from ..protocol.native import CloseCode, ErrorCode, ProtocolError
from ..core.outbox import Outbox, OutboxOverflow
from ..core.sync import BadSyncMessage, DocSync
from ..tasks import first_leaf, race

log = logging.getLogger(__name__)

Authenticate = Callable[[m.Hello], "bool | Awaitable[bool]"]


class _Closing(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class PeerConnection:
    def __init__(
        self,
        websocket: WebSocket,
        hub: Hub,
        *,
        server_peer: str,
        limits: Limits,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.ws = websocket
        self.hub = hub
        self.server_peer = server_peer
        self.limits = limits
        self.authenticate = authenticate
        self.peer = "?"
        self.session = secrets.token_hex(8)
        self._docs: dict[str, tuple[LiveDoc, DocSync]] = {}
        self._outbox = Outbox(limits.max_outbox)
        self._lazy_saved: dict[str, list[bytes]] = {}
        self._lazy_saved_due = anyio.Event()
        self._tg: anyio.abc.TaskGroup

    # --- entry point --------------------------------------------------------

    async def serve(self) -> None:
        await self.ws.accept()
        outcome: Exception | None = None
        try:
            await self._handshake()
            async with anyio.create_task_group() as tg:
                self._tg = tg  # flush answers run here, and end with the connection
                try:
                    await race(self._reader, self._writer, self._send_lazy_saved)
                finally:
                    tg.cancel_scope.cancel()
        except Exception as exc:  # classified by _close
            outcome = first_leaf(exc)
        finally:
            for doc_id in list(self._docs):
                self._forget(doc_id)
        await self._close(outcome)

    async def _close(self, outcome: BaseException | None) -> None:
        if isinstance(outcome, WebSocketDisconnect):
            return
        if isinstance(outcome, _Closing):
            code, reason = outcome.code, outcome.reason
        elif isinstance(outcome, ProtocolError):
            code, reason = outcome.close_code, str(outcome)
        elif outcome is None:
            code, reason = CloseCode.NORMAL, ""
        else:
            log.error("peer %s session %s: internal error", self.peer, self.session, exc_info=outcome)
            code, reason = CloseCode.INTERNAL, "internal error"
        if code != CloseCode.NORMAL:
            log.warning("peer %s session %s: closing %d %s", self.peer, self.session, code, reason)
        try:
            await self.ws.close(code, reason[:120])
        except Exception:
            pass  # the peer is already gone

    # --- reading ------------------------------------------------------------

    async def _receive_frame(self) -> bytes:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("text frames are not part of the protocol; send binary MessagePack")
        if len(data) > self.limits.max_frame_bytes:
            raise ProtocolError(f"frame of {len(data)} bytes exceeds {self.limits.max_frame_bytes}", CloseCode.TOO_BIG)
        return data

    async def _handshake(self) -> None:
        with anyio.move_on_after(self.limits.handshake_timeout) as waited:
            hello = m.decode_client(await self._receive_frame())
        if waited.cancelled_caught:
            raise _Closing(CloseCode.HANDSHAKE_TIMEOUT, "no hello in time")
        if not isinstance(hello, m.Hello):
            raise ProtocolError(f"first frame must be hello, got {type(hello).__name__.lower()}")
        if m.PROTOCOL_VERSION not in hello.v:
            raise ProtocolError(f"no common protocol version: server speaks {list(m.SUPPORTED_VERSIONS)}")
        if self.authenticate is not None:
            verdict = self.authenticate(hello)
            if not isinstance(verdict, bool):
                verdict = await verdict
            if not verdict:
                raise _Closing(CloseCode.UNAUTHORIZED, "unauthorized")
        self.peer = hello.peer
        limits = {"max_frame_bytes": self.limits.max_frame_bytes, "max_docs": self.limits.max_docs_per_connection}
        await self.ws.send_bytes(
            m.encode(m.Welcome(v=m.PROTOCOL_VERSION, peer=self.server_peer, session=self.session, caps=[], limits=limits))
        )

    async def _reader(self) -> None:
        while True:
            message = m.decode_client(await self._receive_frame())
            if isinstance(message, m.Sync):
                await self._on_sync(message)
            elif isinstance(message, m.Open):
                await self._on_open(message.doc)
            elif isinstance(message, m.Flush):
                self._on_flush(message)
            elif isinstance(message, m.Eph):
                if self._opened(message.doc):
                    live, _ = self._docs[message.doc]
                    self.hub.relay_ephemeral(live, self, message.data)
            elif isinstance(message, m.Close):
                self._forget(message.doc)
            elif isinstance(message, m.Bye):
                raise _Closing(CloseCode.NORMAL, "bye")
            else:  # a second hello
                raise ProtocolError("hello after the handshake")

    def _opened(self, doc_id: str, request_id: int | None = None) -> bool:
        if doc_id in self._docs:
            return True
        if not m.valid_doc_id(doc_id):
            self._error(ErrorCode.BAD_DOC_ID, "document ids are 1-256 chars of [A-Za-z0-9._:~-]", doc_id, request_id)
        else:
            self._error(ErrorCode.NOT_OPEN, "open the document first", doc_id, request_id)
        return False

    async def _on_open(self, doc_id: str) -> None:
        if not m.valid_doc_id(doc_id):
            self._error(ErrorCode.BAD_DOC_ID, "document ids are 1-256 chars of [A-Za-z0-9._:~-]", doc_id)
            return
        if doc_id in self._docs:  # re-open: the peer starts over
            self._docs[doc_id][1].reset()
        else:
            if len(self._docs) >= self.limits.max_docs_per_connection:
                self._error(ErrorCode.TOO_MANY_DOCS, f"at most {self.limits.max_docs_per_connection} open documents", doc_id)
                return
            try:
                live = await self.hub.subscribe(doc_id, self)
            except DocNotFound:
                self._error(ErrorCode.NOT_FOUND, "no such document", doc_id)
                return
            except DocUnavailable:
                self._error(ErrorCode.UNAVAILABLE, "the document's stored state cannot be loaded; an operator has been told", doc_id)
                return
            self._docs[doc_id] = (live, live.guarded_sync(self.hub.bounds))
        self.doc_changed(doc_id)
        # Tell the peer what is durable already: a client waits for its
        # document to include these heads before it calls the open complete.
        self.doc_saved(doc_id, self._docs[doc_id][0].durable_heads, own=True)

    async def _on_sync(self, message: m.Sync) -> None:
        if not self._opened(message.doc):
            return
        live, sync = self._docs[message.doc]
        if live.recovering is not None:
            # Apply nothing to a copy being replaced, and drop nothing either:
            # the message waits for the reload, then goes to the fresh copy.
            await live.recovering.wait()
            if message.doc not in self._docs:
                return
        try:
            changes = sync.receive(message.data)
        except BadSyncMessage as exc:
            log.warning("peer %s doc %s: %s", self.peer, message.doc, exc)
            self._error(ErrorCode.BAD_SYNC, str(exc), message.doc)
            self.hub.accept(live, exc.applied, self)
            self.doc_changed(message.doc)
            return
        except CoreFailure as exc:
            # The core failed half-way: what it applied is not trusted. The
            # document goes back to its durable (plus accepted) state and
            # every peer resyncs; this peer hears that its message was bad.
            log.warning("peer %s doc %s: the core failed on its message: %s", self.peer, message.doc, exc)
            self._error(ErrorCode.BAD_SYNC, "the sync message could not be applied", message.doc)
            await self.hub.recover(live, exc)
            return
        self.hub.accept(live, changes, self)
        self.doc_changed(message.doc)  # answer even when nothing was new

    def _on_flush(self, message: m.Flush) -> None:
        for doc_id in message.docs:
            if not self._opened(doc_id, message.id):
                return
        # The documents as they are now, while the flush is read: the answer
        # runs later, and the peer may `close` one of them meanwhile.
        self._tg.start_soon(self._answer_flush, message, {doc_id: self._docs[doc_id][0] for doc_id in message.docs})

    async def _answer_flush(self, message: m.Flush, docs: dict[str, LiveDoc]) -> None:
        # Answers for the documents captured when the flush was read, never by
        # looking them up again: a document closed since still gets a correct
        # answer, because durability belongs to the document, not to this
        # connection's subscription (its LiveDoc keeps learning of commits).
        with anyio.move_on_after(self.limits.flush_timeout):
            for doc_id, heads in message.docs.items():
                await docs[doc_id].wait_durable(heads)
            durable = {doc_id: live.durable_heads for doc_id, live in docs.items()}
            self._send(m.Flushed(id=message.id, docs=durable))
            return
        self._error(ErrorCode.FLUSH_TIMEOUT, f"not durable within {self.limits.flush_timeout}s", None, message.id)

    def _forget(self, doc_id: str) -> None:
        if self._docs.pop(doc_id, None) is not None:
            self.hub.unsubscribe(doc_id, self)
        self._outbox.forget(doc_id)

    # --- the outbox (Subscriber) ---------------------------------------------

    def _send(self, message: m.ServerMessage) -> None:
        self._outbox.push(m.encode(message))

    def _error(self, code: str, text: str, doc: str | None = None, request_id: int | None = None) -> None:
        log.info("peer %s: error %s (%s) doc=%s id=%s", self.peer, code, text, doc, request_id)
        self._send(m.Error(code=code, msg=text, doc=doc, id=request_id))

    def doc_changed(self, doc_id: str, origin: object = None) -> None:
        self._outbox.mark_dirty(doc_id)

    def doc_reloaded(self, doc_id: str) -> None:
        if doc_id in self._docs:
            live, sync = self._docs[doc_id]
            sync.rebind(live.doc)
            self._outbox.mark_dirty(doc_id)

    def doc_saved(self, doc_id: str, heads: list[bytes], own: bool) -> None:
        # The peer whose changes just became durable hears it at once: that is
        # its acknowledgement. Everyone else learns the new durable heads at
        # most every `saved_interval`: on a hot document a `saved` per commit
        # per peer was half of all frames sent (bench/README.md, profile).
        if own:
            self._lazy_saved.pop(doc_id, None)
            self._outbox.push_latest(("saved", doc_id), m.encode(m.Saved(doc=doc_id, heads=heads)))
        else:
            self._lazy_saved[doc_id] = heads
            self._lazy_saved_due.set()

    async def _send_lazy_saved(self) -> None:
        while True:
            await self._lazy_saved_due.wait()
            await anyio.sleep(self.limits.saved_interval)
            self._lazy_saved_due = anyio.Event()
            pending, self._lazy_saved = self._lazy_saved, {}
            for doc_id, heads in pending.items():
                if doc_id in self._docs:
                    self._outbox.push_latest(("saved", doc_id), m.encode(m.Saved(doc=doc_id, heads=heads)))

    def ephemeral(self, doc_id: str, sender: str, data: bytes) -> None:
        self._send(m.EphRelay(doc=doc_id, from_=sender, data=data))

    # --- writing ------------------------------------------------------------

    async def _send_frame(self, frame: bytes) -> None:
        try:
            await self.ws.send_bytes(frame)
        except OSError as exc:
            raise WebSocketDisconnect(1006) from exc

    async def _writer(self) -> None:
        try:
            await self._outbox.pump(self._send_frame, self._sync_frames)
        except OutboxOverflow:
            raise _Closing(CloseCode.TOO_SLOW, "too slow to keep up; reconnect and resync") from None

    def _sync_frames(self, doc_id: str) -> list[bytes]:
        if doc_id not in self._docs:
            return []
        live, sync = self._docs[doc_id]
        if live.recovering is not None:
            return []  # doc_reloaded marks it dirty again
        try:
            return [m.encode(m.Sync(doc=doc_id, data=data)) for data in sync.generate()]
        except CoreFailure as exc:
            # What this peer told us (its have/need) made the core fail:
            # forget it and start this peer's sync over.
            log.warning("peer %s doc %s: generating a sync message failed: %s", self.peer, doc_id, exc)
            sync.reset()
            self._error(ErrorCode.BAD_SYNC, "your sync state could not be served; starting over", doc_id)
            self.hub.damaged(live, exc)
            return []
