"""Hostile frames against one real bridge process, with bystanders watching.

One ``automerge-bridge serve`` subprocess (SQLite in a temporary data
directory) serves the whole module, so a crash of the process is seen as one.
Each hypothesis example opens an *attacker* WebSocket (a valid ``hello`` first
in most examples), sends 1-5 frames, then a probe (``flush`` of no documents)
and reads until the probe is answered or the server closes. Frames are:

- raw bytes, and now and then a text frame;
- MessagePack maps whose ``t`` is one of the protocol's types (``hello``,
  ``open``, ``sync``, ``flush``, ``close``, ``eph``, ``bye``) or not, whose
  fields hold values of the right type or of any type (64-bit edge ints,
  negative ids, invalid document ids, nested lists, strings that are not
  UTF-8, deep nesting, duplicate keys), written by a MessagePack packer of
  our own so that what msgspec would refuse to write can be sent;
- ``open`` + ``sync`` pairs whose ``data`` comes from the guard fuzz's
  strategies (``tests/fuzz/test_fuzz_guard.py``: mutated real changes, bloom
  filters, flipped document chunks, random bytes).

Attackers hit the documents the bystanders use (one of them seeded with the
guard fuzz's realistic document, so mutated changes meet their real
dependencies) as well as random ones.

Invariants, per example: the attacker is either still served (the probe is
answered) or closed with 1000, 1009, 4400 or 4408, never 1011 and never
without a close frame (1006); the server process is alive. Every
``BYSTANDER_EVERY`` examples a bystander client that keeps the shared
documents open writes a key and ``flush()``es, and a second bystander sees it;
every acknowledged key is recorded. At the end the server is stopped
(SIGTERM) and restarted on the same data directory: ``/healthz`` answers 200
and ``GET /docs/{id}`` holds every acknowledged key. The server's log (kept in
the data directory) must hold no "internal error".

Bounded like the guard fuzz: ``FUZZ_EXAMPLES`` inputs per test (default 300).
See tests/fuzz/README.md.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import sys
import time
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
import msgspec
import pytest
import websockets
from automerge import core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.client import BridgeClient
from bridge.testing import RunningBridge, serve_in_subprocess

from .test_fuzz_guard import BASE, _PENDING, column_change, flipped_document, header_change, message

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
SERVER_FUZZ = settings(
    deadline=None,
    max_examples=EXAMPLES,
    suppress_health_check=list(HealthCheck),
    database=None,
)

REAL_DOC = "fuzz-real"  # seeded with the guard fuzz's realistic document
SHARED = ["fuzz-shared-a", "fuzz-shared-b", REAL_DOC]
BYSTANDER_EVERY = 5
ALLOWED_CLOSE = {1000, 1009, 4400, 4408}
PROBE_ID = 7_777_777_777
ATTACKER_ADDRESSES = itertools.cycle(f"127.0.{a}.{b}" for a in range(1, 256) for b in range(2, 255))
READ_TIMEOUT = 15.0


# --- a MessagePack packer that writes what msgspec would not --------------------


class RawStr(bytes):
    """A MessagePack *str* whose bytes need not be UTF-8."""


class Raw(bytes):
    """Bytes that are already MessagePack (deep nesting, duplicate keys...)."""


def pack(value) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        if -32 <= value < 0:
            return struct.pack("b", value)
        if 0 <= value < 2**64:
            return b"\xcf" + value.to_bytes(8, "big")
        return b"\xd3" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, RawStr):
        return b"\xdb" + len(value).to_bytes(4, "big") + bytes(value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")  # lone surrogates: not UTF-8
        return (bytes([0xA0 | len(data)]) if len(data) < 32 else b"\xdb" + len(data).to_bytes(4, "big")) + data
    if isinstance(value, (bytes, bytearray)):
        return b"\xc6" + len(value).to_bytes(4, "big") + bytes(value)
    if isinstance(value, (list, tuple)):
        return b"\xdd" + len(value).to_bytes(4, "big") + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        return b"\xdf" + len(value).to_bytes(4, "big") + b"".join(pack(k) + pack(v) for k, v in value.items())
    raise TypeError(type(value))


# --- strategies -------------------------------------------------------------------

TYPES = ["hello", "open", "sync", "flush", "close", "eph", "bye"]
FIELDS = {
    "hello": ["v", "peer", "token", "caps"],
    "open": ["doc"],
    "sync": ["doc", "data"],
    "flush": ["id", "docs"],
    "close": ["doc"],
    "eph": ["doc", "data"],
    "bye": [],
}
EDGE_INTS = [0, 1, -1, 127, 128, -32, -33, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]

ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**63), 2**64 - 1))
not_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80", b"\xf8\x88\x80\x80\x80"]).map(RawStr)
deep = st.integers(2, 3000).map(lambda n: Raw(b"\x91" * n + b"\xc0"))
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=40), not_utf8
)
any_value = st.one_of(
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(st.one_of(st.text(max_size=8), ints), inner, max_size=4)),
                 max_leaves=12),
    deep,
)

random_valid_id = st.from_regex(r"[A-Za-z0-9._:~-]{1,24}", fullmatch=True).map(lambda s: f"fz-{s}"[:256])
bad_id = st.one_of(
    st.sampled_from(["", "a" * 257, "a/b", "ü", " ", "doc id", "..", "\x00"]), not_utf8, st.text(max_size=10)
)
doc_ids = st.one_of(st.sampled_from(SHARED), st.sampled_from(SHARED), random_valid_id, bad_id)
shared_or_random = st.one_of(st.sampled_from(SHARED), st.just(REAL_DOC), random_valid_id)
hashes = st.lists(st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)), max_size=4)
sync_data = st.one_of(message(header_change()), message(column_change()), flipped_document(), st.binary(max_size=100),
                      st.just(b"".join(_PENDING)), st.just(BASE))

TYPED = {
    "v": st.one_of(st.sampled_from([[1], [0], [2], [], [1, 2], [2**64 - 1, 1]]), st.lists(ints, max_size=3)),
    "peer": st.one_of(st.text(max_size=40), not_utf8),
    "token": st.one_of(st.none(), st.text(max_size=20)),
    "caps": st.lists(st.text(max_size=10), max_size=3),
    "doc": doc_ids,
    "data": sync_data,
    "id": ints,
    "docs": st.dictionaries(doc_ids.filter(lambda d: not isinstance(d, bytes) or isinstance(d, RawStr)), hashes,
                            max_size=3),
}


@st.composite
def protocol_map(draw) -> bytes:
    """A MessagePack map with a ``t`` and fields of the right type or any type."""
    kind = draw(st.sampled_from(TYPES + ["unknown"]))
    frame: dict = {}
    if kind == "unknown":
        t = draw(st.one_of(st.sampled_from(["welcome", "saved", "flushed", "error", "", "HELLO", "sync "]),
                           st.text(max_size=8), not_utf8, ints, st.none()))
        if draw(st.integers(0, 9)):
            frame["t"] = t
    else:
        frame["t"] = kind
    for name in FIELDS.get(kind, []):
        how = draw(st.sampled_from(["typed", "typed", "typed", "any", "missing"]))
        if how == "typed":
            frame[name] = draw(TYPED[name])
        elif how == "any":
            frame[name] = draw(any_value)
    for _ in range(draw(st.integers(0, 2))):  # unknown fields are to be ignored
        frame[draw(st.one_of(st.text(max_size=6), st.sampled_from(["t", "doc", "x"])))] = draw(any_value)
    encoded = pack(frame)
    if draw(st.integers(0, 19)) == 0:  # a duplicate key after the rest
        encoded = pack_duplicate(encoded, draw(st.sampled_from(["t", "doc", "id"])), draw(any_value))
    return encoded


def pack_duplicate(encoded: bytes, key: str, value) -> bytes:
    count = int.from_bytes(encoded[1:5], "big")
    return b"\xdf" + (count + 1).to_bytes(4, "big") + encoded[5:] + pack(key) + pack(value)


def valid_hello(peer: str = "mallory") -> bytes:
    return pack({"t": "hello", "v": [1], "peer": peer, "caps": []})


@st.composite
def step(draw) -> list[tuple[str, bytes | str]]:
    """One to two frames: ("bin", bytes) or ("text", str)."""
    kind = draw(st.sampled_from(["map", "map", "map", "sync", "sync", "sync", "raw", "text", "hello"]))
    if kind == "map":
        return [("bin", draw(protocol_map()))]
    if kind == "sync":
        doc = draw(st.one_of(st.just(REAL_DOC), shared_or_random))
        out = [("bin", pack({"t": "open", "doc": doc}))] if draw(st.integers(0, 4)) else []
        return out + [("bin", pack({"t": "sync", "doc": doc, "data": draw(sync_data)}))]
    if kind == "raw":
        return [("bin", draw(st.one_of(st.binary(max_size=300), st.binary(max_size=30).map(lambda b: b"\x82\xa1t" + b))))]
    if kind == "text":
        return [("text", draw(st.text(max_size=40)))]
    return [("bin", valid_hello(draw(st.text(max_size=10))))]


@st.composite
def attack(draw) -> list[tuple[str, bytes | str]]:
    frames: list[tuple[str, bytes | str]] = []
    if draw(st.integers(0, 9)):  # hello first in 90 % of examples
        frames.append(("bin", valid_hello()))
    for _ in range(draw(st.integers(1, 5))):
        frames += draw(step())
    return frames


# --- the server, the bystanders, the bookkeeping --------------------------------


@contextlib.contextmanager
def stderr_to(path: Path):
    """Let a child started inside inherit ``path`` as its stderr (the server log)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Fuzzed:
    def __init__(self, bridge: RunningBridge, data_dir: Path, log: Path, portal, writer, reader) -> None:
        self.bridge, self.data_dir, self.log = bridge, data_dir, log
        self.portal = portal
        self.writer, self.reader = writer, reader  # {doc_id: RemoteDoc}
        self.acked: dict[str, dict[str, int]] = {doc: {} for doc in SHARED}
        self.examples = 0
        self.rounds = 0
        self.outcomes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.began = time.monotonic()
        self.restarted_ok = False

    def tally(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def alive(self, context: str) -> None:
        code = self.bridge.process.poll()
        assert code is None, f"the bridge process died (exit {code}) {context}; log tail:\n{log_tail(self.log)}"

    async def bystander_round(self) -> None:
        doc_id = SHARED[self.rounds % len(SHARED)]
        key, value = f"ack-{self.rounds}", self.rounds
        mine, theirs = self.writer[doc_id], self.reader[doc_id]
        with mine.change() as d:
            d[key] = value
        await mine.flush(timeout=20)  # raises on flush_timeout or a failed client
        self.acked[doc_id][key] = value
        await theirs.wait_for(mine.heads, timeout=20)
        assert theirs.to_py().get(key) == value, f"{doc_id}: the other bystander does not see {key}"
        self.rounds += 1


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("server-fuzz")
    log = data_dir / "server.log"
    with contextlib.ExitStack() as stack:
        with stderr_to(log):
            bridge = stack.enter_context(serve_in_subprocess(data_dir))
        seeded = httpx.post(f"{bridge.http_url}/docs/{REAL_DOC}/changes", content=BASE, timeout=30)
        assert seeded.status_code == 200, seeded.text
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
        clients = [stack.enter_context(portal.wrap_async_context_manager(
            portal.call(lambda n=n: BridgeClient(bridge.ws_url, peer=f"bystander-{n}")))) for n in (1, 2)]  # built in the loop
        writer = {doc: portal.call(clients[0].open, doc) for doc in SHARED}
        reader = {doc: portal.call(clients[1].open, doc) for doc in SHARED}
        state = Fuzzed(bridge, data_dir, log, portal, writer, reader)
        try:
            yield state
        finally:
            total = sum(state.outcomes.values())
            print(f"\nserver fuzz: {total} attacker connections in {time.monotonic() - state.began:.1f} s; "
                  f"outcomes {dict(sorted(state.outcomes.items()))}; error frames {dict(sorted(state.errors.items()))}; "
                  f"{state.rounds} bystander rounds, {sum(map(len, state.acked.values()))} keys acknowledged; "
                  f"server log: {summarise_log(log)}")


def summarise_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "internal errors": text.count("internal error"),
        "tracebacks": text.count("Traceback"),
        "core panics": text.count("panicked at"),
        "reloads": text.count("reloading it from the store"),
        "ERROR lines": sum(" ERROR " in line for line in text.splitlines()),
    }


