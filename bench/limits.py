"""Limits under attack: what one hostile peer costs everybody else.

Two parts, each against a fresh ``python -m bridge.cli serve`` process
(SQLite in a temporary directory, ``--log-level error`` so that hundreds of
4429 closes do not flood the output):

- **flood** (``limits-flood``): two honest Python ``BridgeClient``s edit one
  document at a modest rate; the bystander latency (A's change until B has
  it) is measured without an attacker, then while a flooder on another
  connection, in its own process (``python -m bench.limits flood ...``), sends
  as fast as it can: valid ``sync`` frames for its own document, ``eph``
  frames on the bystanders' document, or ``flush`` requests naming unknown
  heads of the bystanders' document. The flooder reconnects at once when it
  is closed (it ignores the 4429 retry delay) and reports its close codes.
- **inputs** (``limits-inputs``): one hostile input at a time, sent by one raw
  connection to a fresh document, while a bystander pair edits another
  document: the server's RSS before, at its peak (sampled every 20 ms on a
  thread) and after the offender left (once it settles, bounded), the
  longest edit-to-peer latency the bystanders saw while it was processed, and
  what the offender got back.

The inputs are built with ``tests/crafting.py`` before any server starts, so
building them never competes with the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Awaitable, Callable

import anyio
import psutil
import websockets

from bridge.client import BridgeClient
from bridge.protocol import native as m

from . import servers
from .drivers import _pump
from .machine import Load
from .report import Table, median, percentile, ratio, render

ROOT = servers.BENCH.parent
# Offenders connect from an address of their own, as an attacker would: the
# bridge's per-client allowances (rates kept across reconnects, loop share)
# go by client address. The bystanders are on 127.0.0.1.
OFFENDER_ADDRESS = "127.0.0.2"
SERVER_ARGS = ["--log-level", "error"]  # 4429 closes are logged as warnings: hundreds of them
SHARED = "limits-shared"
FLOOD_DOCS = {"sync-new": "limits-flood-new", "sync-existing": "limits-flood-existing"}
RATE = 20.0  # bystander edits per second
EDIT_TIMEOUT = 10.0  # an edit not seen by the peer by then counts as undelivered (inf); 5 s in --quick
EPH_FRAMES, EPH_BYTES = 3_000, 24
HELLO_NAME_BYTES = 1 << 20
NULL_BOMB_OPS = 4_000_000
DEFLATE_BOMB_BYTES = 64 << 20  # inflates to 4x the 16 MiB bound


def _connect(url: str, **kwargs):
    """A raw protocol-v1 client socket: no compression, no proxy, no pings."""
    return websockets.connect(url, max_size=None, compression=None, proxy=None, ping_interval=None,
                              open_timeout=5, close_timeout=1, **kwargs)


def _close_code(exc: websockets.ConnectionClosed) -> tuple[int, str]:
    return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (1006, "no close frame")


# --- the flooder (its own process) ---------------------------------------------------


def _has_document_chunk(frame: bytes) -> bool:
    """Whether a sync frame carries a document chunk (type 0 after the magic
    and checksum): Automerge sends the whole document that way while it
    believes the other side's copy is empty."""
    magic = b"\x85\x6f\x4a\x83"
    at = frame.find(magic)
    while at >= 0:
        if len(frame) > at + 8 and frame[at + 8] == 0:
            return True
        at = frame.find(magic, at + 1)
    return False


@dataclass
class _FloodStats:
    attempts: int = 0
    connections: int = 0  # welcomed
    frames: int = 0  # written to the socket (those after a close are never handled)
    closes: Counter = field(default_factory=Counter)
    reasons: dict = field(default_factory=dict)  # one reason per close code
    failed: list = field(default_factory=list)  # connection attempts that failed, by exception
    per_connection: list = field(default_factory=list)
    document_frames: int = 0  # sync frames carrying a document chunk (the whole document)
    errors: Counter = field(default_factory=Counter)  # error frames received, by code


