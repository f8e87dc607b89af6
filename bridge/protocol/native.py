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
import sys
from typing import Annotated, Union

import msgspec

from ..errors import CloseCode, ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

Heads = list[bytes]

# Bounds on what a peer's frame may hold, checked while decoding (a breach is
# a protocol violation, 4400): nothing a peer sends is echoed, relayed or
# logged at a size it chose. Generous next to real use: ids of 16-36
# characters, a few heads, presence payloads of some hundred bytes.
MAX_PEER_NAME = 256
MAX_TOKEN = 16 * 1024
MAX_FIELD = 1024  # a document id field (valid ids are at most 256 characters)
MAX_EPH_BYTES = 64 * 1024
MAX_FLUSH_DOCS = 1024
MAX_HEADS = 1024

_Name = Annotated[str, msgspec.Meta(max_length=MAX_PEER_NAME)]
_DocField = Annotated[str, msgspec.Meta(max_length=MAX_FIELD)]
_PeerHeads = Annotated[list[Annotated[bytes, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=MAX_HEADS)]

_DOC_ID = re.compile(r"[A-Za-z0-9._:~-]{1,256}")


def valid_doc_id(doc_id: str) -> bool:
    return _DOC_ID.fullmatch(doc_id) is not None


class _Msg(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    pass


# --- client -> server -------------------------------------------------------


class Hello(_Msg, tag="hello"):
    v: Annotated[list[int], msgspec.Meta(max_length=16)]
    peer: _Name
    token: Annotated[str, msgspec.Meta(max_length=MAX_TOKEN)] | None = None
    caps: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=64)] = []


class Open(_Msg, tag="open"):
    doc: _DocField


class Sync(_Msg, tag="sync"):
    """An Automerge sync message; the same shape travels in both directions."""

    doc: _DocField
    data: bytes


class Flush(_Msg, tag="flush"):
    id: Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
    docs: Annotated[dict[_DocField, _PeerHeads], msgspec.Meta(max_length=MAX_FLUSH_DOCS)]


class Close(_Msg, tag="close"):
    doc: _DocField


class Eph(_Msg, tag="eph"):
    doc: _DocField
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_EPH_BYTES)]


class Bye(_Msg, tag="bye"):
    pass


class Auth(_Msg, tag="auth"):
    """Replace the connection's token (a refresh before ``welcome.expires_in``
    runs out). No answer when it is accepted; ``opened`` again for a document
    whose access changed, ``error forbidden`` (and the document closed) for
    one it may no longer read; close 4401 when it is refused."""

    token: Annotated[str, msgspec.Meta(max_length=MAX_TOKEN)]


ClientMessage = Union[Hello, Open, Sync, Flush, Close, Eph, Bye, Auth]


# --- server -> client -------------------------------------------------------


class Welcome(_Msg, tag="welcome", omit_defaults=False):
    v: int
    peer: str
    session: str
    caps: list[str] = []
    limits: dict[str, int] = {}
    # Who the bridge takes this connection for: the ``from`` of its relayed
    # ``eph``. None from servers that predate it.
    identity: str | None = None
    # Seconds until the token expires and the connection closes with 4401
    # unless an ``auth`` frame brought a fresh one; None: it does not expire.
    expires_in: float | None = None


class Opened(_Msg, tag="opened"):
    """The answer to ``open`` (before its first ``saved``): the document is
    open, and what this connection may do with it. Sent again when an
    ``auth`` changed it. Older clients ignore it (an unknown ``t``)."""

    doc: str
    access: str  # "read" or "write"


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


ServerMessage = Union[Welcome, Sync, Saved, Flushed, EphRelay, Error, Opened]


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder = msgspec.msgpack.Decoder(ServerMessage)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


# --- decoding untrusted frames ------------------------------------------------
#
# Whatever a frame holds, decoding it either returns a message or raises
# ProtocolError (close 4400): msgspec raises more than its own errors on hostile
# input — UnicodeDecodeError for a str field holding invalid UTF-8, and
# RecursionError for deep nesting, among others — and none of them may reach
# the connection as an "internal error" (1011).
#
# Nesting. msgspec bounds its recursion with Py_EnterRecursiveCall, that is by
# sys.getrecursionlimit(): with the default limit (1000) a frame nested 10,000
# or 1,000,000 levels deep raises RecursionError before the C stack is at risk
# (measured: skipping an unknown field costs msgspec ~48 bytes of C stack per
# level, so 1000 levels use ~48 KiB). An application that raises the recursion
# limit far enough lets such a frame overflow the C stack instead (SIGSEGV,
# seen with limit 10**7 and 200,000 levels on an 8 MiB stack). So when the
# limit is above _TRUSTED_RECURSION_LIMIT, frames are checked first by an
# iterative scan that refuses more than _MAX_NESTING levels. It is not run at
# the default limit: it costs a Python-level step per MessagePack object, i.e.
# seconds on the event loop for a 16 MiB frame of tiny containers that msgspec
# itself skips in milliseconds.

