"""automerge-repo's WebSocket protocol, as ``@automerge/automerge-repo-network-websocket``
2.5.x speaks it: one CBOR map per binary frame, keyed on ``type``.

The codec only: decoding is bounded and tolerant the way stock clients need,
and nothing here touches a socket or a document. The dialect's session (the
``/repo`` endpoint) builds on it.

What stock peers send, and what samod found a server must accept:

- ``join`` carries ``peerMetadata`` (not ``metadata``) and
  ``supportedProtocolVersions``, of which only ``"1"`` exists; the server
  answers ``peer`` with ``selectedProtocolVersion: "1"``;
- integers may arrive as floats (``count: 3.0``, from JS numbers): accepted
  when integral;
- a field may be CBOR ``undefined`` (a JS object with an undefined member):
  taken as absent;
- ``leave``, ``remote-subscription-change`` and ``remote-heads-changed`` are
  tolerated (decoded, and ignored by the session); a ``type`` this module
  does not know is ignored too, as stock peers ignore what they do not know.

Anything else malformed (not CBOR, not a map, a known type with wrong
fields, a nesting a decoder cannot follow) is a :class:`ProtocolError`.

Document ids are automerge-repo's: bs58check of a 16-byte UUID (Base58 of
the 16 bytes and a 4-byte double-SHA-256 checksum). Base58 uses only
letters and digits, so every such id is a valid native id too, and one
document is reachable by the same id from both dialects and from Python.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Union

import cbor2
import msgspec

from ..errors import CloseCode, ProtocolError

PROTOCOL_VERSION = "1"

MAX_ID = 256  # peer ids, session ids: stock ones are some tens of characters
MAX_DOC_ID = 64  # bs58check of 20 bytes is at most 28 characters
MAX_LIST = 1024

_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
_DocId = Annotated[str, msgspec.Meta(max_length=MAX_DOC_ID)]


class PeerMetadata(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    storageId: _Id | None = None
    isEphemeral: bool | None = None


class _Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=False, omit_defaults=True):
    pass


# --- both directions, or client -> server ------------------------------------------


class Join(_Msg, tag="join"):
    senderId: _Id
    peerMetadata: PeerMetadata = msgspec.field(default_factory=PeerMetadata)
    supportedProtocolVersions: Annotated[list[Annotated[str, msgspec.Meta(max_length=16)]], msgspec.Meta(max_length=16)] = []


class Request(_Msg, tag="request"):
    senderId: _Id
    targetId: _Id
    documentId: _DocId
    data: bytes


class Sync(_Msg, tag="sync"):
    senderId: _Id
    targetId: _Id
    documentId: _DocId
    data: bytes


class DocUnavailable(_Msg, tag="doc-unavailable"):
    senderId: _Id
    targetId: _Id
    documentId: _DocId


class Ephemeral(_Msg, tag="ephemeral"):
    senderId: _Id
    targetId: _Id
    documentId: _DocId
    sessionId: _Id
    count: Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
    data: bytes


class Leave(_Msg, tag="leave"):
    senderId: _Id | None = None


class RemoteSubscriptionChange(_Msg, tag="remote-subscription-change"):
    senderId: _Id | None = None


class RemoteHeadsChanged(_Msg, tag="remote-heads-changed"):
    senderId: _Id | None = None


# --- server -> client ----------------------------------------------------------------


class Peer(_Msg, tag="peer"):
    senderId: str
    targetId: str
    peerMetadata: PeerMetadata
    selectedProtocolVersion: str  # always sent (a default would be omitted): stock clients check it


class Error(_Msg, tag="error"):
    senderId: str
    targetId: str
    message: str


FromClient = Union[Join, Request, Sync, DocUnavailable, Ephemeral, Leave, RemoteSubscriptionChange, RemoteHeadsChanged]
_KNOWN = {cls.__struct_config__.tag for cls in FromClient.__args__}  # type: ignore[attr-defined]


def decode(frame: bytes) -> FromClient | None:
    """One frame from a repo peer; None for a ``type`` this side does not know."""
    try:
        raw = cbor2.loads(frame)
    except (cbor2.CBORDecodeError, RecursionError, ValueError, OverflowError, MemoryError) as exc:
        raise ProtocolError(f"not a CBOR message: {exc}"[:200]) from None
    if not isinstance(raw, dict):
        raise ProtocolError("a message is a CBOR map")
    if raw.get("type") not in _KNOWN:
        if isinstance(raw.get("type"), str):
            return None
        raise ProtocolError("a message has a string `type`")
    try:
        return msgspec.convert(_defined(raw), FromClient, strict=False)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise ProtocolError(f"bad {raw['type']} message: {exc}"[:200]) from None


def _defined(value: Any, depth: int = 0) -> Any:
    """``value`` without CBOR ``undefined`` members (absent, as in JS)."""
    if depth > 16:
        raise ProtocolError("a message nests too deeply", CloseCode.PROTOCOL)
    if isinstance(value, dict):
        return {k: _defined(v, depth + 1) for k, v in value.items() if v is not cbor2.undefined}
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ProtocolError("a list in a message is too long")
        return [_defined(v, depth + 1) for v in value]
    return value


def encode(message: Peer | Error | Sync | DocUnavailable | Ephemeral) -> bytes:
    return cbor2.dumps(msgspec.to_builtins(message))


# --- document ids ----------------------------------------------------------------

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = _ALPHABET[rest] + digits
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def _b58decode(text: str) -> bytes | None:
    number = 0
    for char in text:
        if char not in _INDEX:
            return None
        number = number * 58 + _INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def repo_doc_uuid(doc_id: str) -> uuid.UUID | None:
    """The UUID an automerge-repo document id encodes, or None when it is not one."""
    if not 1 <= len(doc_id) <= MAX_DOC_ID:
        return None
    raw = _b58decode(doc_id)
    if raw is None or len(raw) != 20 or _checksum(raw[:16]) != raw[16:]:
        return None
    return uuid.UUID(bytes=raw[:16])


def is_repo_doc_id(doc_id: str) -> bool:
    return repo_doc_uuid(doc_id) is not None


def new_repo_doc_id() -> str:
    """A fresh id in automerge-repo's form: ``automerge:<id>`` in a repo URL."""
    payload = uuid.uuid4().bytes
    return _b58encode(payload + _checksum(payload))
