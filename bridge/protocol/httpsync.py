"""Stateless HTTP sync: ``POST /docs/{id}/sync``, for clients that cannot
hold a WebSocket (serverless functions, cron jobs, strict proxies).

One round trip, MessagePack both ways, no session on the server, so any
bridge of a cluster can answer::

    request   {"have": [head, ...], "changes": <bytes>}
    answer    {"changes": <bytes>, "heads": [head, ...], "durable": [head, ...]}

``have``: the heads the client last got from the server (``[]`` at first).
``changes``: the client's change chunks since then, concatenated (empty:
just fetch). The server checks and merges them like a WebSocket peer's, and
answers only once they are committed. ``changes`` in the answer are the
document's changes the client lacks since ``have``. ``heads`` are the
document's heads, and ``durable`` are its durable heads (equal to ``heads``
unless another peer's changes are still being committed). Heads are 32-byte
hashes.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .native import MAX_HEADS

_Head = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
_Heads = Annotated[list[_Head], msgspec.Meta(max_length=MAX_HEADS)]


class SyncRequest(msgspec.Struct, forbid_unknown_fields=False):
    have: _Heads = []
    changes: bytes = b""


class SyncAnswer(msgspec.Struct):
    changes: bytes
    heads: list[bytes]
    durable: list[bytes]


CONTENT_TYPE = "application/msgpack"