_MAX_NESTING = 100  # protocol frames nest 3 levels; unknown fields get room
_TRUSTED_RECURSION_LIMIT = 10_000  # x ~48 B/level: well inside a 1 MiB stack


def _msgpack_kinds() -> list[tuple[int, int]]:
    """Per first byte: (kind, n). Kinds: 0 scalar with n more bytes; 1 blob
    whose length takes the next n bytes (ext: plus a type byte, kind 4);
    2/3 array/map whose count takes the next n bytes; 5/6 fixarray/fixmap of n."""
    kinds = [(0, 0)] * 256  # fixints, nil, bools and the invalid 0xc1
    for byte in range(0x80, 0x90):
        kinds[byte] = (6, byte & 0x0F)
    for byte in range(0x90, 0xA0):
        kinds[byte] = (5, byte & 0x0F)
    for byte in range(0xA0, 0xC0):
        kinds[byte] = (0, byte & 0x1F)  # fixstr
    sized = {
        0xC4: (1, 1), 0xC5: (1, 2), 0xC6: (1, 4),  # bin 8/16/32
        0xC7: (4, 1), 0xC8: (4, 2), 0xC9: (4, 4),  # ext 8/16/32
        0xCA: (0, 4), 0xCB: (0, 8),  # float 32/64
        0xCC: (0, 1), 0xCD: (0, 2), 0xCE: (0, 4), 0xCF: (0, 8),  # uint
        0xD0: (0, 1), 0xD1: (0, 2), 0xD2: (0, 4), 0xD3: (0, 8),  # int
        0xD4: (0, 2), 0xD5: (0, 3), 0xD6: (0, 5), 0xD7: (0, 9), 0xD8: (0, 17),  # fixext
        0xD9: (1, 1), 0xDA: (1, 2), 0xDB: (1, 4),  # str 8/16/32
        0xDC: (2, 2), 0xDD: (2, 4), 0xDE: (3, 2), 0xDF: (3, 4),  # array/map 16/32
    }
    for byte, kind in sized.items():
        kinds[byte] = kind
    return kinds


_KINDS = _msgpack_kinds()
_CONTAINER_BYTES = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])


def nesting_exceeds(frame: bytes, limit: int = _MAX_NESTING) -> bool:
    """True if the MessagePack value in ``frame`` nests containers more than
    ``limit`` deep. Iterative, so any depth is safe to check. Malformed or
    truncated input is not judged here (False): the decoder reports it."""
    # Cheap bound first: every container starts with one of these bytes.
    if len(frame) - len(frame.translate(None, _CONTAINER_BYTES)) <= limit:
        return False
    pending = [1]  # values still to read in each open container (and the root)
    pos, end, kinds = 0, len(frame), _KINDS
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            return False
        kind, n = kinds[frame[pos]]
        pos += 1
        if kind == 0:
            pos += n
            continue
        if kind >= 5:
            count = n if kind == 5 else 2 * n
        else:
            size = int.from_bytes(frame[pos : pos + n], "big")
            pos += n
            if kind == 1 or kind == 4:
                pos += size + (kind == 4)
                continue
            count = size if kind == 2 else 2 * size
        if count:
            if len(pending) > limit:  # this would be container number limit + 1
                return True
            pending.append(count)
    return False


def _decode(decoder: msgspec.msgpack.Decoder, frame: bytes):
    if sys.getrecursionlimit() > _TRUSTED_RECURSION_LIMIT and nesting_exceeds(frame):
        raise ProtocolError(f"frame nests deeper than {_MAX_NESTING} levels")
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed MessagePack: {exc}") from None
    except RecursionError:
        raise ProtocolError("frame nests too deep") from None
    except Exception as exc:  # UnicodeDecodeError, ValueError, OverflowError, MemoryError...
        # Anything else the decoder raises on its input is still a bad frame.
        # Only here: elsewhere such errors are server bugs and stay 1011.
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None


def decode_client(frame: bytes) -> ClientMessage:
    return _decode(_client_decoder, frame)


def decode_server(frame: bytes) -> ServerMessage:
    return _decode(_server_decoder, frame)
