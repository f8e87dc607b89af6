"""Catalog of the ways crafted input breaks the Automerge core (Rust 0.7.2 in
``automerge==0.2.0.dev4``), each with the smallest input we know, what the
raw core does with it, and which part of the guard stops it.

Used by ``tests/test_core_failure_modes.py`` and described in
``docs/core-failure-modes.md``. The raw core is only ever run here in a
subprocess with bounded address space and time (:func:`run_raw`), because
several inputs abort the process or allocate gigabytes.

``guard`` says where a mode is stopped:

- ``refused``: :class:`bridge.core.sync.DocSync` raises ``BadSyncMessage``
  before the core sees the bytes;
- ``core-failure``: the guard cannot see it; the core raises inside
  ``call_core`` and ``DocSync`` raises ``CoreFailure`` (the server's recovery
  path must then throw the in-memory document away);
- ``gap``: not stopped (the test is an xfail naming the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

from automerge import core

from . import crafting as c

# --- the document every mode is played against -------------------------------

ACTOR_A, ACTOR_B = b"\x01" * 16, b"\x02" * 16


def realistic_doc() -> tuple[core.Document, list[bytes]]:
    """A text, a list and a map edited by two actors (deterministic bytes),
    and the changes of a third, concurrent edit by B that it does not hold
    yet: the raw material the fuzz-found inputs were mutated from."""
    doc = core.Document(ACTOR_A)
    with doc.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        for i, ch in enumerate("hello"):
            tx.insert(text, i, core.ScalarType.Str, ch)
        items = tx.put_object(core.ROOT, "list", core.ObjType.List)
        tx.insert(items, 0, core.ScalarType.Int, 5)
        tx.put(core.ROOT, "n", core.ScalarType.Int, 1)
    other = doc.fork()
    other.set_actor(ACTOR_B)
    with other.transaction() as tx:
        tx.insert(text, 2, core.ScalarType.Str, "Z")
        tx.delete(text, 0)
        tx.put(core.ROOT, "n", core.ScalarType.F64, 2.5)
        tx.put(items, 0, core.ScalarType.Str, "q")
        tx.put_object(core.ROOT, "m", core.ObjType.Map)
    with doc.transaction() as tx:
        tx.insert(text, 1, core.ScalarType.Str, "Y")
        tx.delete(core.ROOT, "list")
    pending = [ch.bytes for ch in other.get_changes(doc.get_heads())]
    return doc, pending


HEAD_A2 = bytes.fromhex("fbcf0ce8fd8b029829d2778766606f63e1c242584f3c3638b0f9bac30ff10453")  # realistic_doc() head


# --- modes --------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    messages: list[bytes]  # sync messages received in order, one SyncState
    generate: bool = False  # then ask the core for its reply


@dataclass(frozen=True)
class Mode:
    name: str
    symptom: str  # what the raw core does
    raw: tuple[str, ...]  # outcomes of run_raw that mean "still fails"
    build: Callable[[list[bytes]], Input]  # from the pending honest changes
    guard: str  # "refused" | "neutralised" | "core-failure" | "gap"
    stopped_by: str  # where in the bridge
    timeout: float = 30.0
    memory: int = 2 << 30
    note: str = ""


def _msg(*chunks: bytes) -> Input:
    return Input([c.sync_message(list(chunks))])


def _have(bloom: bytes) -> Input:
    return Input([c.sync_message(heads=[b"\x11" * 32], have=[([], bloom)])], generate=True)


def _fuzz(hexmsg: str) -> Callable[[list[bytes]], Input]:
    return lambda pending: Input([bytes.fromhex(hexmsg)])


def _puts(**fields) -> bytes:
    """One put of an int on a root key, canonically encoded, with header fields."""
    return c.change(columns=CANONICAL_PUT, **fields)


def _after_time(first: int, second: int) -> Input:
    """Two changes of a new actor, times ``first`` then ``second``."""
    one = _puts(time=first)
    two = _puts(time=second, seq=2, start_op=2, deps=[c.change_hash(one)])
    return _msg(one, two)


CANONICAL_PUT = [
    (c.KEY_STR, c.rle_strings([b"k"])),
    (c.INSERT, c.bools(1)),
    (c.ACTION, c.rle_literal([c.SET])),
    (c.VAL_META, c.rle_literal([(1 << 4) | 3])),
    (c.VAL, b"\x07"),
    (c.PRED_GROUP, c.rle_literal([0])),
]

# Messages found by mutation fuzzing of the pending changes of realistic_doc()
# (the smallest of each kind); see docs/core-failure-modes.md.
FUZZ = {
    "fuzz_invalid_actor_index": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900ad01856f4a83f08b6f9501a20101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c01020208"
        "11081309150a34034202560757047006710273047e02020100017f070001020100017f0100017e037f00017f06000100"
        "027f016e00017f016d00010401017b160085011600092e641e7f0003017f0003017d02077f"
    ),
    "fuzz_batch_unwrap": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900bc01856f4a835fd5449101b10101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010900000110010101010101010101010101010101010c01080206"
        "11081309150a340342075607570a700671027304020100017f010001020100017f01020100017f0100017e037f00017f"
        "06000100027f016e00017f016d0001047e010302017f007b1600850116005a0000000000000440717f0003017f000301"
        "7d02077f"
    ),
    "fuzz_batch_entry_assert": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900b301856f4a831c6572b101a80101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c01080208"
        "11021309150a340342025607570a700671027304020100017f010001020100017f07000102007e037f00017f06000100"
        "027f016e00017f016d00010402017b1600850116005a0000000000000440717f0003017f0003017d02077f"
    ),
    "fuzz_tryfromint": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900ac01856f4a836fc0d0cc01a10101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c01080206"
        "11081302150a3403420756075701700671027304020100017f0100017f8080808010020100017f0100017f0000027f01"
        "6e00017f016d0001047e010302017f007b160085011600417f0003017f0003017d02077f"
    ),
    "fuzz_save_panics": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900b301856f4a835f98ee7c01a80101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c00030202"
        "11081309150a340342075607570a700671027304ce32d7de88020100017f0100017e037f00017f06000100027f016e00"
        "017f016d0001047e010302017f007b1600850116005a0000000000000440717f0003017f0003017d02077f"
    ),
    "fuzz_save_mismatching_heads": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900af01856f4a83808ad56c01a40101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c01020208"
        "11081309150a34034307560757017006710273047e01020100017f070001020100017f0100017e037f00017f06000100"
        "027f016e00017f016d0001047e010302017f007b1600850116004c7f0003017f0003017d02077f"
    ),
    "fuzz_save_missing_ops": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900b101856f4a83db16fd6d01a60101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010a00000110010101010101010101010101010101010c02080308"
        "11081309150a3403420256075702700671027304020100017f070001020100017f010001020100017f0100017e037f00"
        "017f06000100027f016e00017f016d0001047f037b160085011600037f7f0003017f0003017d02077f"
    ),
    "fuzz_save_max_op": (
        "42000000028f01856f4a83b61aa5d701840100100101010101010101010101010101010101010000000a010a020a1106"
        "130d1513340542085608570770020001050000017f0000010001050100017f07000100020400000300017e0002030100"
        "017f7b00017f047465787400057f046c69737400017f016e01050101017f0405017f0202017f0005167f00021468656c"
        "6c6f05010900b801856f4a83a59995c701ad0101b61aa5d703ef437fd4c222a0972148910703604100e5ad645aa928b6"
        "55a87c181002020202020202020202020202020202010900000110010101010101010101010101010101010c01080208"
        "110813091504340352075607570a700671027304020100017f010001020100017f070001020100017f0100017e037f00"
        "017f0600013f6b04890001047e010302017f007b1600850116005a0000000000000440717f0003017f0003017d02077f"
    ),
}

MODES: list[Mode] = [
    Mode(
        "seq_gap",
        "PanicException (batch.rs unwrap on None / assert seq) inside receive_sync_message; the document is unusable",
        ("panic",),
        lambda pending: _msg(c.rewrite(pending[-1], seq=3)),
        "refused",
        "bridge/core/validate.py problem(): seq must be last seq + 1",
    ),
    Mode(
        "seq_gap_new_actor",
        "PanicException: called `Option::unwrap()` on a `None` value",
        ("panic",),
        lambda pending: _msg(_puts(seq=2)),
        "refused",
        "bridge/core/validate.py problem(): seq must be last seq + 1",
    ),
    Mode(
        "timestamp_min",
        "accepted after a change of time 1; save() writes bytes that do not load "
        "(\"mismatching heads\": the document's delta-encoded time column saturates)",
        ("unloadable",),
        lambda pending: _after_time(1, -(2**63)),
        "refused",
        "bridge/core/validate.py problem(): MIN_TIME <= time <= MAX_TIME",
    ),
    Mode(
        "timestamp_max",
        "accepted after a change of time -1; save() writes bytes that do not load",
        ("unloadable",),
        lambda pending: _after_time(-1, 2**63 - 1),
        "refused",
        "bridge/core/validate.py problem(): MIN_TIME <= time <= MAX_TIME",
    ),
    Mode(
        "start_op_2_32",
        "start_op 2^32-1 is accepted; save() writes bytes that do not load; from 2^32 on the "
        "change is silently dropped",
        ("unloadable",),
        lambda pending: _msg(_puts(start_op=2**32 - 1)),
        "refused",
        "bridge/core/validate.py problem(): start_op at most the document's max op + 1",
    ),
    Mode(
        "huge_actor",
        "any actor id length is accepted and kept: a 64 MiB actor id takes ~10x its size "
        "(a 32 MiB one: 335 MB resident); with 512 MiB of address space it aborts",
        ("abort", "oom", "expensive"),
        lambda pending: _msg(_puts(actor=b"\x05" * (64 << 20))),
        "refused",
        "bridge/core/chunks.py Bounds.max_actor_bytes (64)",
        memory=512 << 20,
    ),
    Mode(
        "rle_null_bomb",
        "a 69-byte change of 4,000,000 null puts (every column one run) is applied: "
        "~11 s and ~1.5 GiB; with 512 MiB of address space it aborts",
        ("abort", "oom", "timeout", "expensive"),
        lambda pending: _msg(c.change(columns=c.null_puts(4_000_000))),
        "refused",
        "bridge/core/chunks.py count_ops(): Bounds.max_ops_per_change",
        memory=512 << 20,
    ),
    Mode(
        "compressed_bomb",
        "a 9.8 KB compressed change inflates to a 20,000,000-byte string value and is applied",
        ("expensive", "ok"),
        lambda pending: _msg(c.compressed(body=c.ChangeFields(columns=c.canonical_string_put(20_000_000)).body())),
        "refused",
        "bridge/core/chunks.py inflate(): Bounds.max_change_bytes (16 MiB decompressed)",
        note="a 10,000,000-character value (under the 16 MiB bound) is accepted by design",
    ),
    Mode(
        "bloom_probes_alloc",
        "generate_sync_message allocates num_probes * 4 bytes per hash: 2^32-1 probes is 16 GiB "
        "(\"memory allocation of 17179869180 bytes failed\", the process aborts)",
        ("abort", "oom"),
        lambda pending: _have(c.bloom(1, 8, 2**32 - 1)),
        "refused",
        "bridge/core/chunks.py check_bloom(): Bounds.max_bloom_probes (64)",
    ),
    Mode(
        "bloom_probes_cpu",
        "10^8 probes: 400 MB and seconds per change hash in generate_sync_message (10^7 froze a large document 28 s)",
        ("abort", "oom", "timeout", "expensive"),
        lambda pending: _have(c.bloom(1, 8, 10**8)),
        "refused",
        "bridge/core/chunks.py check_bloom(): Bounds.max_bloom_probes (64)",
        memory=256 << 20,
    ),
    Mode(
        "bloom_zero_bits",
        "PanicException: attempt to calculate the remainder with a divisor of zero (sync/bloom.rs)",
        ("panic",),
        lambda pending: _have(c.bloom(1, 0, 7)),
        "refused",
        "bridge/core/chunks.py check_bloom(): entries need bits and probes",
    ),
    Mode(
        "noncanonical_rle",
        "a valid change whose single values are written as runs of one is applied, but save() "
        "re-encodes it canonically, its hash changes and the saved bytes do not load (\"mismatching heads\")",
        ("unloadable",),
        lambda pending: _msg(c.change(columns=c.set_ops(1))),
        "refused",
        "bridge/core/chunks.py count_rows(canonical=True): only encodings Automerge itself writes",
    ),
    Mode(
        "missing_object",
        "PanicException: Obj ObjId(OpId(999, 1)) Missing from Index (op_set2/change/batch.rs:865); the Document is poisoned afterwards (every call: \"poisoned lock\")",
        ("panic",),
        lambda pending: _msg(
            c.change(columns=[(c.OBJ_ACTOR, c.rle_literal([0])), (c.OBJ_CTR, c.rle_literal([999]))] + CANONICAL_PUT)
        ),
        "core-failure",
        "bridge/hub.py Hub.recover: the poisoned copy is dropped and reloaded (tests/test_recovery.py)",
    ),
    Mode(
        "fuzz_batch_unwrap",
        "PanicException: called `Option::unwrap()` on a `None` value (op_set2/change/batch.rs:147) in receive_sync_message; the Document is poisoned afterwards (every call: \"poisoned lock\")",
        ("panic",),
        _fuzz(FUZZ["fuzz_batch_unwrap"]),
        "refused",
        "bridge/core/chunks.py count_rows(canonical=True)",
    ),
    Mode(
        "fuzz_batch_entry_assert",
        "PanicException: assertion failed: self.entry.is_empty() (op_set2/change/batch.rs:136) in receive_sync_message; the Document is poisoned afterwards (every call: \"poisoned lock\")",
        ("panic",),
        _fuzz(FUZZ["fuzz_batch_entry_assert"]),
        "refused",
        "bridge/core/chunks.py count_ops(): every op column has one row per op",
    ),
    Mode(
        "fuzz_tryfromint",
        "PanicException: called `Result::unwrap()` on an `Err` value: TryFromIntError (types.rs:443) in receive_sync_message; the Document is poisoned afterwards (every call: \"poisoned lock\")",
        ("panic",),
        _fuzz(FUZZ["fuzz_tryfromint"]),
        "refused",
        "bridge/core/chunks.py count_ops(): every op column has one row per op",
    ),
    Mode(
        "fuzz_save_panics",
        "accepted; then save() panics: assertion failed: self.data[index].is_none() (op_set2/change/collector.rs:272)",
        ("panic",),
        _fuzz(FUZZ["fuzz_save_panics"]),
        "refused",
        "bridge/core/chunks.py count_rows(): a column's runs must end inside its bytes",
    ),
    Mode(
        "fuzz_save_mismatching_heads",
        "accepted; save() writes bytes that do not load (\"mismatching heads\")",
        ("unloadable",),
        _fuzz(FUZZ["fuzz_save_mismatching_heads"]),
        "refused",
        "bridge/core/chunks.py count_rows(): a column's runs must end inside its bytes",
    ),
    Mode(
        "fuzz_save_missing_ops",
        "accepted; get_changes() then panics (MissingOps) and save() writes bytes that do not load (\"invalid changes: missing ops\")",
        ("unloadable", "panic"),
        _fuzz(FUZZ["fuzz_save_missing_ops"]),
        "refused",
        "bridge/core/chunks.py count_ops(): every op column has one row per op",
    ),
    Mode(
        "fuzz_save_max_op",
        "accepted; save() writes bytes that do not load (\"max_op is lower than start_op\")",
        ("unloadable",),
        _fuzz(FUZZ["fuzz_save_max_op"]),
        "refused",
        "bridge/core/chunks.py count_rows(): a column's runs must end inside its bytes",
    ),
    Mode(
        "fuzz_invalid_actor_index",
        "PanicException: called `Result::unwrap()` on an `Err` value: InvalidActorIndex in "
        "receive_sync_message; the Document is poisoned afterwards",
        ("panic",),
        _fuzz(FUZZ["fuzz_invalid_actor_index"]),
        "refused",
        "bridge/core/chunks.py count_rows(): a column's runs must end inside its bytes",
    ),
    Mode(
        "unknown_last_sync",
        "a `have` whose last_sync names a hash the document lacks: generate_sync_message then returns "
        "a message on every call and never None, so a caller that drains it (DocSync.generate) loops "
        "forever, holding every message (found by tests/fuzz: 11 GB in minutes)",
        ("endless",),
        lambda pending: Input([c.sync_message(have=[([b"\x00" * 32], b"")])], generate=True),
        "neutralised",
        "bridge/session.py: unknown last_sync hashes dropped before the core; DocSync.generate bounded",
    ),
    Mode(
        "start_op_below_deps",
        "a change whose start_op is not above the max op of its dependencies (the pending change of B, "
        "start_op 10, re-pointed at A's head whose ops reach 11) is applied; save() writes bytes that do "
        "not load (\"mismatching heads\"). Found by tests/fuzz.",
        ("unloadable",),
        lambda pending: _msg(c.rewrite(pending[-1], deps=[HEAD_A2])),
        "refused",
        "bridge/core/validate.py problem(): start_op above every dependency's highest op",
    ),
]


def mode(name: str) -> Mode:
    return next(m for m in MODES if m.name == name)


def drain(sync, limit: int | None = None) -> list[bytes]:
    """``sync.generate()`` without its unbounded loop: the messages a DocSync
    would send, or AssertionError if the core never settles (unknown_last_sync)."""
    from bridge.core.sync import call_core

    limit = GENERATE_LIMIT if limit is None else limit
    out = []
    for _ in range(limit):
        message = call_core(sync.doc.generate_sync_message, sync.state)
        if message is None:
            return out
        out.append(message.encode())
    raise AssertionError(f"generate_sync_message answered {limit} times without settling")


# --- running the raw core ------------------------------------------------------

_CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from automerge import core
job = json.loads(sys.stdin.read())
out = {"steps": []}
def report():
    sys.stdout.write(json.dumps(out) + "\n"); sys.stdout.flush()
def step(name, fn, *args):
    began = time.monotonic()
    try:
        result = fn(*args)
    except BaseException as exc:
        kind = "panic" if type(exc).__name__ == "PanicException" else "oom" if isinstance(exc, MemoryError) else "error"
        out["steps"].append([name, kind, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - began])
        out["end"] = kind
        report()
        sys.exit(0)
    out["steps"].append([name, "ok", None, time.monotonic() - began])
    report()
    return result
doc = core.Document.load(bytes.fromhex(job["doc"]))
before = doc.get_heads()
state = core.SyncState()
for message in job["messages"]:
    decoded = step("decode", core.Message.decode, bytes.fromhex(message))
    step("receive", doc.receive_sync_message, state, decoded)
if job["generate"]:
    for _ in range(job["generate_limit"]):
        if step("generate", doc.generate_sync_message, state) is None:
            break
    else:
        out["endless"] = True
heads = doc.get_heads()
saved = step("save", doc.save)
again = step("load", core.Document.load, saved)
out["applied"] = heads != before
out["end"] = "ok" if again.get_heads() == heads else "mismatch"
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
report()
"""

