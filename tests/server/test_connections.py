"""Connections: the HTTP header deadline, the handshake deadline and hello
size, admission caps (per address, unauthenticated, in all), and a peer that
stops reading. Against a real uvicorn server, with raw sockets and raw frames.

Each test asserts what the offender gets, and that a bystander still syncs.
"""

from __future__ import annotations

import socket

import anyio
import msgspec
import pytest
import websockets
from automerge import core

from bridge import Limits, create_app
from bridge.server.deadlines import _h11_protocol, header_timeout_protocol
from bridge.testing import serve_in_thread

from ..rawpeer import RawPeer, text_doc
from ..waiting import eventually

pytestmark = pytest.mark.anyio


def _app(tmp_path, **limits):
    return create_app(data_dir=tmp_path, limits=Limits(**limits), web_dir=None)


async def _closed_by_server(sock: socket.socket, trickle: bytes = b"", timeout: float = 10.0) -> float:
    """Send ``trickle`` one byte at a time (one per 50 ms) while waiting for
    the server to close; return how long it took."""
    started = anyio.current_time()
    sock.setblocking(False)
    with anyio.fail_after(timeout):
        i = 0
        while True:
            try:
                if not sock.recv(4096):
                    return anyio.current_time() - started
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return anyio.current_time() - started
            if i < len(trickle):
                try:
                    sock.send(trickle[i : i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    return anyio.current_time() - started
                i += 1
            await anyio.sleep(0.05)


# --- the HTTP header deadline ------------------------------------------------------


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
async def test_slow_or_silent_request_headers_are_cut_off_at_the_header_timeout(tmp_path, protocol):
    app = _app(tmp_path, header_timeout=0.5)
    overrides = {"http": _h11_protocol(0.5)} if protocol == "h11" else {}
    with serve_in_thread(app, **overrides) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))
        trickler = socket.create_connection(("127.0.0.1", server.port))
        # Bytes that never complete the headers do not extend the deadline.
        took = await _closed_by_server(trickler, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200)
        assert took < 5, took
        assert await _closed_by_server(silent) < 5
        # A real client is unaffected, and so is a WebSocket peer.
        peer = await RawPeer.connect(server.ws_url, peer="fine")
        await peer.sync_doc("d", text_doc("still served"))
        await peer.ws.close()


def test_the_header_protocol_is_uvicorns_own_with_a_deadline():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    cls = header_timeout_protocol(3.0)
    assert issubclass(cls, HttpToolsProtocol) and cls.header_timeout == 3.0


# --- before the handshake ------------------------------------------------------------


async def test_the_handshake_deadline_is_not_extended_by_traffic(tmp_path):
    with serve_in_thread(_app(tmp_path, handshake_timeout=0.5)) as server:
        ws = await websockets.connect(server.ws_url)
        started = anyio.current_time()
        code = None
        with anyio.fail_after(10):
            try:
                while True:  # pings keep the socket busy, and change nothing
                    pong = await ws.ping()
                    await pong
                    await anyio.sleep(0.05)
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
        assert code == 4408 and anyio.current_time() - started < 5


async def test_a_hello_over_max_hello_bytes_closes_1009(tmp_path):
    with serve_in_thread(_app(tmp_path, max_hello_bytes=1024)) as server:
        peer = await RawPeer.connect(server.ws_url, hello=False)
        await peer.send({"t": "hello", "v": [1], "peer": "p", "token": "x" * 4096})
        assert await peer.closed_with() == 1009
        fine = await RawPeer.connect(server.ws_url, peer="fine")
        assert fine.welcome["t"] == "welcome"


# --- admission -------------------------------------------------------------------------


async def _connect_from(url: str, address: str):
    return await websockets.connect(url, max_size=None, local_addr=(address, 0))


async def test_connections_per_address_are_capped_and_other_addresses_are_not_affected(tmp_path):
    with serve_in_thread(_app(tmp_path, max_connections_per_address=3)) as server:
        held = [await _connect_from(server.ws_url, "127.0.0.2") for _ in range(3)]
        refused = RawPeer(await _connect_from(server.ws_url, "127.0.0.2"))
        with anyio.fail_after(10):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await refused.ws.recv()
        assert closed.value.rcvd.code == 4429
        assert closed.value.rcvd.reason.startswith("retry after 5 s: at most 3 connections per client address")
        # Another address still gets in and syncs.
        bystander = await RawPeer.connect(server.ws_url, peer="bystander")
        await bystander.sync_doc("d", text_doc("other address"))
        # One leaves: its address may connect again.
        await held.pop().close()
        await eventually(lambda: server_admission(server)["connections"] == 3)
        again = RawPeer(await _connect_from(server.ws_url, "127.0.0.2"))
        await again.send({"t": "hello", "v": [1], "peer": "again"})
        assert (await again.recv())["t"] == "welcome"


