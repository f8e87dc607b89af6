"""Automerge's binary formats, read by a bounded parser of our own.

The Rust core (inside ``automerge==0.2.0.dev4``) trusts what it decodes: a
crafted change can panic it, make ``save()`` write bytes that do not load, or
decode into millions of operations from a few bytes. So nothing a peer sends
reaches it before this module has read the bytes with every count, length and
decompressed size bounded (the caller's :class:`Bounds`).

What is read, following the Automerge binary format specification:

- sync messages (``0x42`` v1, ``0x43`` v2): heads, need, have (last sync and a
  bloom filter), the chunk list, capabilities; and written back out
  (:func:`encode_sync_message`) once the bridge has taken out what it refused;
- chunks: change (type 1), compressed change (2, raw DEFLATE, inflated only up
  to the bound), document (0); bundles (3) are refused;
- a change's header (deps, actor, seq, start op, time, message, other actors)
  and its op columns, whose rows are counted without materialising them so a
  run-length bomb is caught by its declared length;
- a document chunk's column layout, to count its ops the same way before the
  core is allowed to load it.

Nothing here touches a Document; :mod:`bridge.core.validate` decides.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

from ..config import knob

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_DOCUMENT, CHUNK_CHANGE, CHUNK_COMPRESSED, CHUNK_BUNDLE = 0, 1, 2, 3
SYNC_V1, SYNC_V2 = 0x42, 0x43
HASH_LEN = 32

# Column types (low three bits of a column specification); bit 3 is DEFLATE.
COL_GROUP, COL_ACTOR, COL_ULEB, COL_DELTA, COL_BOOL, COL_STRING, COL_VALUE_META, COL_VALUE = range(8)
COL_DEFLATE = 0x08
ACTION_COLUMN = (4 << 4) | COL_ULEB
VALUE_META_COLUMN = (5 << 4) | COL_VALUE_META
PRED_GROUP_COLUMN = (7 << 4) | COL_GROUP
PRED_ID_COLUMNS = ((7 << 4) | COL_ACTOR, (7 << 4) | COL_DELTA)


class ChunkError(ValueError):
    """The bytes are not something the bridge lets through to the core."""


@dataclass(frozen=True)
class Bounds:
    """What incoming Automerge data may make the bridge accept: per change,
    per sync message (or HTTP body), per document, and per peer's queue of
    changes waiting for their dependencies.

    The op bounds are also stall bounds: the core's work grows with ops, and
    it holds the GIL, so one input at the bound stalls the serving loop for
    about as long as the core takes to apply it (docs/limits.md has the
    measured times).
    """

    max_ops_per_change: int = knob(
        300_000, "ops one change may hold (a 300 kB paste is 300k ops); more: error bad_sync", "COUNT")
    max_ops_per_message: int = knob(
        1_000_000, "ops one sync message or HTTP body may hold in all; more: error bad_sync", "COUNT")
    max_change_bytes: int = knob(
        16 * 1024 * 1024, "decompressed bytes of one change (inflation stops there); more: error bad_sync", "BYTES")
    max_doc_ops: int = knob(
        1_000_000, "ops a document may hold; a change that would pass it is refused with error quota", "COUNT")
    max_waiting_changes: int = knob(
        10_000, "changes one peer may have waiting for missing dependencies per document; "
        "more: error bad_sync and the queue is dropped", "COUNT")
    max_waiting_bytes: int = knob(
        32 * 1024 * 1024, "bytes of changes one peer may have waiting for missing dependencies per document; "
        "more: error bad_sync and the queue is dropped", "BYTES")
    max_changes_per_message: int = 100_000
    max_actor_bytes: int = 64
    max_other_actors: int = 10_000
    max_deps: int = 1_024
    max_heads: int = 1_024  # heads, need and last_sync lists of a sync message
    max_need: int = 100_000
    max_have: int = 16
    max_bloom_entries: int = 10_000_000
    max_bloom_probes: int = 64
    max_bloom_bits_per_entry: int = 64
    max_capabilities: int = 64


# --- LEB128 -------------------------------------------------------------------


class Reader:
    """A cursor over bytes; every read checks that the bytes are there."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise ChunkError(f"needs {n} bytes, {self.end - self.pos} left")
        start = self.pos
        self.pos += n
        return self.data[start : self.pos]

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ChunkError("unexpected end of data")
        self.pos += 1
        return self.data[self.pos - 1]

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise ChunkError("overlong LEB128")
                break
            shift += 7
            if shift >= 64:
                raise ChunkError("LEB128 longer than 64 bits")
        if result >= 1 << 64:
            raise ChunkError("LEB128 overflows 64 bits")
        return result

    def sleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= 70:
                raise ChunkError("signed LEB128 longer than 64 bits")
        if b & 0x40:
            result -= 1 << shift
        if not -(1 << 63) <= result < 1 << 63:
            raise ChunkError("signed LEB128 overflows 64 bits")
        return result

    def count(self, limit: int, what: str) -> int:
        n = self.uleb()
        if n > limit:
            raise ChunkError(f"{what}: {n} exceeds {limit}")
        return n

    def hashes(self, limit: int, what: str) -> list[bytes]:
        return [self.take(HASH_LEN) for _ in range(self.count(limit, what))]

    def prefixed(self, limit: int, what: str) -> bytes:
        return self.take(self.count(limit, what))


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