async def _flood_forever(kind: str, url: str, doc_id: str, stats: _FloodStats) -> None:
    """Send ``kind`` frames as fast as possible; reconnect at once when closed.
    Runs until cancelled."""
    from automerge import core

    from bridge.core.sync import DocSync

    local = core.Document()
    sync = DocSync(local)  # the sync flooder is a faithful peer of its own document
    counter = 0
    eph = m.encode(m.Eph(doc=doc_id, data=b"\x00" * EPH_BYTES))

    def frames() -> list[bytes]:
        nonlocal counter
        counter += 1
        if kind == "sync":  # one change, as an editor would send it
            with local.transaction() as tx:
                tx.put(core.ROOT, "n", core.ScalarType.Int, counter)
            return [m.encode(m.Sync(doc=doc_id, data=data)) for data in sync.generate()]
        if kind == "eph":
            return [eph]
        return [m.encode(m.Flush(id=counter, docs={doc_id: [os.urandom(32) for _ in range(8)]}))]

    async def read(ws) -> None:
        async for frame in ws:
            message = m.decode_server(frame)
            if isinstance(message, m.Error):
                stats.errors[message.code] += 1
            elif kind == "sync" and isinstance(message, m.Sync):
                with contextlib.suppress(Exception):
                    sync.receive(message.data)

    while True:
        stats.attempts += 1
        sent = 0
        try:
            async with _connect(url, local_addr=(OFFENDER_ADDRESS, 0)) as ws:
                await ws.send(m.encode(m.Hello(v=[1], peer=f"flood-{kind}")))
                welcome = m.decode_server(await asyncio.wait_for(ws.recv(), 5))
                if not isinstance(welcome, m.Welcome):
                    stats.failed.append(f"no welcome: {welcome!r}"[:200])
                    continue
                stats.connections += 1
                if stats.connections == 1:
                    print(json.dumps({"event": "ready"}), flush=True)
                sync.reset()
                await ws.send(m.encode(m.Open(doc=doc_id)))
                reader = asyncio.ensure_future(read(ws))
                try:
                    while True:
                        if reader.done():
                            reader.result()  # raises the reader's ConnectionClosed
                            break
                        for frame in frames():
                            await ws.send(frame)
                            sent += 1
                            stats.frames += 1
                            if kind == "sync" and _has_document_chunk(frame):
                                stats.document_frames += 1
                        await asyncio.sleep(0)  # let the reader run
                finally:
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
        except websockets.ConnectionClosed as exc:
            code, reason = _close_code(exc)
            stats.closes[code] += 1
            stats.reasons.setdefault(code, reason)
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            stats.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            if len(stats.failed) > 1000:
                return
        finally:
            if sent:
                stats.per_connection.append(sent)