# --- one attacker connection ---------------------------------------------------


async def run_attack(url: str, frames: list[tuple[str, bytes | str]], abort: bool) -> tuple[str, list[str]]:
    """Send the frames and a probe; return the outcome and the error codes seen."""
    errors: list[str] = []
    # Each from an address of its own, as many attackers would: the fuzzer
    # tests what the bridge makes of their bytes, not its per-client rates
    # (tests/server/test_limits.py and tests/test_attacks.py do).
    ws = await websockets.connect(url, max_size=None, open_timeout=10, close_timeout=2,
                                  local_addr=(next(ATTACKER_ADDRESSES), 0))
    try:
        with anyio.fail_after(READ_TIMEOUT):
            try:
                for kind, payload in frames:
                    await ws.send(payload)  # str: a text frame
                await ws.send(pack({"t": "flush", "id": PROBE_ID, "docs": {}}))
                while True:
                    raw = await ws.recv()
                    if isinstance(raw, str):
                        return "text frame from the server", errors
                    frame = msgspec.msgpack.decode(raw)
                    if frame.get("t") == "error":
                        errors.append(frame.get("code", "?"))
                    if frame.get("t") == "flushed" and frame.get("id") == PROBE_ID:
                        break
            except websockets.ConnectionClosed as exc:
                return (f"closed {exc.rcvd.code}" if exc.rcvd else "closed 1006 (no close frame)"), errors
        if abort:
            ws.transport.abort()  # vanish without a close frame
        return "served", errors
    except TimeoutError:
        return f"no answer within {READ_TIMEOUT} s", errors
    finally:
        if not abort:
            await ws.close()