# --- sync messages ------------------------------------------------------------


@dataclass
class Have:
    last_sync: list[bytes]
    bloom: bytes


@dataclass
class SyncMessage:
    version: int
    heads: list[bytes]
    need: list[bytes]
    have: list[Have]
    chunks: list[bytes]  # each item: one or more concatenated chunks
    capabilities: bytes | None = None  # raw capability bytes, if sent


def parse_sync_message(data: bytes, bounds: Bounds) -> SyncMessage:
    r = Reader(data)
    version = r.byte()
    if version not in (SYNC_V1, SYNC_V2):
        raise ChunkError(f"not a sync message (type byte {version:#x})")
    heads = r.hashes(bounds.max_heads, "heads")
    need = r.hashes(bounds.max_need, "need")
    have = []
    for _ in range(r.count(bounds.max_have, "have entries")):
        last_sync = r.hashes(bounds.max_heads, "last_sync")
        bloom = r.prefixed(r.remaining, "bloom filter")
        check_bloom(bloom, bounds)
        have.append(Have(last_sync, bloom))
    chunks = [r.prefixed(r.remaining, "change") for _ in range(r.count(bounds.max_changes_per_message, "changes"))]
    capabilities = None
    if r.remaining:
        capabilities = r.take(r.count(bounds.max_capabilities, "capabilities"))
    if r.remaining:
        raise ChunkError(f"{r.remaining} bytes after the sync message")
    return SyncMessage(version, heads, need, have, chunks, capabilities)


def check_bloom(bloom: bytes, bounds: Bounds) -> None:
    """The core allocates ``num_probes`` slots per lookup and divides by the
    bit count: both come from the peer, so both are bounded here."""
    if not bloom:
        return
    r = Reader(bloom)
    entries = r.count(bounds.max_bloom_entries, "bloom entries")
    bits_per_entry = r.count(bounds.max_bloom_bits_per_entry, "bloom bits per entry")
    probes = r.count(bounds.max_bloom_probes, "bloom probes")
    size = (entries * bits_per_entry + 7) // 8
    if entries and (size == 0 or probes == 0):
        raise ChunkError("bloom filter with entries but no bits or no probes")
    if r.remaining != size:
        raise ChunkError(f"bloom filter holds {r.remaining} bytes, its header says {size}")


