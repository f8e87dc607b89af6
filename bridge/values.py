"""Plain-JSON views of documents for the HTTP API."""

from __future__ import annotations

import msgspec

_json = msgspec.json.Encoder()


def to_json(value: dict) -> bytes:
    """A document's plain value (``core.extract``) as JSON; bytes become
    base64 and timestamps RFC 3339."""
    return _json.encode(value)


def heads_hex(heads: list[bytes]) -> list[str]:
    return [h.hex() for h in heads]
