"""Craft Automerge binary data for tests: change chunks from header fields and
raw op columns, rewrites of real changes, run-length bombs, compressed
chunks, bloom filters and sync messages carrying any of them.

Everything is written with the helpers of :mod:`bridge.core.chunks` (LEB128,
chunk hashes, the sync message encoder), so what is crafted here is read
back by the same code the guard uses. Nothing here checks that the result
makes sense: producing data that does not is the point.

Column specifications (``(column id << 4) | type``) used by changes::

    OBJ_ACTOR 0x01  OBJ_CTR 0x02   KEY_ACTOR 0x11  KEY_CTR 0x13  KEY_STR 0x15
    ID_ACTOR 0x21   ID_CTR 0x23    INSERT 0x34     ACTION 0x42
    VAL_META 0x56   VAL 0x57       PRED_GROUP 0x70 PRED_ACTOR 0x71 PRED_CTR 0x73
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from bridge.core.chunks import (
    CHUNK_CHANGE,
    CHUNK_COMPRESSED,
    CHUNK_DOCUMENT,
    HASH_LEN,
    MAGIC,
    SYNC_V1,
    Have,
    Reader,
    SyncMessage,
    chunk_hash,
    encode_sync_message,
    sleb,
    uleb,
)

OBJ_ACTOR, OBJ_CTR = 0x01, 0x02
KEY_ACTOR, KEY_CTR, KEY_STR = 0x11, 0x13, 0x15
ID_ACTOR, ID_CTR = 0x21, 0x23
INSERT, ACTION = 0x34, 0x42
VAL_META, VAL = 0x56, 0x57
PRED_GROUP, PRED_ACTOR, PRED_CTR = 0x70, 0x71, 0x73

# Actions (the ACTION column's values).
MAKE_MAP, SET, MAKE_LIST, DEL, MAKE_TEXT, INC = 0, 1, 2, 3, 4, 5

Columns = list[tuple[int, bytes]]


# --- chunks -------------------------------------------------------------------


def chunk(chunk_type: int, body: bytes, *, checksum: bytes | None = None, hash_type: int | None = None) -> bytes:
    """``MAGIC | checksum | type | uleb(len) | body``. The checksum is the first
    four bytes of sha256(hash_type | uleb(len) | body) unless given."""
    if checksum is None:
        checksum = chunk_hash(chunk_type if hash_type is None else hash_type, body)[:4]
    return MAGIC + checksum + bytes([chunk_type]) + uleb(len(body)) + body


def rechecksum(data: bytes) -> bytes:
    """The same (uncompressed) chunk with its checksum recomputed, e.g. after
    bytes of its body were flipped."""
    r = Reader(data)
    r.take(8)
    chunk_type = r.byte()
    body = r.take(r.uleb())
    return chunk(chunk_type, body) + data[r.pos :]


def encode_columns(columns: Columns) -> bytes:
    """Column metadata (count, then spec and length of each) and data."""
    out = bytearray(uleb(len(columns)))
    for spec, data in columns:
        out += uleb(spec) + uleb(len(data))
    for _, data in columns:
        out += data
    return bytes(out)


@dataclass
class ChangeFields:
    """A change's header, its op columns (as raw bytes) and its extra bytes."""

    actor: bytes = b"\xaa" * 16
    seq: int = 1
    start_op: int = 1
    time: int = 0
    message: bytes | str = b""
    deps: list[bytes] = field(default_factory=list)
    other_actors: list[bytes] = field(default_factory=list)
    columns: Columns = field(default_factory=list)
    extra: bytes = b""

    def body(self) -> bytes:
        message = self.message.encode() if isinstance(self.message, str) else self.message
        out = bytearray(uleb(len(self.deps)) + b"".join(self.deps))
        out += uleb(len(self.actor)) + self.actor
        out += uleb(self.seq) + uleb(self.start_op) + sleb(self.time)
        out += uleb(len(message)) + message
        out += uleb(len(self.other_actors))
        for other in self.other_actors:
            out += uleb(len(other)) + other
        out += encode_columns(self.columns)
        return bytes(out) + self.extra

    def chunk(self) -> bytes:
        return chunk(CHUNK_CHANGE, self.body())

    def hash(self) -> bytes:
        return chunk_hash(CHUNK_CHANGE, self.body())


def change(**fields) -> bytes:
    """A change chunk with a correct checksum from header fields and columns
    (see :class:`ChangeFields` for the names and defaults)."""
    return ChangeFields(**fields).chunk()


def change_hash(change_chunk: bytes) -> bytes:
    """The hash of an uncompressed change chunk (what deps and heads name)."""
    r = Reader(change_chunk)
    r.take(8)
    chunk_type = r.byte()
    return chunk_hash(chunk_type, r.take(r.uleb()))


def parse_change(change_chunk: bytes) -> ChangeFields:
    """Split a change chunk (uncompressed) into its fields, keeping the op
    columns as raw bytes; whatever follows them becomes ``extra``."""
    r = Reader(change_chunk)
    if r.take(4) != MAGIC:
        raise ValueError("not a chunk")
    r.take(4)
    if r.byte() != CHUNK_CHANGE:
        raise ValueError("not an uncompressed change chunk")
    b = Reader(r.take(r.uleb()))
    deps = [b.take(HASH_LEN) for _ in range(b.uleb())]
    actor = b.take(b.uleb())
    seq, start_op, time = b.uleb(), b.uleb(), b.sleb()
    message = b.take(b.uleb())
    others = [b.take(b.uleb()) for _ in range(b.uleb())]
    specs = [(b.uleb(), b.uleb()) for _ in range(b.uleb())]
    columns = [(spec, b.take(length)) for spec, length in specs]
    extra = b.take(b.remaining)
    return ChangeFields(actor, seq, start_op, time, message, deps, others, columns, extra)


