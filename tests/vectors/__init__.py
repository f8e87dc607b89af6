"""Shared wire-protocol test vectors: frames encoded by one codec and decoded
by the other, so the Python and TypeScript codecs cannot drift apart.

- ``py-encoded.json``: frames the Python codec (bridge.protocol.native)
  encodes, client and server side; the TS tests decode every one of them.
- ``ts-encoded.json``: frames the TS client codec (web/src/protocol.ts)
  encodes; the Python tests decode every one of them.

Each entry: ``{"name", "from": "client"|"server", "hex", "value"}`` where
``value`` is the frame as plain JSON, bytes written ``{"$bytes": "<hex>"}``.
Regenerate the Python file with ``python -m tests.vectors.make`` (the tests
fail if the committed bytes and the encoder disagree).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def to_plain(value):
    """A decoded frame (msgpack types) as the JSON ``value`` of a vector."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def load(name: str) -> list[dict]:
    return json.loads((HERE / name).read_text())["frames"]