EXPENSIVE_SECONDS = 3.0
GENERATE_LIMIT = 100  # replies to one message before the core is said to never settle
EXPENSIVE_MB = 400


@dataclass
class RawResult:
    outcome: str  # ok | error | panic | abort | oom | timeout | unloadable | expensive | endless | harness
    detail: str = ""
    seconds: float = 0.0
    rss_mb: int = 0
    steps: list = field(default_factory=list)


def run_raw(inp: Input, doc_bytes: bytes, *, timeout: float = 30.0, memory: int = 2 << 30) -> RawResult:
    """Feed ``inp`` to the unguarded core in a subprocess (address space
    ``memory``, wall clock ``timeout``) and classify what happened.

    ``harness`` means the subprocess itself broke (no report, a Python
    traceback from the driver): that is a failure of the test, not a finding.
    """
    job = json.dumps({"doc": doc_bytes.hex(), "messages": [m.hex() for m in inp.messages], "generate": inp.generate,
                      "generate_limit": GENERATE_LIMIT})
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(memory)],
            input=job,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return RawResult("timeout", f"no answer within {timeout} s", timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {"steps": []}
    steps = report["steps"]
    report["steps"] = steps = steps[:50]
    seconds = sum(s[3] for s in steps)
    stderr_tail = proc.stderr.strip().splitlines()[-3:]
    if proc.returncode < 0 or "memory allocation of" in proc.stderr:
        kind = "oom" if "memory allocation of" in proc.stderr else "abort"
        return RawResult(kind, f"signal {-proc.returncode}: {' | '.join(stderr_tail)}", seconds, 0, steps)
    if proc.returncode != 0 or "end" not in report:
        return RawResult("harness", f"exit {proc.returncode}: {' | '.join(stderr_tail)}", seconds, 0, steps)
    end = report["end"]
    detail = steps[-1][2] or ""
    if end in ("panic", "oom"):
        return RawResult(end, detail, seconds, 0, steps)
    if end == "error":
        name = steps[-1][0]
        return RawResult("unloadable" if name == "load" else "error", f"{name}: {detail}", seconds, 0, steps)
    if end == "mismatch":
        return RawResult("unloadable", "loads back with other heads", seconds, 0, steps)
    if report.get("endless"):
        return RawResult("endless", f"generate_sync_message answered {GENERATE_LIMIT} times without settling",
                         seconds, 0, steps[:3])
    rss = report.get("rss_mb", 0)
    if seconds > EXPENSIVE_SECONDS or rss > EXPENSIVE_MB:
        return RawResult("expensive", f"applied={report['applied']}", seconds, rss, steps)
    return RawResult("ok", f"applied={report['applied']}", seconds, rss, steps)