def server_admission(server) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(server.http_url + "/healthz", timeout=5) as response:
        return json.load(response)["connections"]


async def test_unauthenticated_sockets_are_capped_apart_from_peers_that_finished_their_handshake(tmp_path):
    with serve_in_thread(_app(tmp_path, max_unauthenticated=2, handshake_timeout=30)) as server:
        peer = await RawPeer.connect(server.ws_url, peer="honest")  # welcomed: not counted
        silent = [await websockets.connect(server.ws_url) for _ in range(2)]
        await eventually(lambda: server_admission(server)["unauthenticated"] == 2)
        third = await websockets.connect(server.ws_url)
        with anyio.fail_after(10), pytest.raises(websockets.ConnectionClosed) as closed:
            await third.recv()
        assert closed.value.rcvd.code == 4429 and "in their handshake" in closed.value.rcvd.reason
        await peer.sync_doc("d", text_doc("the welcomed peer keeps syncing"))
        for ws in silent:
            await ws.close()
        await eventually(lambda: server_admission(server)["unauthenticated"] == 0)
        assert (await RawPeer.connect(server.ws_url, peer="later")).welcome["t"] == "welcome"


async def test_connections_in_all_are_capped(tmp_path):
    with serve_in_thread(_app(tmp_path, max_connections=2)) as server:
        first = await RawPeer.connect(server.ws_url, peer="one")
        second = await RawPeer.connect(server.ws_url, peer="two")
        third = await websockets.connect(server.ws_url)
        with anyio.fail_after(10), pytest.raises(websockets.ConnectionClosed) as closed:
            await third.recv()
        assert closed.value.rcvd.code == 4429 and "maximum of 2 connections" in closed.value.rcvd.reason
        await first.sync_doc("d", text_doc("x"))
        await second.ws.close()
        await eventually(lambda: server_admission(server)["connections"] == 1)
        assert (await RawPeer.connect(server.ws_url, peer="three")).welcome["t"] == "welcome"


# --- a peer that stops reading ---------------------------------------------------------


def _stalled_socket(url: str, frames: list[dict]) -> socket.socket:
    """A WebSocket client that sends ``frames`` and then never reads."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri(url))
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is not State.OPEN:
        protocol.receive_data(sock.recv(4096))
    for frame in frames:
        protocol.send_binary(msgspec.msgpack.encode(frame))
    sock.sendall(b"".join(protocol.data_to_send()))
    return sock


async def test_a_peer_that_stops_reading_is_dropped_and_the_writer_keeps_converging(tmp_path):
    app = _app(tmp_path, send_timeout=1.0, max_frames_per_second=None, max_bytes_per_second=None)
    with serve_in_thread(app) as server:
        writer = await RawPeer.connect(server.ws_url, peer="writer")
        doc = text_doc("")
        sync = await writer.sync_doc("big", doc)
        # The reader opens the document, then reads nothing more: a plain
        # socket with a tiny receive buffer, so the server's writes to it block.
        stalled = _stalled_socket(server.ws_url, [{"t": "hello", "v": [1], "peer": "stalled"}, {"t": "open", "doc": "big"}])
        await eventually(lambda: len(app.state.hub.loaded["big"].subscribers) == 2)
        # Presence from the writer, as fast as it goes: each relay waits for
        # the stalled socket, which never drains.
        with anyio.fail_after(30):
            i = 0
            while len(app.state.hub.loaded["big"].subscribers) == 2:
                await writer.send({"t": "eph", "doc": "big", "data": b"%06d" % i + b"x" * 60_000})
                i += 1
                if i % 20 == 0:
                    await anyio.sleep(0.01)
        # The stalled peer was let go; the writer never noticed anything.
        await eventually(lambda: len(app.state.hub.loaded["big"].subscribers) == 1, timeout=20)
        with doc.transaction() as tx:
            tx.splice_text(doc.get(core.ROOT, "text")[1], 0, 0, "after")
        await writer.sync_doc("big", doc)
        stalled.close()


async def test_a_send_racing_the_peers_close_is_a_disconnect_not_an_internal_error():
    from starlette.websockets import WebSocketDisconnect

    from bridge.server.ws import SocketPump

    class ClosedByPeer:
        async def send_bytes(self, data: bytes) -> None:
            raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.")

    pump = SocketPump(ClosedByPeer(), session=None, hub=None, limits=Limits())  # type: ignore[arg-type]
    with pytest.raises(WebSocketDisconnect):
        await pump._send_frame(b"frame")
