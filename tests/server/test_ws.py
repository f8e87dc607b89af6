"""Protocol v1 over raw frames: handshake, sync, flush, relay, and every bad input."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from automerge import core

from bridge import Limits, create_app
from bridge.testing import serve_in_thread

from ..rawpeer import RawPeer, text_doc

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = Limits(max_frame_bytes=64 * 1024, handshake_timeout=0.5, flush_timeout=1.0)
    app = create_app(data_dir=tmp_path_factory.mktemp("data"), limits=limits, web_dir=None)
    with serve_in_thread(app) as running:
        yield running




async def test_handshake_answers_welcome_with_limits(server):
    peer = await RawPeer.connect(server.ws_url)
    assert peer.welcome["v"] == 1
    assert peer.welcome["limits"]["max_frame_bytes"] == 64 * 1024
    assert peer.welcome["session"] and peer.welcome["peer"].startswith("bridge-")
    await peer.send({"t": "bye"})
    assert await peer.closed_with() == 1000


async def test_sync_flush_and_relay_between_two_raw_peers(server):
    alice, bob = await RawPeer.connect(server.ws_url), await RawPeer.connect(server.ws_url)
    doc = text_doc("hello")
    await alice.sync_doc("relay", doc)
    await alice.send({"t": "flush", "id": 7, "docs": {"relay": doc.get_heads()}})
    flushed = await alice.recv_until(lambda f: f["t"] == "flushed")
    assert flushed == {"t": "flushed", "id": 7, "docs": {"relay": doc.get_heads()}}

    bobs = core.Document()
    await bob.sync_doc("relay", bobs)
    assert core.extract(bobs) == {"text": "hello"}

    # Ephemeral messages are relayed with the sender's peer id, never stored.
    await alice.send({"t": "eph", "doc": "relay", "data": b"cursor:3"})
    eph = await bob.recv_until(lambda f: f["t"] == "eph")
    assert eph == {"t": "eph", "doc": "relay", "from": "raw", "data": b"cursor:3"}
    await alice.close()
    await bob.close()


async def test_flush_of_heads_the_server_never_gets_times_out(server):
    peer = await RawPeer.connect(server.ws_url)
    await peer.send({"t": "open", "doc": "ft"})
    await peer.send({"t": "flush", "id": 1, "docs": {"ft": [b"\x07" * 32]}})
    error = await peer.recv_until(lambda f: f["t"] == "error")
    assert error["code"] == "flush_timeout" and error["id"] == 1
    await peer.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"t": "sync", "doc": "never-opened", "data": b"x"}, "not_open"),
        ({"t": "open", "doc": "bad id with spaces"}, "bad_doc_id"),
        ({"t": "open", "doc": ""}, "bad_doc_id"),
        ({"t": "open", "doc": "x" * 257}, "bad_doc_id"),
        ({"t": "eph", "doc": "never-opened", "data": b"x"}, "not_open"),
        ({"t": "flush", "id": 3, "docs": {"never-opened": []}}, "not_open"),
    ],
)
async def test_doc_scoped_mistakes_get_an_error_and_the_connection_lives(server, frame, code):
    peer = await RawPeer.connect(server.ws_url)
    await peer.send(frame)
    error = await peer.recv_until(lambda f: f["t"] == "error")
    assert error["code"] == code
    # Still serving this connection:
    await peer.sync_doc("still-alive", text_doc("ok"))
    await peer.close()


async def test_undecodable_automerge_data_is_an_error_and_stores_nothing(server):
    peer = await RawPeer.connect(server.ws_url)
    await peer.send({"t": "open", "doc": "garbage-doc"})
    await peer.send({"t": "sync", "doc": "garbage-doc", "data": b"definitely not automerge"})
    error = await peer.recv_until(lambda f: f["t"] == "error")
    assert error["code"] == "bad_sync" and error["doc"] == "garbage-doc"
    await peer.close()
    import httpx

    assert httpx.get(f"{server.http_url}/docs/garbage-doc").json() == {}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("text frame", 4400),
        (b"\xc1\xc1", 4400),  # malformed MessagePack
        (msgspec.msgpack.encode([1, 2, 3]), 4400),  # not a map
        (msgspec.msgpack.encode({"t": "teleport"}), 4400),  # unknown t
        (msgspec.msgpack.encode({"t": "open", "doc": 42}), 4400),  # wrong field type
        (msgspec.msgpack.encode({"t": "sync", "doc": "d"}), 4400),  # missing field
        (msgspec.msgpack.encode({"t": "hello", "v": [1], "peer": "x"}), 4400),  # second hello
        (msgspec.msgpack.encode({"t": "eph", "doc": "d", "data": b"x" * 70_000}), 1009),  # too big
    ],
)
async def test_fatal_frames_close_with_the_design_code(server, raw, expected):
    bystander = await RawPeer.connect(server.ws_url, peer="bystander")
    bystanders_doc = text_doc("unharmed")
    await bystander.sync_doc("bystander", bystanders_doc)

    peer = await RawPeer.connect(server.ws_url)
    await peer.ws.send(raw)
    assert await peer.closed_with() == expected

    # Everyone else is still served:
    await bystander.send({"t": "flush", "id": 1, "docs": {"bystander": bystanders_doc.get_heads()}})
    assert (await bystander.recv_until(lambda f: f["t"] == "flushed"))["id"] == 1
    await bystander.close()


async def test_first_frame_must_be_hello(server):
    peer = await RawPeer.connect(server.ws_url, hello=False)
    await peer.send({"t": "open", "doc": "x"})
    assert await peer.closed_with() == 4400


async def test_missing_hello_times_out_with_4408(server):
    peer = await RawPeer.connect(server.ws_url, hello=False)
    assert await peer.closed_with(timeout=5) == 4408


async def test_unsupported_version_is_refused(server):
    peer = await RawPeer.connect(server.ws_url, hello=False)
    await peer.send({"t": "hello", "v": [99], "peer": "future"})
    assert await peer.closed_with() == 4400


async def test_unknown_fields_are_ignored(server):
    peer = await RawPeer.connect(server.ws_url, hello=False)
    await peer.send({"t": "hello", "v": [1, 2], "peer": "fwd", "caps": ["x"], "shiny": {"new": True}})
    assert (await peer.recv())["t"] == "welcome"
    await peer.send({"t": "open", "doc": "fwd", "priority": 5})
    assert (await peer.recv_until(lambda f: f["t"] == "saved"))["doc"] == "fwd"
    await peer.close()


async def test_bad_token_is_refused_with_4401(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=lambda hello: hello.token == "sesame")
    with serve_in_thread(app) as running:
        peer = await RawPeer.connect(running.ws_url, hello=False)
        await peer.send({"t": "hello", "v": [1], "peer": "p", "token": "wrong"})
        assert await peer.closed_with() == 4401
        peer = await RawPeer.connect(running.ws_url, hello=False)
        await peer.send({"t": "hello", "v": [1], "peer": "p", "token": "sesame"})
        assert (await peer.recv())["t"] == "welcome"
        await peer.close()


def test_a_plain_get_on_the_socket_path_says_upgrade_required(server):
    answer = httpx.get(f"{server.http_url}/sync")
    assert answer.status_code == 426 and answer.json()["error"] == "upgrade_required"
