"""The Python client's connection handling: errors, unknown frames, close
codes, offline open and status names.

Against a real bridge where one can show the behaviour, otherwise against
:class:`FakeBridge`, a small protocol v1 server (the `websockets` library in
its own thread, so the client can run on asyncio and on trio) whose
misbehaviour each test scripts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

import httpx
import msgspec
import pytest
from automerge import core
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from bridge import create_app
from bridge.client import BridgeClient, BridgeError, PendingFlush, decode_server_frame
from bridge.core.sync import DocSync
from bridge.errors import ConnectionClosed, ConnectionRejected, DocError, FlushTimeout, Forbidden, ProtocolError
from bridge.testing import serve_in_thread

from .waiting import eventually, nothing_happens_for

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]  # the client must hold on asyncio and trio


def encode(frame: dict) -> bytes:
    return msgspec.msgpack.encode(frame)


class FakeBridge:
    """Protocol v1 for one peer at a time, enough for the client: welcome,
    open (saved + sync), sync, flush (answered unless ``answer_flush`` is
    false), bye. ``after_welcome(n, ws)`` runs on connection ``n`` (from 1)
    right after the welcome; ``on_open(ws, doc_id)`` may answer an open
    itself (returning True)."""

    def __init__(
        self,
        *,
        after_welcome: Callable[[int, ServerConnection], None] | None = None,
        on_open: Callable[[ServerConnection, str], bool] | None = None,
        answer_flush: bool = True,
        reject_status: int | None = None,
        rejections: int | None = None,
    ) -> None:
        self.after_welcome = after_welcome or (lambda n, ws: None)
        self.on_open = on_open or (lambda ws, doc_id: False)
        self.answer_flush = answer_flush
        self.reject_status = reject_status
        self.rejections = rejections  # how many upgrades to reject (None: all)
        self.connections = 0
        self.handshakes = 0
        self.rejected = 0  # upgrades answered with reject_status
        self.connected_at: list[float] = []
        self.docs: dict[str, core.Document] = {}
        self.flushes: list[dict] = []
        self._lock = threading.Lock()

    def doc(self, doc_id: str) -> core.Document:
        return self.docs.setdefault(doc_id, core.Document())

    def _process_request(self, connection: ServerConnection, request) -> Response | None:
        if self.reject_status is None or (self.rejections is not None and self.rejected >= self.rejections):
            return None
        self.rejected += 1
        return Response(self.reject_status, "Rejected", Headers([("Content-Length", "0")]), b"")

    def _count_connection(self) -> int:
        with self._lock:
            self.connections += 1
            self.connected_at.append(time.monotonic())
            return self.connections

    def _read_hello(self, ws: ServerConnection) -> dict:
        hello = msgspec.msgpack.decode(ws.recv(timeout=10))
        assert hello["t"] == "hello", hello
        self.handshakes += 1
        return hello

    def _handler(self, ws: ServerConnection) -> None:
        n = self._count_connection()
        try:
            hello = self._read_hello(ws)
            ws.send(encode({"t": "welcome", "v": 1, "peer": hello["peer"], "session": f"s{n}", "caps": [], "limits": {}}))
            self.after_welcome(n, ws)
            syncs: dict[str, DocSync] = {}
            for raw in ws:
                frame = msgspec.msgpack.decode(raw)
                with self._lock:
                    self._answer(ws, frame, syncs)
        except WsClosed:
            pass

    def _answer(self, ws: ServerConnection, frame: dict, syncs: dict[str, DocSync]) -> None:
        kind = frame["t"]
        if kind == "open":
            if self.on_open(ws, frame["doc"]):
                return
            sync = syncs[frame["doc"]] = DocSync(self.doc(frame["doc"]))
            ws.send(encode({"t": "saved", "doc": frame["doc"], "heads": sync.doc.get_heads()}))
            for data in sync.generate():
                ws.send(encode({"t": "sync", "doc": frame["doc"], "data": data}))
        elif kind == "sync" and (sync := syncs.get(frame["doc"])) is not None:
            changes = sync.receive(frame["data"])
            for data in sync.generate():
                ws.send(encode({"t": "sync", "doc": frame["doc"], "data": data}))
            if changes:
                ws.send(encode({"t": "saved", "doc": frame["doc"], "heads": sync.doc.get_heads()}))
        elif kind == "flush":
            self.flushes.append(frame)
            if self.answer_flush:
                ws.send(encode({"t": "flushed", "id": frame["id"], "docs": frame["docs"]}))
        elif kind == "bye":
            ws.close(1000, "bye")

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        with serve(self._handler, "127.0.0.1", 0, process_request=self._process_request) as server:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/sync"
            finally:
                server.shutdown()
                thread.join(10)


def seeded(values: dict) -> core.Document:
    """A document holding ``values`` (flat, ints only)."""
    from automerge.document import MapWriteProxy

    doc = core.Document()
    with doc.transaction() as tx:
        proxy = MapWriteProxy(tx, core.ROOT, None)
        for key, value in values.items():
            proxy[key] = value
    return doc


# --- unknown and malformed frames --------------------------------------------


def test_decoding_is_lenient_for_unknown_types_only():
    assert decode_server_frame(encode({"t": "from_the_future", "x": [1, 2]})) is None
    saved = decode_server_frame(encode({"t": "saved", "doc": "a", "heads": [], "new_field": 1}))
    assert saved is not None and saved.doc == "a"
    for bad in (encode([1, 2]), b"\xc1", encode({"t": "saved", "doc": 3, "heads": []}), encode({"x": 1}), encode({"t": 7})):
        with pytest.raises(ProtocolError):
            decode_server_frame(bad)


async def test_unknown_message_types_are_ignored():
    def chatter(n: int, ws: ServerConnection) -> None:
        ws.send(encode({"t": "presence_v2", "who": ["x"]}))
        ws.send(encode({"t": "stats", "n": n, "nested": {"a": [1, 2, {"b": 3}]}}))

    fake = FakeBridge(after_welcome=chatter)
    fake.docs["notes"] = seeded({"from_server": 1})
    with fake.running() as url:
        async with BridgeClient(url, peer="future") as client:
            doc = await client.open("notes")
            assert doc.to_py() == {"from_server": 1}
            with doc.change() as d:
                d["from_client"] = 2
            await doc.flush()
            await eventually(lambda: core.extract(fake.docs["notes"]) == {"from_server": 1, "from_client": 2})
        assert client.connections == 1
    assert fake.connections == 1


async def test_a_malformed_frame_reconnects_with_backoff_not_in_a_loop():
    fake = FakeBridge(after_welcome=lambda n, ws: ws.send(encode([1, 2, 3])))
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.05, backoff_max=5.0) as client:
            await nothing_happens_for(1.5)
            client.abandon()
    # Backoff grows: a handful of attempts, not hundreds.
    assert 2 <= fake.connections <= 12, fake.connections


# --- errors from the shared tree ---------------------------------------------


async def test_error_frames_raise_the_doc_error_for_their_code():
    def refuse(ws: ServerConnection, doc_id: str) -> bool:
        if doc_id != "secret":
            return False
        ws.send(encode({"t": "error", "code": "forbidden", "msg": "not yours", "doc": doc_id}))
        return True

    fake = FakeBridge(on_open=refuse)
    with fake.running() as url:
        async with BridgeClient(url) as client:
            with pytest.raises(Forbidden) as info:
                await client.open("secret")
            assert isinstance(info.value, DocError) and isinstance(info.value, BridgeError)
            assert (info.value.code, info.value.doc, str(info.value)) == ("forbidden", "secret", "not yours")
            assert "secret" not in client.docs
            assert (await client.open("public")).synced  # the connection is still fine


async def test_unknown_error_codes_are_a_plain_doc_error():
    def refuse(ws: ServerConnection, doc_id: str) -> bool:
        ws.send(encode({"t": "error", "code": "brand_new", "msg": "?", "doc": doc_id}))
        return True

    with FakeBridge(on_open=refuse).running() as url:
        async with BridgeClient(url) as client:
            with pytest.raises(DocError) as info:
                await client.open("x")
            assert type(info.value) is DocError and info.value.code == "brand_new"


async def test_a_flush_not_answered_in_time_raises_flush_timeout():
    fake = FakeBridge(answer_flush=False)
    with fake.running() as url:
        async with BridgeClient(url) as client:
            doc = await client.open("slow")
            with doc.change() as d:
                d["x"] = 1
            started = time.monotonic()
            with pytest.raises(FlushTimeout) as info:
                await doc.flush(timeout=0.3)
            assert time.monotonic() - started < 3
            assert isinstance(info.value, TimeoutError)  # still caught by `except TimeoutError`
            assert info.value.doc == "slow" and info.value.request is not None
            assert not client._flushes
            client.abandon()


async def test_a_flush_timeout_error_frame_raises_flush_timeout():
    class Refusing(FakeBridge):
        def _answer(self, ws, frame, syncs):
            if frame["t"] == "flush":
                ws.send(encode({"t": "error", "code": "flush_timeout", "msg": "disk busy", "id": frame["id"]}))
            else:
                super()._answer(ws, frame, syncs)

    with Refusing().running() as url:
        async with BridgeClient(url) as client:
            doc = await client.open("busy")
            with doc.change() as d:
                d["x"] = 1
            with pytest.raises(FlushTimeout, match="disk busy"):
                await doc.flush()
            client.abandon()


# --- fatal: HTTP errors on the upgrade, fatal close codes ---------------------


async def test_a_wrong_path_is_rejected_at_once(tmp_path):
    with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None)) as running:
        url = running.ws_url.rsplit("/", 1)[0] + "/nope"
        started = time.monotonic()
        async with BridgeClient(url) as client:
            with pytest.raises(ConnectionRejected) as info:
                await client.open("x")
            assert info.value.status in (403, 404)  # uvicorn answers an unrouted upgrade with 403
            assert time.monotonic() - started < 2
            assert client.status == "failed" and client.failure is info.value
            with pytest.raises(ConnectionRejected):
                await client.wait_online()
            with pytest.raises(ConnectionRejected):
                await client._request_flush({"x": []}, None)
            assert client.connections == 0


async def test_http_404_on_the_upgrade_is_fatal_without_retries():
    fake = FakeBridge(reject_status=404)
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.01) as client:
            with pytest.raises(ConnectionRejected) as info:
                await client.wait_online()
            assert info.value.status == 404 and info.value.code == "rejected"
            await nothing_happens_for(0.3)
    assert (fake.rejected, fake.connections) == (1, 0)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_a_server_or_proxy_in_trouble_on_the_upgrade_is_retried(status):
    """uvicorn answers 500 to an upgrade while it shuts down, a proxy 502 or
    503 while the bridge restarts: come back with backoff, as the JS client does."""
    fake = FakeBridge(reject_status=status, rejections=3)
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.01, backoff_max=0.05) as client:
            await client.wait_online(timeout=10)
            assert client.failure is None and client.connections == 1
    assert fake.rejected == 3


@pytest.mark.parametrize("code", [4400, 4401, 4403, 1009])
async def test_fatal_close_codes_give_up(code):
    fake = FakeBridge(after_welcome=lambda n, ws: ws.close(code, "go away"))
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.01) as client:
            await eventually(lambda: client.failure is not None, timeout=5)
            with pytest.raises(ConnectionClosed) as info:
                await client.wait_online()
            assert (info.value.close_code, info.value.code) == (code, "closed")
            assert "go away" in str(info.value)
            assert client.status == "failed"
            with pytest.raises(ConnectionClosed):
                await client.open("other")
            with pytest.raises(ConnectionClosed):
                await client._request_flush({"other": []}, None)
            await nothing_happens_for(0.2)
    assert fake.connections == 1


@pytest.mark.parametrize("code", [1001, 4409])
async def test_going_away_and_too_slow_reconnect_at_once(code):
    fake = FakeBridge(after_welcome=lambda n, ws: ws.close(code, "later") if n == 1 else None)
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.05, backoff_max=5.0) as client:
            await eventually(lambda: client.connections == 2, timeout=5)
            assert client.failure is None
    assert fake.connected_at[1] - fake.connected_at[0] < 1.0


async def test_rate_limited_waits_for_the_delay_in_the_reason():
    fake = FakeBridge(after_welcome=lambda n, ws: ws.close(4429, "retry after 1.5") if n == 1 else None)
    with fake.running() as url:
        async with BridgeClient(url, backoff_initial=0.01, backoff_max=0.05) as client:
            await eventually(lambda: client.connections == 2, timeout=10)
    assert fake.connected_at[1] - fake.connected_at[0] >= 1.5


async def test_refused_token_is_connection_closed(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=lambda hello: hello.token == "ok")
    with serve_in_thread(app) as running:
        async with BridgeClient(running.ws_url, token="nope") as client:
            with pytest.raises(ConnectionClosed) as info:
                await client.wait_online(timeout=10)
            assert info.value.close_code == 4401
            with pytest.raises(ConnectionClosed):
                await client.open("x")


# --- open() while offline ------------------------------------------------------


async def test_open_while_the_server_is_down_returns_at_once_and_syncs_later(tmp_path):
    # The server already holds content the client has not seen.
    with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None)) as first:
        port = first.port
        async with BridgeClient(first.ws_url) as writer:
            doc = await writer.open("later")
            with doc.change() as d:
                d["from_server"] = 1
            await doc.flush()

    async with BridgeClient(f"ws://127.0.0.1:{port}/sync", backoff_initial=0.02, backoff_max=0.2) as client:
        started = time.monotonic()
        doc = await client.open("later")
        assert time.monotonic() - started < 2
        assert not doc.synced and doc.to_py() == {}
        assert client.status in ("offline", "connecting")
        with doc.change() as d:
            d["offline_edit"] = 2
        with pytest.raises(TimeoutError):
            await doc.wait_synced(timeout=0.2)

        with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None), port=port) as second:
            await doc.wait_synced(timeout=30)
            await client.wait_online(timeout=1)
            await doc.flush()
            assert doc.to_py() == {"from_server": 1, "offline_edit": 2}
            await client.close()
            assert httpx.get(f"{second.http_url}/docs/later").json() == {"from_server": 1, "offline_edit": 2}


async def test_open_while_online_waits_for_the_servers_content(bridge_server):
    async with BridgeClient(bridge_server.ws_url) as writer:
        doc = await writer.open("ready")
        with doc.change() as d:
            d["n"] = 1
        await doc.flush()
    async with BridgeClient(bridge_server.ws_url) as reader:
        doc = await reader.open("ready")
        assert doc.synced and doc.to_py() == {"n": 1}
        await doc.wait_synced(timeout=0.1)  # already: returns at once


# --- status names ----------------------------------------------------------------


async def test_status_names_follow_the_browser_client(bridge_server):
    seen: list[str] = []
    client = BridgeClient(bridge_server.ws_url)
    assert client.status == "connecting"
    async with client:
        await client.wait_online()
        assert client.status == "saved"
        doc = await client.open("status")
        with doc.change() as d:
            d["x"] = 1
        seen.append(client.status)
        await doc.flush()
        seen.append(client.status)
    seen.append(client.status)
    assert seen == ["saving", "saved", "closed"]


async def test_status_goes_offline_when_the_server_goes(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None)) as running:
            client = await stack.enter_async_context(BridgeClient(running.ws_url, backoff_initial=0.02, backoff_max=0.2))
            await client.wait_online()
        await eventually(lambda: client.status == "offline")
        client.abandon()
        assert client.status == "closed"


def test_pending_flush_is_a_small_class():
    pending = PendingFlush(7, {"d": []})
    assert (pending.id, pending.docs, pending.done) == (7, {"d": []}, False)
    pending.resolve({"d": [b"x" * 32]})
    pending.fail(BridgeError("late"))  # the first answer wins
    assert pending.done and pending.result == {"d": [b"x" * 32]} and pending.error is None
