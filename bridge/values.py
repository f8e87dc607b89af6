"""Plain-JSON views of documents for the HTTP API."""

from __future__ import annotations

import msgspec
from automerge import core

_json = msgspec.json.Encoder()


def to_json(doc: core.Document) -> bytes:
    """The document as JSON; bytes become base64 and timestamps RFC 3339."""
    return _json.encode(core.extract(doc))


def heads_hex(heads: list[bytes]) -> list[str]:
    return [h.hex() for h in heads]