def encode_sync_message(message: SyncMessage) -> bytes:
    out = bytearray([message.version])
    for hashes in (message.heads, message.need):
        out += uleb(len(hashes)) + b"".join(hashes)
    out += uleb(len(message.have))
    for have in message.have:
        out += uleb(len(have.last_sync)) + b"".join(have.last_sync)
        out += uleb(len(have.bloom)) + have.bloom
    out += uleb(len(message.chunks))
    for chunk in message.chunks:
        out += uleb(len(chunk)) + chunk
    if message.capabilities is not None:
        out += uleb(len(message.capabilities)) + message.capabilities
    return bytes(out)


# --- chunks -------------------------------------------------------------------


@dataclass
class Change:
    """A parsed change chunk. ``chunk`` is the bytes as received (possibly
    compressed); ``hash`` is computed over the uncompressed change."""

    hash: bytes
    chunk: bytes
    deps: list[bytes]
    actor: bytes
    seq: int
    start_op: int
    time: int
    message: str
    other_actors: list[bytes]
    ops: int
    size: int  # uncompressed body bytes

    @property
    def max_op(self) -> int:
        return self.start_op + self.ops - 1


@dataclass
class DocumentChunk:
    chunk: bytes
    actors: int
    heads: list[bytes]
    changes: int  # rows in the change columns
    ops: int  # rows in the op columns


@dataclass
class Columns:
    specs: list[tuple[int, int]] = field(default_factory=list)  # (spec, length)

    @property
    def total(self) -> int:
        return sum(length for _, length in self.specs)


def split_chunks(data: bytes, bounds: Bounds) -> list[Change | DocumentChunk]:
    """Parse a buffer of one or more concatenated chunks."""
    r = Reader(data)
    out: list[Change | DocumentChunk] = []
    while r.remaining:
        out.append(read_chunk(r, bounds))
    return out


def read_chunk(r: Reader, bounds: Bounds) -> Change | DocumentChunk:
    start = r.pos
    if r.take(4) != MAGIC:
        raise ChunkError("bad magic bytes")
    checksum = r.take(4)
    chunk_type = r.byte()
    length = r.uleb()
    if length > r.remaining:
        raise ChunkError(f"chunk says {length} bytes, {r.remaining} left")
    body = r.take(length)
    chunk = r.data[start : r.pos]
    if chunk_type == CHUNK_CHANGE:
        return parse_change_body(body, chunk, checksum, bounds)
    if chunk_type == CHUNK_COMPRESSED:
        return parse_change_body(inflate(body, bounds.max_change_bytes), chunk, checksum, bounds)
    if chunk_type == CHUNK_DOCUMENT:
        return parse_document_body(body, chunk, checksum, bounds)
    if chunk_type == CHUNK_BUNDLE:
        raise ChunkError("bundle chunks are not accepted")
    raise ChunkError(f"unknown chunk type {chunk_type}")