def rewrite(change_chunk: bytes, **fields) -> bytes:
    """A real change re-encoded with some fields replaced (correct checksum)."""
    return replace(parse_change(change_chunk), **fields).chunk()


def compressed(change_chunk: bytes | None = None, *, body: bytes | None = None, level: int = 9) -> bytes:
    """A compressed change chunk (type 2): the change's body as raw DEFLATE,
    the checksum that of the uncompressed change. Pass a change chunk, or the
    uncompressed ``body`` directly (e.g. something huge)."""
    if body is None:
        r = Reader(change_chunk)
        r.take(9)
        body = r.take(r.uleb())
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    deflated = deflater.compress(body) + deflater.flush()
    return chunk(CHUNK_COMPRESSED, deflated, checksum=chunk_hash(CHUNK_CHANGE, body)[:4])


def document(body: bytes) -> bytes:
    return chunk(CHUNK_DOCUMENT, body)


# --- columns ------------------------------------------------------------------


def rle_nulls(n: int) -> bytes:
    """An RLE column of ``n`` nulls: run length 0, then the count."""
    return sleb(0) + uleb(n)


def rle_run(n: int, value: int, *, signed: bool = False) -> bytes:
    """``value`` repeated ``n`` times in an RLE column (uleb, or sleb for delta)."""
    return sleb(n) + (sleb(value) if signed else uleb(value))


def rle_literal(values: list[int], *, signed: bool = False) -> bytes:
    enc = sleb if signed else uleb
    return sleb(-len(values)) + b"".join(enc(v) for v in values)


def rle_strings(values: list[bytes]) -> bytes:
    """A literal run of strings (which need not be UTF-8)."""
    return sleb(-len(values)) + b"".join(uleb(len(v)) + v for v in values)


def bools(*runs: int) -> bytes:
    """A boolean column: alternating run lengths, starting with false."""
    return b"".join(uleb(n) for n in runs)


def set_ops(n: int, key: bytes = b"k", value: int = 1) -> Columns:
    """``n`` map puts of an int on the root, every column one run. Well formed,
    but not canonical for ``n == 1`` (the core writes a single value as a
    literal run), which the core accepts and then cannot save faithfully."""
    return [
        (KEY_STR, sleb(n) + uleb(len(key)) + key),
        (INSERT, bools(n)),
        (ACTION, rle_run(n, SET)),
        (VAL_META, rle_run(n, (1 << 4) | 3)),  # a 1-byte uint
        (VAL, bytes([value & 0x7F]) * n),
        (PRED_GROUP, rle_run(n, 0)),
    ]


def null_puts(n: int, key: bytes = b"k") -> Columns:
    """``n`` puts of null on one root key, every column a single run: a
    well-formed change of ``n`` ops in a few dozen bytes (a run-length bomb)."""
    return [
        (KEY_STR, sleb(n) + uleb(len(key)) + key),
        (INSERT, bools(n)),
        (ACTION, rle_run(n, SET)),
        (VAL_META, rle_run(n, 0)),
        (PRED_GROUP, rle_run(n, 0)),
    ]


def canonical_string_put(length: int, key: bytes = b"k", char: bytes = b"x") -> Columns:
    """One put of a ``length``-byte string on a root key, encoded the way the
    core encodes it (single values as literal runs): compresses to almost nothing."""
    return [
        (KEY_STR, rle_strings([key])),
        (INSERT, bools(1)),
        (ACTION, rle_literal([SET])),
        (VAL_META, rle_literal([(length << 4) | 6])),
        (VAL, char * length),
        (PRED_GROUP, rle_literal([0])),
    ]


def null_columns(n: int) -> Columns:
    """Every change column as ``n`` nulls (a few dozen bytes; the core refuses
    these rows: nulls where it needs keys and values)."""
    return [
        (OBJ_ACTOR, rle_nulls(n)),
        (OBJ_CTR, rle_nulls(n)),
        (KEY_ACTOR, rle_nulls(n)),
        (KEY_CTR, rle_nulls(n)),
        (KEY_STR, rle_nulls(n)),
        (INSERT, bools(n)),
        (ACTION, rle_nulls(n)),
        (VAL_META, rle_nulls(n)),
        (PRED_GROUP, rle_nulls(n)),
    ]


# --- sync messages ------------------------------------------------------------


def bloom(entries: int, bits_per_entry: int = 10, probes: int = 7, bits: bytes | None = None) -> bytes:
    """A bloom filter with the given header; its bits are zeros of the size the
    header implies unless ``bits`` is given."""
    if bits is None:
        bits = bytes((entries * bits_per_entry + 7) // 8)
    return uleb(entries) + uleb(bits_per_entry) + uleb(probes) + bits


def sync_message(
    chunks: list[bytes] = (),  # type: ignore[assignment]
    *,
    heads: list[bytes] = (),  # type: ignore[assignment]
    need: list[bytes] = (),  # type: ignore[assignment]
    have: list[tuple[list[bytes], bytes]] = (),  # type: ignore[assignment]
    version: int = SYNC_V1,
    capabilities: bytes | None = None,
) -> bytes:
    """A sync message carrying ``chunks`` (each item one or more chunks);
    ``have`` is a list of (last_sync hashes, bloom filter bytes)."""
    return encode_sync_message(
        SyncMessage(
            version,
            list(heads),
            list(need),
            [Have(list(last), bloom_bytes) for last, bloom_bytes in have],
            list(chunks),
            capabilities,
        )
    )
