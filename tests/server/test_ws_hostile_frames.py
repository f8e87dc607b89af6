"""Hostile input never makes the server close with 1011 (reserved for its own bugs).

Frames that msgspec rejects with something other than its own errors — a
string field holding invalid UTF-8, nesting deeper than the interpreter
recurses — are protocol violations (4400) like any other bad frame; a flush
followed at once by the close of a document it names is answered. In every
case a bystander on the same server is still served.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import pytest
from automerge import core

from bridge import Limits, create_app
from bridge.protocol import native as m
from bridge.testing import serve_in_thread

from ..rawpeer import RawPeer, text_doc

pytestmark = pytest.mark.anyio

_enc = msgspec.msgpack.encode
REPO = Path(__file__).resolve().parents[2]
BAD_UTF8 = b"\xa2\xff\xfe"  # a 2-byte MessagePack str that is not UTF-8



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Frames up to 4 MiB, so that a 1,000,000-level frame reaches the decoder.
    limits = Limits(max_frame_bytes=4 * 1024 * 1024, handshake_timeout=2.0, flush_timeout=10.0)
    app = create_app(data_dir=tmp_path_factory.mktemp("data"), limits=limits, web_dir=None)
    with serve_in_thread(app) as running:
        yield running


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_internal_errors():
    """The server logs every close it makes with a non-normal code, and every
    internal error at ERROR: neither may show a 1011 during these tests."""
    records = _Records()
    logger = logging.getLogger("bridge")
    logger.addHandler(records)
    try:
        yield
    finally:
        logger.removeHandler(records)
    internal = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR or "closing 1011" in r.getMessage()]
    assert not internal, internal


_ids = itertools.count()




def edit(doc: core.Document, key: str) -> None:
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, 1)


class Bystander:
    """A well-behaved peer with an open document, on the attacked server."""

    @classmethod
    async def join(cls, server) -> "Bystander":
        self = cls()
        self.doc_id = f"bystander-{next(_ids)}"
        self.doc = text_doc("unharmed")
        self.peer = await RawPeer.connect(server.ws_url, peer="bystander")
        await self.peer.sync_doc(self.doc_id, self.doc)
        return self

    async def still_served(self) -> None:
        """Sync a new change and get `flushed` for it."""
        edit(self.doc, f"after-{next(_ids)}")
        await self.peer.sync_doc(self.doc_id, self.doc)  # re-open: ends when saved == our heads
        await self.peer.send({"t": "flush", "id": 99, "docs": {self.doc_id: self.doc.get_heads()}})
        flushed = await self.peer.recv_until(lambda f: f["t"] in ("flushed", "error") and f.get("id") == 99)
        assert flushed == {"t": "flushed", "id": 99, "docs": {self.doc_id: self.doc.get_heads()}}
        await self.peer.close()


def deep_lists(depth: int) -> bytes:
    """An `open` whose unknown field is a list of a list of ... `depth` deep."""
    return b"\x83" + _enc("t") + _enc("open") + _enc("doc") + _enc("deep") + _enc("junk") + b"\x91" * depth + b"\xc0"


def deep_maps(depth: int) -> bytes:
    """An `open` whose first field is unknown and holds maps nested `depth` deep."""
    return b"\x83" + _enc("junk") + b"\x81\xa1k" * depth + b"\xc0" + _enc("t") + _enc("open") + _enc("doc") + _enc("deep")


def hello_with(peer: bytes, extra: bytes = b"") -> bytes:
    """A hello whose ``peer`` is the raw MessagePack ``peer``; ``extra`` is one more raw key and value."""
    head = (b"\x85" if extra else b"\x84") + _enc("t") + _enc("hello") + _enc("v") + _enc([1]) + _enc("caps") + _enc([])
    return head + _enc("peer") + peer + extra


# (frame, sent before the handshake?)
HOSTILE = {
    "hello peer is not UTF-8": (hello_with(BAD_UTF8), True),
    "open doc is not UTF-8": (b"\x82" + _enc("t") + _enc("open") + _enc("doc") + BAD_UTF8, False),
    "sync doc is not UTF-8": (b"\x83" + _enc("t") + _enc("sync") + _enc("doc") + BAD_UTF8 + _enc("data") + _enc(b"x"), False),
    "flush doc key is not UTF-8": (b"\x83" + _enc("t") + _enc("flush") + _enc("id") + _enc(1) + _enc("docs") + b"\x81" + BAD_UTF8 + _enc([]), False),
    "tag is not UTF-8": (b"\x82" + _enc("t") + BAD_UTF8 + _enc("doc") + _enc("x"), False),
    "hello nested 10,000 deep": (hello_with(_enc("p"), _enc("junk") + b"\x91" * 10_000 + b"\xc0"), True),
    "lists nested 10,000 deep": (deep_lists(10_000), False),
    "maps nested 10,000 deep": (deep_maps(10_000), False),
    "lists nested 1,000,000 deep": (deep_lists(1_000_000), False),
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_undecodable_frames_close_with_4400_and_bystanders_are_served(server, name):
    frame, before_handshake = HOSTILE[name]
    bystander = await Bystander.join(server)

    attacker = await RawPeer.connect(server.ws_url, hello=not before_handshake, peer="attacker")
    await attacker.ws.send(frame)
    assert await attacker.closed_with() == 4400

    await bystander.still_served()


async def test_flush_then_close_of_a_named_doc_is_answered(server):
    bystander = await Bystander.join(server)
    peer = await RawPeer.connect(server.ws_url, peer="flush-then-close")
    a, b = f"fc-a-{next(_ids)}", f"fc-b-{next(_ids)}"
    doc_a, doc_b = text_doc("a"), text_doc("b")
    sync_a = await peer.sync_doc(a, doc_a)
    await peer.sync_doc(b, doc_b)

    # Flush heads of `a` the server does not have yet, close `b` at once, and
    # only then send the change: the flush is answered after the close.
    edit(doc_a, "late")
    await peer.send({"t": "flush", "id": 5, "docs": {a: doc_a.get_heads(), b: doc_b.get_heads()}})
    await peer.send({"t": "close", "doc": b})
    with anyio.fail_after(10):
        while True:
            for data in sync_a.generate():
                await peer.send({"t": "sync", "doc": a, "data": data})
            frame = await peer.recv()
            if frame["t"] == "sync" and frame["doc"] == a:
                sync_a.receive(frame["data"])
            elif frame.get("id") == 5:
                break
    # Answered for both documents named, as captured when the flush was read.
    assert frame == {"t": "flushed", "id": 5, "docs": {a: doc_a.get_heads(), b: doc_b.get_heads()}}

    # The connection is still usable, `b` included.
    edit(doc_b, "reopened")
    await peer.sync_doc(b, doc_b)
    await peer.send({"t": "flush", "id": 6, "docs": {a: doc_a.get_heads(), b: doc_b.get_heads()}})
    flushed = await peer.recv_until(lambda f: f.get("id") == 6)
    assert flushed == {"t": "flushed", "id": 6, "docs": {a: doc_a.get_heads(), b: doc_b.get_heads()}}
    await peer.send({"t": "bye"})
    assert await peer.closed_with() == 1000

    await bystander.still_served()


# --- the decoder on its own ---------------------------------------------------


def test_every_decode_failure_is_a_protocol_error():
    for frame, _ in HOSTILE.values():
        with pytest.raises(m.ProtocolError) as caught:
            m.decode_client(frame)
        assert caught.value.close_code == 4400


def test_moderate_nesting_in_unknown_fields_is_still_ignored():
    assert m.decode_client(deep_lists(50)) == m.Open(doc="deep")
    assert m.decode_client(deep_maps(50)) == m.Open(doc="deep")
    assert not m.nesting_exceeds(deep_lists(50)) and m.nesting_exceeds(deep_lists(100))


def test_nesting_scan_skips_payloads_by_length():
    # bin, str and ext payloads full of container-header bytes are not containers.
    frame = _enc({"t": "sync", "doc": "d", "data": b"\x91" * 70_000, "s": "\x9f" * 300, "e": msgspec.msgpack.Ext(1, b"\xdc" * 300)})
    assert not m.nesting_exceeds(frame, limit=1)
    assert m.nesting_exceeds(_enc({"a": [[1]]}), limit=2) and not m.nesting_exceeds(_enc({"a": [[1]]}), limit=3)
    assert not m.nesting_exceeds(_enc([[]] * 500), limit=2)  # wide, not deep


def test_deep_frames_cannot_crash_an_interpreter_with_a_raised_recursion_limit():
    # msgspec's recursion is bounded by sys.getrecursionlimit(); raised this far,
    # a 1,000,000-level frame would overflow the C stack (SIGSEGV) without the
    # pre-check in bridge.protocol.native. Run where a crash cannot take pytest along.
    script = (
        "import sys\n"
        "from bridge.protocol import native as m\n"
        "e = lambda s: bytes([0xa0 + len(s)]) + s.encode()\n"
        "deep_lists = lambda n: b'\\x83' + e('t') + e('open') + e('doc') + e('deep') + e('junk') + b'\\x91' * n + b'\\xc0'\n"
        "deep_maps = lambda n: b'\\x83' + e('junk') + b'\\x81\\xa1k' * n + b'\\xc0' + e('t') + e('open') + e('doc') + e('deep')\n"
        "sys.setrecursionlimit(10_000_000)\n"
        "for frame in (deep_lists(1_000_000), deep_maps(1_000_000)):\n"
        "    try:\n"
        "        m.decode_client(frame)\n"
        "    except m.ProtocolError as exc:\n"
        "        print(exc.close_code)\n"
        "print(m.decode_client(deep_lists(50)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["4400", "4400", "Open(doc='deep')", ""]