def check_attack(state: Fuzzed, frames: list[tuple[str, bytes | str]], abort: bool) -> None:
    outcome, errors = state.portal.call(run_attack, state.bridge.ws_url, frames, abort)
    state.tally(state.outcomes, outcome)
    for code in errors:
        state.tally(state.errors, code)
    state.alive(f"after frames {frames!r}")
    allowed = outcome == "served" or (outcome.startswith("closed ") and outcome[7:].isdigit()
                                      and int(outcome[7:]) in ALLOWED_CLOSE)
    assert allowed, f"attacker connection ended with {outcome!r} after frames {frames!r}"
    state.examples += 1
    if state.examples % BYSTANDER_EVERY == 0:
        try:
            state.portal.call(state.bystander_round)
        except Exception as exc:
            raise AssertionError(f"bystander round {state.rounds} failed after frames {frames!r}: "
                                 f"{type(exc).__name__}: {exc}\nlog tail:\n{log_tail(state.log)}") from exc


# --- tests (in file order: the restart check comes last) ---------------------------


@SERVER_FUZZ
@given(frames=attack(), abort=st.integers(0, 4).map(lambda n: n == 0))
def test_hostile_protocol_frames(fuzzed: Fuzzed, frames, abort: bool) -> None:
    check_attack(fuzzed, frames, abort)


