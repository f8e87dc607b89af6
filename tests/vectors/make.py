"""Write py-encoded.json from the Python codec: ``python -m tests.vectors.make``."""

from __future__ import annotations

import json

import msgspec

from bridge.protocol import native as m

from . import HERE, to_plain

H1, H2 = bytes(range(32)), bytes(range(32, 64))

FRAMES = [
    ("hello", "client", m.Hello(v=[1], peer="ada", token="t0k", caps=["x"])),
    ("hello-minimal", "client", m.Hello(v=[1, 2], peer="bob")),
    ("open", "client", m.Open(doc="invoice-42")),
    ("sync-client", "client", m.Sync(doc="d.1:~x", data=b"\x42\x00\x00\x00\x00")),
    ("flush", "client", m.Flush(id=7, docs={"a": [H1, H2], "b": []})),
    ("close", "client", m.Close(doc="a")),
    ("eph-client", "client", m.Eph(doc="a", data=b"\x00\xff")),
    ("bye", "client", m.Bye()),
    ("auth", "client", m.Auth(token="t0k-2")),
    ("welcome", "server", m.Welcome(v=1, peer="bridge-1", session="s", caps=[], limits={"max_frame_bytes": 65536})),
    ("welcome-auth", "server", m.Welcome(v=1, peer="bridge-1", session="s", identity="ada", expires_in=3599.5)),
    ("opened", "server", m.Opened(doc="a", access="read")),
    ("sync-server", "server", m.Sync(doc="a", data=b"\x43\x01")),
    ("saved", "server", m.Saved(doc="a", heads=[H1])),
    ("flushed", "server", m.Flushed(id=2**40, docs={"a": [H2]})),
    ("eph-server", "server", m.EphRelay(doc="a", from_="ada", data=b"{}")),
    ("error-doc", "server", m.Error(code="bad_sync", msg="refused", doc="a")),
    ("error-request", "server", m.Error(code="flush_timeout", msg="late", id=3)),
]


def vectors() -> list[dict]:
    out = []
    for name, side, message in FRAMES:
        frame = m.encode(message)
        out.append({"name": name, "from": side, "hex": frame.hex(), "value": to_plain(msgspec.msgpack.decode(frame))})
    return out


if __name__ == "__main__":
    (HERE / "py-encoded.json").write_text(json.dumps({"frames": vectors()}, indent=1) + "\n")