async def _flood(kind: str, url: str, doc_id: str, max_seconds: float) -> dict:
    """Flood until "stop" (or EOF) on stdin, or ``max_seconds``."""
    stats = _FloodStats()
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        loop.call_soon_threadsafe(stopped.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    started = time.monotonic()
    flood = asyncio.ensure_future(_flood_forever(kind, url, doc_id, stats))
    stop = asyncio.ensure_future(stopped.wait())
    await asyncio.wait([flood, stop], timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
    seconds = time.monotonic() - started  # a send blocked by a server that does not read ends here too
    for task in (flood, stop):
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(flood, 5)
    return {
        "attempts": stats.attempts, "connections": stats.connections, "frames": stats.frames,
        "seconds": seconds, "closes": {str(k): v for k, v in stats.closes.items()},
        "reasons": {str(k): v for k, v in stats.reasons.items()}, "failed": len(stats.failed),
        "failed_sample": stats.failed[:3],
        "frames_per_connection": statistics.median(stats.per_connection) if stats.per_connection else 0,
        "document_frames": stats.document_frames, "errors": dict(stats.errors),
    }


def _flooder_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits flood")
    parser.add_argument("kind", choices=["sync", "eph", "flush"])
    parser.add_argument("url")
    parser.add_argument("doc")
    parser.add_argument("max_seconds", type=float)
    args = parser.parse_args(argv)
    result = asyncio.run(_flood(args.kind, args.url, args.doc, args.max_seconds))
    print(json.dumps({"event": "result", **result}), flush=True)
    return 0


class _Flooder:
    """The harness's handle on one flooder process (JSON lines, as the Node drivers)."""

    def __init__(self, kind: str, url: str, doc_id: str, max_seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.limits", "flood", kind, url, doc_id, str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "RUST_BACKTRACE": "0"})
        self.events: queue.Queue = queue.Queue()
        self.exited = False
        threading.Thread(target=_pump, args=(0, self.process, self.events), daemon=True).start()

    def _next(self, deadline: float, what: str) -> dict:
        if self.exited:
            raise RuntimeError(f"flooder exited with {self.process.wait()} without a {what}")
        try:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))[1]
        except queue.Empty:
            raise TimeoutError(f"flooder: no {what} in time") from None
        if event["event"] == "exit":
            self.exited = True
            raise RuntimeError(f"flooder exited with {self.process.wait()} without a {what}")
        if event["event"] == "error":
            raise RuntimeError(f"flooder: {event.get('error')}")
        return event

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._next(deadline, "ready")["event"] != "ready":
            pass

    def stop(self, timeout: float = 30.0) -> dict:
        try:
            with contextlib.suppress(OSError):
                self.process.stdin.write("stop\n")
                self.process.stdin.close()
            deadline = time.monotonic() + timeout
            while (event := self._next(deadline, "result"))["event"] != "result":
                pass
            return event
        finally:
            if self.process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


# --- the bystanders --------------------------------------------------------------------


class _ClientLog(logging.Handler):
    """What bridge.client says about its connections (close codes end up here)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(record.getMessage()[:200])


@contextlib.contextmanager
def _client_log():
    logger = logging.getLogger("bridge.client")
    handler, level = _ClientLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class _Edit:
    started: float  # perf_counter
    ms: float  # math.inf if undelivered


async def _edit_once(a, b, i: int, timeout: float) -> _Edit:
    started = time.perf_counter()
    with a.change() as d:
        d["n"] = i
    try:
        await b.wait_for(a.heads, timeout=timeout)
        return _Edit(started, (time.perf_counter() - started) * 1000)
    except TimeoutError:
        return _Edit(started, math.inf)


async def _edits(a, b, n: int, *, seconds: float | None = None, on_edit: Callable[[_Edit], None] | None = None,
                 until: Callable[[], bool] | None = None, timeout: float = EDIT_TIMEOUT) -> list[_Edit]:
    """Up to ``n`` edits on A at RATE per second (paced, one at a time), each
    timed until B has it; no new edit after ``seconds`` or once ``until()``."""
    out: list[_Edit] = []
    begin = time.perf_counter()
    for i in range(n):
        if (until is not None and until()) or (seconds is not None and time.perf_counter() - begin > seconds):
            break
        await anyio.sleep(max(0.0, begin + i / RATE - time.perf_counter()))  # pacing
        edit = await _edit_once(a, b, i, timeout)
        out.append(edit)
        if on_edit is not None:
            on_edit(edit)
    return out


def _ms(edits: list[_Edit]) -> list[float]:
    return [e.ms for e in edits]


def _codes(counts: dict) -> str:
    return ", ".join(f"{code} x{n}" for code, n in sorted(counts.items())) or "none"


def _closures(said: list[str]) -> list[str]:
    return [line for line in said if "bystander" in line]


# --- part 1: flooders ---------------------------------------------------------------------


ATTACKS = {
    "sync-new": "sync flood, own new document",
    "sync-existing": "sync flood, own existing document",
    "eph": "eph flood, bystanders' document",
    "flush": "flush flood, unknown heads, bystanders' doc",
}


async def _flood_phase(server: servers.Server, attack: str, edits: int, bound: float, timeout: float) -> dict:
    kind, doc_id = ("sync", FLOOD_DOCS[attack]) if attack in FLOOD_DOCS else (attack, SHARED)
    with _client_log() as said:
        async with BridgeClient(server.ws_url, peer="bystander-a") as a, \
                BridgeClient(server.ws_url, peer="bystander-b") as b:
            if attack == "sync-existing":  # the flooder's document is on the server already
                seed = await a.open(doc_id)
                with seed.change() as d:
                    d["seed"] = 1
                await seed.flush(timeout=10)
                await seed.close()
            da, db = await a.open(SHARED), await b.open(SHARED)
            await _edits(da, db, 10)  # warm up
            with servers.Sampler(server.pid) as quiet:
                without = await _edits(da, db, edits)
            flooder = _Flooder(kind, server.ws_url, doc_id, max_seconds=bound + 60)
            try:
                await anyio.to_thread.run_sync(flooder.wait_ready)
                with servers.Sampler(server.pid) as loud:
                    flooded = await _edits(da, db, edits, seconds=bound, timeout=timeout)
            finally:
                result = await anyio.to_thread.run_sync(flooder.stop)
            reconnects = a.connections + b.connections - 2
            online = a.online and b.online
            closures = _closures(said.lines)  # before our own `bye`
    return {"without": _ms(without), "with": _ms(flooded), "flooder": result, "reconnects": reconnects,
            "online": online, "said": closures, "cpu_without": quiet.usage.cpu_percent,
            "cpu_with": loud.usage.cpu_percent}


def run_flood(quick: bool) -> Table:
    edits = 60 if quick else 300
    bound = 8.0 if quick else edits / RATE * 2  # no new edit under attack after this many seconds
    timeout = 5.0 if quick else EDIT_TIMEOUT
    table = Table("limits-flood", f"a flooder on another connection vs two bystanders editing one document "
                  f"({edits} edits at {RATE:g}/s, without then with the flooder)",
                  ["attack", "flooder frames/s", "sessions", "flooder closed (codes)", "edits with",
                   "p50 ms without", "p99 ms without", "p50 ms with", "p99 ms with", "p99 ratio", "p99 <= 2x",
                   "bystanders closed", "server CPU % without", "server CPU % with"])
    reasons, undelivered = {}, []
    for kind, label in ATTACKS.items():
        try:
            with servers.bridge(extra_args=SERVER_ARGS) as server:
                r = anyio.run(_flood_phase, server, kind, edits, bound, timeout)
        except Exception as exc:  # one broken attack must not lose the others
            traceback.print_exc()
            table.add(label, *[None] * 2, f"FAILED: {type(exc).__name__}: {exc}"[:120], *[None] * 10)
            continue
        if r["flooder"].get("document_frames"):
            table.note(f"{kind}: {r['flooder']['document_frames']:,} of the flooder's sync frames carried the whole "
                       f"document as a document chunk (Automerge does that while it believes the server's copy is "
                       f"empty; the server loads each one into a scratch document and checks every change in it)")
        flooder = r["flooder"]
        p99_without, p99_with = percentile(r["without"], 99), percentile(r["with"], 99)
        p99_ratio = ratio(p99_with, p99_without)
        if p99_ratio is None and p99_with is not None and math.isinf(p99_with):
            p99_ratio = math.inf
        closed = r["reconnects"] > 0 or not r["online"]
        table.add(label, flooder["frames"] / flooder["seconds"], flooder["connections"],
                  _codes(flooder["closes"]), len(r["with"]), median(r["without"]), p99_without,
                  median(r["with"]), p99_with, p99_ratio,
                  "yes" if p99_ratio is not None and p99_ratio <= 2 else "NO",
                  f"YES ({r['reconnects']} reconnects)" if closed else "no", r["cpu_without"], r["cpu_with"])
        for code, reason in flooder["reasons"].items():
            reasons.setdefault(code, reason)
        lost = sum(math.isinf(x) for x in r["with"] + r["without"])
        if lost:
            undelivered.append(f"{kind}: {lost}")
        if flooder["failed"]:
            table.note(f"{kind}: {flooder['failed']} flooder connection attempts failed, e.g. {flooder['failed_sample'][0]}")
        if r["said"]:
            table.note(f"{kind}: the bystanders' client said: {'; '.join(r['said'][:3])}")
        errors = f"; error frames it got: {_codes(flooder['errors'])}" if flooder.get("errors") else ""
        table.note(f"{kind}: the flooder wrote {flooder['frames']:,} frames in {flooder['seconds']:.1f} s over "
                   f"{flooder['connections']} sessions, median {flooder['frames_per_connection']:,.0f} frames per "
                   f"session{errors}")
    table.note("flooder frames/s = frames it wrote to its socket (frames after the server decided to close it are "
               "never handled); sessions = welcomed connections; it reconnects at once, ignoring the retry delay")
    for code, reason in sorted(reasons.items()):
        table.note(f"close {code} reason, e.g.: {reason!r}")
    table.note(f"latency: bystander A's change until B has it, one edit at a time, paced at {RATE:g}/s; "
               f"without = the same two clients just before the flooder started, same server process; "
               f"edits with = edits made under attack (no new edit after {bound:g} s); not seen within "
               f"{timeout:g} s counts as inf: {', '.join(undelivered) or 'none'}")
    table.note("the flooder is a Python process of its own (websockets + msgspec); the bystanders are Python "
               "BridgeClients in the harness; all share the machine's cores with the server. Sync flood: one "
               "change (a put on one key) per frame, answering the server's sync as a real peer; eph: 24-byte "
               "payloads; flush: 8 random heads per request")
    return table


# --- part 2: hostile inputs ---------------------------------------------------------------


@dataclass
class _Input:
    name: str
    frame_bytes: int
    offend: Callable[[str, str], Awaitable[dict]]  # (url, doc) -> {"got", "detail", "seconds"}
    detail: str = ""


async def _opened(url: str, doc_id: str, peer: str, **kwargs):
    """A raw connection that said hello and opened ``doc_id`` (first `saved` seen)."""
    ws = await _connect(url, **kwargs)
    await ws.send(m.encode(m.Hello(v=[1], peer=peer)))
    with anyio.fail_after(10):
        assert isinstance(m.decode_server(await ws.recv()), m.Welcome)
        await ws.send(m.encode(m.Open(doc=doc_id)))
        while not isinstance(m.decode_server(await ws.recv()), m.Saved):
            pass
    return ws


async def _answer(ws, accept_hash: bytes | None, timeout: float) -> tuple[str, str]:
    """Read until an error frame, a close, or a `saved` holding ``accept_hash``."""
    try:
        with anyio.fail_after(timeout):
            while True:
                message = m.decode_server(await ws.recv())
                if isinstance(message, m.Error):
                    return f"error {message.code}", message.msg
                if isinstance(message, m.Saved) and accept_hash is not None and accept_hash in message.heads:
                    return "accepted (saved)", "its change is durable"
    except websockets.ConnectionClosed as exc:
        code, reason = _close_code(exc)
        return f"close {code}", reason
    except TimeoutError:
        return f"nothing in {timeout:g} s", ""


def _sync_offender(data: bytes, change_hash: bytes, timeout: float):
    async def offend(url: str, doc_id: str) -> dict:
        ws = await _opened(url, doc_id, "offender", local_addr=(OFFENDER_ADDRESS, 0))
        try:
            started = time.perf_counter()
            await ws.send(m.encode(m.Sync(doc=doc_id, data=data)))
            got, detail = await _answer(ws, change_hash, timeout)
            return {"got": got, "detail": detail, "seconds": time.perf_counter() - started}
        finally:
            await ws.close()

    return offend


def _hello_offender(frame: bytes):
    async def offend(url: str, doc_id: str) -> dict:
        async with _connect(url, local_addr=(OFFENDER_ADDRESS, 0)) as ws:
            started = time.perf_counter()
            await ws.send(frame)
            got, detail = await _answer(ws, None, 10)
            return {"got": got, "detail": detail, "seconds": time.perf_counter() - started}

    return offend


# Frames per session: with hello and open, under a full bucket's burst of 400.
# The bucket is the client's and carries over to its next connection, so
# after the first session the offender is closed with 4429 and reconnects.
EPH_SESSION = 390


async def _eph_offender(url: str, doc_id: str) -> dict:
    # The subscriber opens the document, then never reads again: websockets
    # stops reading its socket once a frame is queued (max_queue=1).
    listener = await _opened(url, doc_id, "non-reader", max_queue=1)
    frame = m.encode(m.Eph(doc=doc_id, data=b"\x01" * EPH_BYTES))
    sent, closes, sessions = 0, Counter(), 0
    started = time.perf_counter()
    with anyio.move_on_after(60):
        while sent < EPH_FRAMES:
            try:
                async with _connect(url, local_addr=(OFFENDER_ADDRESS, 0)) as ws:
                    await ws.send(m.encode(m.Hello(v=[1], peer="offender")))
                    await ws.recv()
                    sessions += 1
                    await ws.send(m.encode(m.Open(doc=doc_id)))
                    for _ in range(min(EPH_SESSION, EPH_FRAMES - sent)):
                        await ws.send(frame)
                        sent += 1
            except websockets.ConnectionClosed as exc:
                closes[_close_code(exc)[0]] += 1
    seconds = time.perf_counter() - started
    # What waited for the non-reader once it reads (bounded), and whether it was closed.
    relayed, fate = 0, "still open"
    try:
        with anyio.move_on_after(2):
            while True:
                if isinstance(m.decode_server(await listener.recv()), m.EphRelay):
                    relayed += 1
    except websockets.ConnectionClosed as exc:
        fate = f"closed {_close_code(exc)[0]}"
    await listener.close()
    got = f"{_codes(closes)} over {sessions} sessions" if closes else f"no close, {sessions} sessions"
    return {"got": got, "seconds": seconds,
            "detail": f"{sent:,} frames in sessions of at most {EPH_SESSION} (the client's buckets carry over reconnects); "
                      f"the non-reader, reading afterwards, found {relayed:,} relayed eph frames and was {fate}"}


def build_inputs() -> list[_Input]:
    """Every hostile input, built with tests/crafting.py before any server runs."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import crafting  # the repository's test helpers

    from bridge.core.chunks import CHUNK_CHANGE, Bounds, chunk_hash

    inputs = []
    bomb = crafting.change(columns=crafting.null_puts(NULL_BOMB_OPS))
    bomb_msg = crafting.sync_message([bomb], heads=[crafting.change_hash(bomb)])
    inputs.append(_Input(f"run-length bomb: {NULL_BOMB_OPS:,} null puts", len(bomb_msg),
                         _sync_offender(bomb_msg, crafting.change_hash(bomb), 60),
                         f"a {len(bomb):,}-byte change declaring {NULL_BOMB_OPS:,} ops"))

    body = crafting.ChangeFields(columns=crafting.canonical_string_put(DEFLATE_BOMB_BYTES)).body()
    deflated, inflated_hash, inflated = crafting.compressed(body=body), chunk_hash(CHUNK_CHANGE, body), len(body)
    del body
    deflate_msg = crafting.sync_message([deflated], heads=[inflated_hash])
    inputs.append(_Input(f"DEFLATE bomb: {inflated / 2**20:.0f} MiB inflated", len(deflate_msg),
                         _sync_offender(deflate_msg, inflated_hash, 60),
                         f"a {len(deflated):,}-byte compressed change holding one {DEFLATE_BOMB_BYTES:,}-byte string"))

    under = Bounds().max_ops_per_change - 1
    big = crafting.change(columns=crafting.null_puts(under))
    big_msg = crafting.sync_message([big], heads=[crafting.change_hash(big)])
    inputs.append(_Input(f"accepted: {under:,} null puts (bound - 1)", len(big_msg),
                         _sync_offender(big_msg, crafting.change_hash(big), 120),
                         f"a {len(big):,}-byte change just under Bounds.max_ops_per_change ({under + 1:,})"))

    hello = m.encode(m.Hello(v=[1], peer="x" * HELLO_NAME_BYTES))
    inputs.append(_Input(f"hello with a {HELLO_NAME_BYTES // 2**20} MB peer name", len(hello), _hello_offender(hello),
                         f"MAX_PEER_NAME is {m.MAX_PEER_NAME}"))

    eph = m.encode(m.Eph(doc="limits-input-5", data=b"\x01" * EPH_BYTES))
    inputs.append(_Input(f"{EPH_FRAMES:,} eph x {EPH_BYTES} B to a non-reader", len(eph), _eph_offender))
    return inputs


def _rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def _settled_rss(process: psutil.Process, seconds: float) -> tuple[float, bool]:
    """RSS once five samples 100 ms apart agree within 1 MB (bounded by ``seconds``)."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        samples.append(_rss_mb(process))
        if len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < 1.0:
            return samples[-1], True
        await anyio.sleep(0.1)  # the polling interval of a bounded wait
    return _rss_mb(process), False


async def _input_phase(server: servers.Server, item: _Input, doc_id: str, settle: float) -> dict:
    process = psutil.Process(server.pid)
    log: list[_Edit] = []
    quiet_enough, past_window = anyio.Event(), anyio.Event()
    window_end: list[float] = []  # once an edit started after this is done, the window is over
    stop = False

    def on_edit(edit: _Edit) -> None:
        log.append(edit)
        if len(log) >= RATE:
            quiet_enough.set()
        if window_end and edit.started >= window_end[0]:
            past_window.set()

    with _client_log() as said:
        async with BridgeClient(server.ws_url, peer="bystander-a") as a, \
                BridgeClient(server.ws_url, peer="bystander-b") as b:
            da, db = await a.open("limits-bystander"), await b.open("limits-bystander")
            await _edits(da, db, 5)  # warm up
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(_edits, da, db, 1_000_000, on_edit=on_edit, until=lambda: stop))
                with anyio.fail_after(30):
                    await quiet_enough.wait()  # a second of edits before the input
                quiet = _ms(log)
                before = _rss_mb(process)
                with servers.Sampler(server.pid, interval=0.02) as sampler:
                    sent_at = time.perf_counter()
                    outcome = await item.offend(server.ws_url, doc_id)  # the offender has disconnected
                    answered_at = time.perf_counter()
                    window_end.append(answered_at + 0.5)
                    with anyio.fail_after(30):
                        await past_window.wait()
                stop = True
            after, settled = await _settled_rss(process, settle)
            reconnects = a.connections + b.connections - 2
            closures = _closures(said.lines)
    window = [e for e in log if sent_at - 1 / RATE <= e.started <= answered_at + 0.5]
    return {**outcome, "before": before, "peak": sampler.usage.rss_mb_peak, "after": after, "settled": settled,
            "quiet_p50": median(quiet), "stall": max((e.ms for e in window), default=None),
            "window_edits": len(window), "reconnects": reconnects, "said": closures, "alive": process.is_running()}


def run_inputs(quick: bool) -> Table:
    table = Table("limits-inputs", "hostile inputs, one connection each to a fresh document (fresh server), while "
                  f"a bystander pair edits another document at {RATE:g}/s",
                  ["input", "frame bytes", "offender got", "answer ms", "RSS before MB", "RSS peak MB",
                   "RSS after MB", "bystander p50 ms", "bystander max ms", "bystanders closed"])
    settle = 3.0 if quick else 8.0
    for n, item in enumerate(build_inputs(), start=1):
        try:
            with servers.bridge(extra_args=SERVER_ARGS) as server:
                r = anyio.run(_input_phase, server, item, f"limits-input-{n}", settle)
        except Exception as exc:  # one broken input must not lose the others
            traceback.print_exc()
            table.add(item.name, item.frame_bytes, f"FAILED: {type(exc).__name__}: {exc}"[:120], *[None] * 7)
            continue
        closed = f"YES ({r['reconnects']} reconnects)" if r["reconnects"] else "no"
        table.add(item.name, item.frame_bytes, r["got"], r["seconds"] * 1000, r["before"], r["peak"],
                  r["after"] if r["settled"] else f"{r['after']:.1f} (not settled)", r["quiet_p50"], r["stall"],
                  closed)
        detail = "; ".join(x for x in (item.detail, r["detail"] and f"answer: {r['detail']!r}"[:200]) if x)
        table.note(f"{item.name}: {detail}; bystander max over {r['window_edits']} edits")
        if r["said"]:
            table.note(f"{item.name}: the bystanders' client said: {'; '.join(r['said'][:3])}")
        if not r["alive"]:
            table.note(f"{item.name}: THE SERVER PROCESS DIED")
    table.note("answer ms: the offender's send until its answer (error frame, close, or `saved` holding the "
               "change); for the eph input, until every frame was written")
    table.note(f"RSS by psutil on the server pid: before = just before the input; peak = max of samples every "
               f"20 ms while it was processed; after = once 5 samples 100 ms apart agree within 1 MB after the "
               f"offender left (at most {settle:g} s)")
    table.note("bystander max = the longest edit-to-peer latency of edits started from the input's send until "
               "0.5 s after its answer; p50 = the second of edits just before it")
    return table


# --- the scenario ---------------------------------------------------------------------------


@dataclass
class LimitsTable(Table):
    """The inputs table, carrying the flood table in ``parts`` for the JSON output."""

    parts: list = field(default_factory=list)


def run(quick: bool) -> Table:
    with Load() as load:
        try:
            flood = run_flood(quick)
        except Exception as exc:  # one broken part must not lose the other
            traceback.print_exc()
            flood = Table("limits-flood", "FAILED", ["error"], [[f"{type(exc).__name__}: {exc}"[:300]]])
    flood.note(load.summary())
    flood.machine = load.as_dict()
    print(render(flood), "", sep="\n", flush=True)
    inputs = run_inputs(quick)
    table = LimitsTable(inputs.scenario, inputs.title, inputs.columns, inputs.rows, inputs.notes)
    table.parts.append(flood)
    return table


if __name__ == "__main__":
    if sys.argv[1:2] == ["flood"]:
        sys.exit(_flooder_main(sys.argv[2:]))
    print("usage: python -m bench.limits flood KIND URL DOC MAX_SECONDS (or python -m bench --only limits)")
    sys.exit(2)