def inflate(data: bytes, limit: int) -> bytes:
    """Raw DEFLATE, stopped as soon as the output would pass ``limit``."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ChunkError(f"bad DEFLATE data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ChunkError(f"decompresses past {limit} bytes")
    if not inflater.eof:
        raise ChunkError("truncated DEFLATE data")
    return out


def chunk_hash(chunk_type: int, body: bytes) -> bytes:
    return hashlib.sha256(bytes([chunk_type]) + uleb(len(body)) + body).digest()


def parse_change_body(body: bytes, chunk: bytes, checksum: bytes, bounds: Bounds) -> Change:
    if len(body) > bounds.max_change_bytes:
        raise ChunkError(f"change of {len(body)} bytes exceeds {bounds.max_change_bytes}")
    change_hash = chunk_hash(CHUNK_CHANGE, body)
    if change_hash[:4] != checksum:
        raise ChunkError("change checksum does not match")
    r = Reader(body)
    deps = r.hashes(bounds.max_deps, "deps")
    actor = r.prefixed(bounds.max_actor_bytes, "actor id")
    if not actor:
        raise ChunkError("empty actor id")
    seq = r.uleb()
    start_op = r.uleb()
    time = r.sleb()
    try:
        message = r.prefixed(len(body), "message").decode("utf-8")
    except UnicodeDecodeError:
        raise ChunkError("change message is not UTF-8") from None
    others = []
    for _ in range(r.count(bounds.max_other_actors, "other actors")):
        other = r.prefixed(bounds.max_actor_bytes, "actor id")
        if not other:
            raise ChunkError("empty actor id")
        others.append(other)
    columns = read_columns(r)
    for spec, _ in columns.specs:
        if spec & COL_DEFLATE:
            raise ChunkError("compressed columns inside a change")
    ops = count_ops(r, columns, bounds.max_ops_per_change, bounds.max_change_bytes)
    # Whatever follows the columns is the change's "extra bytes": allowed by
    # the format for forward compatibility, already bounded by the body size.
    return Change(change_hash, chunk, deps, actor, seq, start_op, time, message, others, ops, len(body))


def read_columns(r: Reader) -> Columns:
    columns = Columns()
    last = -1
    for _ in range(r.count(r.remaining, "columns")):
        spec, length = r.uleb(), r.uleb()
        if spec <= last:
            raise ChunkError("columns out of order")
        last = spec
        columns.specs.append((spec, length))
    if columns.total > r.remaining:
        raise ChunkError(f"columns need {columns.total} bytes, {r.remaining} left")
    return columns


def count_ops(r: Reader, columns: Columns, max_rows: int, max_decoded: int) -> int:
    """Read the column data (advancing ``r``); return the number of ops.

    Every column's rows are counted, so an op column that claims four million
    nulls in three bytes is refused before anything expands it. The op count
    is the action column's rows (every op has an action).
    """
    decoded = 0
    rows: dict[int, tuple[int, int]] = {}  # spec -> (rows, sum of values)
    raw_value_bytes = 0
    for spec, length in columns.specs:
        data = r.take(length)
        if spec & COL_DEFLATE:
            data = inflate(data, max_decoded)
        if spec & 0x07 == COL_VALUE:
            raw_value_bytes += len(data)
        count, size, total = _column_stats(spec & 0x07, data, 4 * max_rows)
        decoded += size
        if decoded > max_decoded:
            raise ChunkError(f"columns decode past {max_decoded} bytes")
        rows[spec & ~COL_DEFLATE] = (count, total)
    ops = rows.get(ACTION_COLUMN, (0, 0))[0]
    if ops > max_rows:
        raise ChunkError(f"{ops} ops exceed {max_rows}")
    # Columns agree on the op count, as Automerge's encoder writes them: one
    # row per op in every op column, one per predecessor in the predecessor
    # id columns, and as many value bytes as the value metadata announces.
    preds = rows.get(PRED_GROUP_COLUMN, (0, 0))[1]
    value_bytes = rows.get(VALUE_META_COLUMN, (0, 0))[1]
    for spec, (count, _) in rows.items():
        expected = preds if spec in PRED_ID_COLUMNS else ops
        if spec & 0x07 != COL_VALUE and count != expected:
            raise ChunkError(f"column {spec:#x} has {count} rows, expected {expected}")
    if raw_value_bytes != value_bytes:
        raise ChunkError(f"value column holds {raw_value_bytes} bytes, its metadata says {value_bytes}")
    return ops


def count_rows(col_type: int, data: bytes, max_rows: int, *, canonical: bool = False) -> tuple[int, int]:
    """Rows in one column and the bytes its values decode to (strings)."""
    rows, decoded, _ = _column_stats(col_type, data, max_rows, canonical=canonical)
    return rows, decoded


def _column_stats(col_type: int, data: bytes, max_rows: int, *, canonical: bool = True) -> tuple[int, int, int]:
    """Rows, decoded string bytes, and a total used for cross-checks: the sum
    of a group column's counts, or of the lengths a value metadata column
    announces.

    ``canonical``: also refuse an encoding that Automerge's own encoder would
    not have written (a run of one, two adjacent literal runs, a repeated
    value inside a literal run, adjacent null runs, an empty boolean run).
    The core re-encodes changes canonically when it saves a document, so a
    change that is not canonical gets a different hash there: the saved
    document no longer loads ("mismatching heads").
    """
    if col_type == COL_VALUE:
        return 0, len(data), 0
    r = Reader(data)
    rows = decoded = total = 0
    if col_type == COL_BOOL:
        first = True
        while r.remaining:
            run = r.uleb()
            if canonical and run == 0 and not first:
                raise ChunkError("non-canonical boolean column")
            first = False
            rows += run
            if rows > max_rows:
                raise ChunkError(f"column of more than {max_rows} rows")
        return rows, 0, 0
    read_value = {COL_STRING: _read_string, COL_DELTA: Reader.sleb}.get(col_type, Reader.uleb)
    previous: str | None = None  # kind of the previous run: "run", "literal" or "null"
    last: object = None  # the last value it held
    while r.remaining:
        run = r.sleb()
        if run > 0:  # one value repeated
            value = read_value(r)
            if canonical and (run < 2 or (previous in ("run", "literal") and value == last)):
                raise ChunkError("non-canonical run-length encoding")
            rows += run
            decoded += run * _size(value)
            total += run * _weight(col_type, value)
            previous, last = "run", value
        elif run < 0:  # literal values
            if canonical and previous == "literal":
                raise ChunkError("non-canonical run-length encoding")
            for _ in range(-run):
                value = read_value(r)
                if canonical and previous in ("run", "literal") and value == last:
                    raise ChunkError("non-canonical run-length encoding")
                decoded += _size(value)
                total += _weight(col_type, value)
                previous, last = "literal", value
            rows += -run
        else:  # nulls
            count = r.uleb()
            if canonical and (count == 0 or previous == "null"):
                raise ChunkError("non-canonical run-length encoding")
            rows += count
            previous, last = "null", None
        if rows > max_rows:
            raise ChunkError(f"column of more than {max_rows} rows")
    return rows, decoded, total


def _read_string(r: Reader) -> bytes:
    return r.take(r.uleb())


def _weight(col_type: int, value: object) -> int:
    if col_type == COL_GROUP:
        return value  # type: ignore[return-value]
    if col_type == COL_VALUE_META:
        return value >> 4  # type: ignore[operator]  # the low four bits are the type
    return 0


def _size(value: object) -> int:
    return len(value) if isinstance(value, bytes) else 0


def parse_document_body(body: bytes, chunk: bytes, checksum: bytes, bounds: Bounds) -> DocumentChunk:
    if chunk_hash(CHUNK_DOCUMENT, body)[:4] != checksum:
        raise ChunkError("document checksum does not match")
    r = Reader(body)
    actors = r.count(bounds.max_other_actors, "actors")
    for _ in range(actors):
        r.prefixed(bounds.max_actor_bytes, "actor id")
    heads = r.hashes(bounds.max_heads, "heads")
    change_columns = read_columns(r)
    op_columns = read_columns(r)
    limit = bounds.max_ops_per_message
    changes = _max_rows(r, change_columns, bounds.max_changes_per_message, bounds.max_change_bytes)
    ops = _max_rows(r, op_columns, limit, bounds.max_change_bytes)
    if ops > limit:
        raise ChunkError(f"document of {ops} ops exceeds {limit}")
    return DocumentChunk(chunk, actors, heads, changes, ops)


def _max_rows(r: Reader, columns: Columns, max_rows: int, max_decoded: int) -> int:
    most = decoded = 0
    for spec, length in columns.specs:
        data = r.take(length)
        if spec & COL_DEFLATE:
            data = inflate(data, max_decoded)
        rows, size = count_rows(spec & 0x07, data, 4 * max_rows)
        decoded += size + len(data)
        if decoded > max_decoded:
            raise ChunkError(f"columns decode past {max_decoded} bytes")
        most = max(most, rows)
    if most > max_rows:
        raise ChunkError(f"{most} rows exceed {max_rows}")
    return most