@SERVER_FUZZ
@given(doc=st.one_of(st.just(REAL_DOC), shared_or_random),
       data=st.lists(sync_data, min_size=1, max_size=4),
       hello=st.integers(0, 19).map(bool))
def test_hostile_sync_data_on_shared_documents(fuzzed: Fuzzed, doc: str, data: list[bytes], hello: bool) -> None:
    frames = ([("bin", valid_hello())] if hello else []) + [("bin", pack({"t": "open", "doc": doc}))]
    frames += [("bin", pack({"t": "sync", "doc": doc, "data": d})) for d in data]
    check_attack(fuzzed, frames, abort=False)


def test_acknowledged_keys_survive_a_restart(fuzzed: Fuzzed) -> None:
    fuzzed.alive("before the final bystander round")
    fuzzed.portal.call(fuzzed.bystander_round)
    acked = sum(map(len, fuzzed.acked.values()))
    assert acked > 0
    # Stop: the bystanders leave (flushing), then SIGTERM, then a new process.
    bridge = fuzzed.bridge
    for doc in list(fuzzed.writer.values()) + list(fuzzed.reader.values()):
        fuzzed.portal.call(doc.close)
    bridge.process.terminate()
    bridge.process.wait(30)
    problems = summarise_log(fuzzed.log)
    with stderr_to(fuzzed.log), serve_in_subprocess(fuzzed.data_dir) as restarted:
        health = httpx.get(f"{restarted.http_url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        for doc_id, keys in fuzzed.acked.items():
            answer = httpx.get(f"{restarted.http_url}/docs/{doc_id}", timeout=30)
            assert answer.status_code == 200, f"{doc_id}: {answer.status_code} {answer.text[:300]}"
            content = answer.json()
            lost = {k: v for k, v in keys.items() if content.get(k) != v}
            assert not lost, f"{doc_id}: acknowledged keys lost across the restart: {sorted(lost)[:20]}"
            saved = httpx.get(f"{restarted.http_url}/docs/{doc_id}", params={"format": "automerge"}, timeout=30).content
            try:
                core.Document.load(saved)
            except BaseException as exc:  # noqa: B036 - a panic too
                raise AssertionError(f"{doc_id}: the saved document the server serves does not load: {exc}") from None
        print(f"\nrestart: {acked} acknowledged keys all present; health {health.json()}")
    assert problems["internal errors"] == 0, f"the server logged internal errors:\n{log_tail(fuzzed.log, 80)}"
