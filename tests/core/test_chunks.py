"""The bounded reader of Automerge's binary formats (bridge/core/chunks.py)."""

from __future__ import annotations

import pytest
from automerge import core

from bridge.core.chunks import (
    Bounds,
    Change,
    ChunkError,
    DocumentChunk,
    Reader,
    encode_sync_message,
    inflate,
    parse_sync_message,
    sleb,
    split_chunks,
    uleb,
)

from .. import crafting


def real_doc() -> core.Document:
    doc = core.Document()
    with doc.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        tx.splice_text(text, 0, 0, "hello world " * 500)  # large: stored compressed
        items = tx.put_object(core.ROOT, "items", core.ObjType.List)
        tx.insert(items, 0, core.ScalarType.Int, 1)
    with doc.transaction() as tx:
        tx.put(core.ROOT, "k", core.ScalarType.Str, "v")
        tx.delete(core.ROOT, "k")
    return doc


@pytest.mark.parametrize("n", [0, 1, 63, 64, 127, 128, 2**32, 2**63, 2**64 - 1])
def test_unsigned_leb128_round_trips(n):
    assert Reader(uleb(n)).uleb() == n


@pytest.mark.parametrize("n", [0, -1, 63, -64, 64, -65, 2**62, -(2**63), 2**63 - 1])
def test_signed_leb128_round_trips(n):
    assert Reader(sleb(n)).sleb() == n


@pytest.mark.parametrize("data", [b"\x80" * 11, b"\xff" * 9 + b"\x7f", b"\x80\x00", b"\x80"])
def test_bad_leb128_is_refused(data):
    with pytest.raises(ChunkError):
        Reader(data).uleb()


def test_every_real_change_parses_to_what_the_core_says():
    doc = real_doc()
    for change in doc.get_changes([]):
        for raw in (change.bytes, change.raw_bytes):
            (parsed,) = split_chunks(raw, Bounds())
            assert isinstance(parsed, Change)
            assert (parsed.hash, parsed.actor, parsed.seq, parsed.start_op, parsed.ops, parsed.deps) == (
                change.hash, change.actor_id, change.seq, change.start_op, len(change), change.deps,
            )


def test_a_saved_document_is_one_document_chunk_with_its_op_count():
    doc = real_doc()
    (chunk,) = split_chunks(doc.save(), Bounds())
    assert isinstance(chunk, DocumentChunk)
    # Deletions live in the document as successors of the ops they delete.
    assert 6000 <= chunk.ops <= sum(len(c) for c in doc.get_changes([])) and chunk.heads == doc.get_heads()


def test_real_sync_messages_round_trip_byte_for_byte():
    a, b = real_doc(), core.Document()
    sa, sb = core.SyncState(), core.SyncState()
    seen = 0
    for _ in range(10):
        for src, dst, state, other in ((a, b, sa, sb), (b, a, sb, sa)):
            message = src.generate_sync_message(state)
            if message is None:
                continue
            raw = message.encode()
            assert encode_sync_message(parse_sync_message(raw, Bounds())) == raw
            dst.receive_sync_message(other, core.Message.decode(raw))
            seen += 1
    assert seen >= 3 and a.get_heads() == b.get_heads()


def test_run_length_bomb_is_counted_not_expanded():
    bomb = crafting.change(columns=crafting.null_puts(4_000_000))
    assert len(bomb) < 200
    with pytest.raises(ChunkError, match="rows"):
        split_chunks(bomb, Bounds())


def test_deflate_stops_at_the_limit():
    body = crafting.ChangeFields(columns=crafting.canonical_string_put(200_000)).body()
    with pytest.raises(ChunkError, match="decompresses past"):
        split_chunks(crafting.compressed(body=body), Bounds(max_change_bytes=100_000))
    with pytest.raises(ChunkError):
        inflate(b"\x00garbage", 10)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(actor=b""), "empty actor"),
        (dict(actor=b"x" * 65), "actor id"),
        (dict(deps=[b"\x01" * 32] * 1025), "deps"),
    ],
)
def test_header_bounds(fields, match):
    with pytest.raises(ChunkError, match=match):
        split_chunks(crafting.change(**fields), Bounds())


def test_a_bad_checksum_is_refused():
    raw = bytearray(real_doc().get_changes([])[-1].raw_bytes)
    raw[4] ^= 0xFF
    with pytest.raises(ChunkError, match="checksum"):
        split_chunks(bytes(raw), Bounds())


def test_non_canonical_encodings_are_refused():
    # One value written as a run of one: the core would re-encode it on save.
    with pytest.raises(ChunkError, match="non-canonical"):
        split_chunks(crafting.change(columns=crafting.set_ops(1)), Bounds())


@pytest.mark.parametrize(
    "bloom, match",
    [
        (crafting.bloom(1, 10, 2**32 - 1), "probes"),
        (crafting.bloom(1, 0, 7), "no bits"),
        (crafting.bloom(10, 10, 7, bits=b"\x00"), "holds"),
    ],
)
def test_bloom_filters_are_bounded(bloom, match):
    with pytest.raises(ChunkError, match=match):
        parse_sync_message(crafting.sync_message(have=[([], bloom)]), Bounds())


def test_trailing_bytes_and_unknown_types_are_refused():
    good = crafting.sync_message()
    with pytest.raises(ChunkError):
        parse_sync_message(good + b"\x01\x02\x03", Bounds())
    with pytest.raises(ChunkError, match="not a sync message"):
        parse_sync_message(b"\x41" + good[1:], Bounds())
