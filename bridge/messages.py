"""Wire protocol v1: one MessagePack map per binary WebSocket frame.

Each direction is one msgspec tagged union keyed on ``t``. Unknown fields are
ignored (forward compatibility); unknown ``t`` values, wrong field types and
frames that are not maps are protocol violations and become one typed
:class:`ProtocolError` carrying the close code the peer gets.

Document ids are validated separately (:func:`valid_doc_id`) rather than in the
schema: a bad id is a doc-scoped, non-fatal ``error`` — one mistyped id must
not tear down a connection that multiplexes other documents.
"""

from __future__ import annotations

import re
from typing import Union

import msgspec

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

Heads = list[bytes]

_DOC_ID = re.compile(r"[A-Za-z0-9._:~-]{1,256}")


def valid_doc_id(doc_id: str) -> bool:
    return _DOC_ID.fullmatch(doc_id) is not None


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    INTERNAL = 1011
    PROTOCOL = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    HANDSHAKE_TIMEOUT = 4408
    TOO_SLOW = 4409
    RATE_LIMITED = 4429


class ErrorCode:
    """Codes carried by non-fatal ``error`` frames."""

    BAD_DOC_ID = "bad_doc_id"
    NOT_OPEN = "not_open"
    BAD_SYNC = "bad_sync"
    FLUSH_TIMEOUT = "flush_timeout"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    TOO_MANY_DOCS = "too_many_docs"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A fatal protocol violation: the connection closes with ``close_code``."""

    def __init__(self, message: str, close_code: int = CloseCode.PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


class _Msg(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    pass


# --- client -> server -------------------------------------------------------


class Hello(_Msg, tag="hello"):
    v: list[int]
    peer: str
    token: str | None = None
    caps: list[str] = []


class Open(_Msg, tag="open"):
    doc: str


class Sync(_Msg, tag="sync"):
    """An Automerge sync message; the same shape travels in both directions."""

    doc: str
    data: bytes


class Flush(_Msg, tag="flush"):
    id: int
    docs: dict[str, Heads]


class Close(_Msg, tag="close"):
    doc: str


class Eph(_Msg, tag="eph"):
    doc: str
    data: bytes


class Bye(_Msg, tag="bye"):
    pass


ClientMessage = Union[Hello, Open, Sync, Flush, Close, Eph, Bye]


# --- server -> client -------------------------------------------------------


class Welcome(_Msg, tag="welcome", omit_defaults=False):
    v: int
    peer: str
    session: str
    caps: list[str] = []
    limits: dict[str, int] = {}


class Saved(_Msg, tag="saved"):
    doc: str
    heads: Heads


class Flushed(_Msg, tag="flushed"):
    id: int
    docs: dict[str, Heads]


class EphRelay(_Msg, tag="eph"):
    doc: str
    from_: str = msgspec.field(name="from")
    data: bytes = b""


class Error(_Msg, tag="error"):
    code: str
    msg: str
    doc: str | None = None
    id: int | None = None


ServerMessage = Union[Welcome, Sync, Saved, Flushed, EphRelay, Error]


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder = msgspec.msgpack.Decoder(ServerMessage)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def _decode(decoder: msgspec.msgpack.Decoder, frame: bytes):
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed MessagePack: {exc}") from None


def decode_client(frame: bytes) -> ClientMessage:
    return _decode(_client_decoder, frame)


def decode_server(frame: bytes) -> ServerMessage:
    return _decode(_server_decoder, frame)
