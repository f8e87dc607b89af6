"""Protocol v1 codec (bridge/protocol/native.py), checked against shared vectors.

The same vectors are decoded by the TypeScript codec (web/test/vectors.test.mjs),
and the TS encoder's frames are decoded here: the two codecs cannot drift.
"""

from __future__ import annotations

import msgspec
import pytest

from bridge.errors import ProtocolError
from bridge.protocol import native as m

from ..vectors import load, to_plain
from ..vectors.make import vectors

PY = load("py-encoded.json")
TS = load("ts-encoded.json")


def test_the_committed_python_vectors_are_what_the_encoder_writes_now():
    assert vectors() == PY, "the Python encoder changed: run `python -m tests.vectors.make` and check the TS tests"


@pytest.mark.parametrize("vector", PY + TS, ids=lambda v: f"{v['name']}")
def test_every_vector_decodes_to_its_value(vector):
    frame = bytes.fromhex(vector["hex"])
    assert to_plain(msgspec.msgpack.decode(frame)) == vector["value"]
    decode = m.decode_client if vector["from"] == "client" else m.decode_server
    message = decode(frame)
    assert message.__struct_config__.tag == vector["value"]["t"]
    fields = {f.encode_name: f.name for f in msgspec.structs.fields(message)}
    for key, value in vector["value"].items():
        if key != "t":
            assert to_plain(getattr(message, fields[key])) == value, key


def test_the_ts_encoder_covers_every_client_message():
    assert {v["value"]["t"] for v in TS} >= {"hello", "open", "sync", "flush", "close", "eph", "bye"}


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # never valid MessagePack
        msgspec.msgpack.encode([1, 2]),  # not a map
        msgspec.msgpack.encode({"t": "nope"}),  # unknown type
        msgspec.msgpack.encode({"t": "open"}),  # missing field
        msgspec.msgpack.encode({"t": "open", "doc": 5}),  # wrong type
        b"\x82\xa1t\xa4open\xa3doc\xa2\xff\xfe",  # a str that is not UTF-8
    ],
)
def test_bad_frames_are_protocol_errors_with_4400(frame):
    with pytest.raises(ProtocolError) as info:
        m.decode_client(frame)
    assert info.value.close_code == 4400


def test_unknown_fields_are_ignored():
    frame = msgspec.msgpack.encode({"t": "open", "doc": "a", "future": [1, 2]})
    assert m.decode_client(frame) == m.Open(doc="a")


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "hello", "v": [1], "peer": "x" * (m.MAX_PEER_NAME + 1)},
        {"t": "hello", "v": [1], "peer": "p", "token": "t" * (m.MAX_TOKEN + 1)},
        {"t": "hello", "v": [1] * 17, "peer": "p"},
        {"t": "open", "doc": "d" * (m.MAX_FIELD + 1)},
        {"t": "eph", "doc": "a", "data": b"x" * (m.MAX_EPH_BYTES + 1)},
        {"t": "flush", "id": 1, "docs": {f"d{i}": [] for i in range(m.MAX_FLUSH_DOCS + 1)}},
        {"t": "flush", "id": 1, "docs": {"a": [b"\x01" * 32] * (m.MAX_HEADS + 1)}},
        {"t": "flush", "id": -1, "docs": {}},
    ],
    ids=["peer", "token", "versions", "doc", "eph", "flush-docs", "flush-heads", "flush-id"],
)
def test_fields_a_peer_could_inflate_are_bounded(frame):
    """Nothing a peer sends is echoed, relayed or logged at a size it chose."""
    with pytest.raises(ProtocolError) as info:
        m.decode_client(msgspec.msgpack.encode(frame))
    assert info.value.close_code == 4400


def test_a_long_but_bounded_doc_id_is_a_doc_scoped_error_not_a_protocol_error():
    message = m.decode_client(msgspec.msgpack.encode({"t": "open", "doc": "d" * 300}))
    assert not m.valid_doc_id(message.doc)
