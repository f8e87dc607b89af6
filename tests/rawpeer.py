"""A raw protocol peer for tests: the `websockets` library plus msgspec."""

from __future__ import annotations

import anyio
import msgspec
import websockets
from automerge import core

from bridge.core.sync import DocSync


class RawPeer:
    def __init__(self, ws) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, *, hello: bool = True, peer: str = "raw", address: str | None = None) -> "RawPeer":
        """``address``: connect from this local address (127.0.0.x), as
        another client would: the bridge's per-client limits go by address."""
        # max_queue=None: take in whatever the server sends even while the
        # test is not reading (a flooder), so that a close is always seen;
        # with a bounded queue websockets stops reading the socket, and a
        # send after the server's close waits out the close timeout.
        ws = await websockets.connect(url, max_size=None, max_queue=None, local_addr=(address, 0) if address else None)
        self = cls(ws)
        if hello:
            await self.send({"t": "hello", "v": [1], "peer": peer, "caps": []})
            welcome = await self.recv()
            assert welcome["t"] == "welcome", welcome
            self.welcome = welcome
        return self

    async def send(self, frame: dict) -> None:
        await self.ws.send(msgspec.msgpack.encode(frame))

    async def recv(self, timeout: float = 10.0) -> dict:
        with anyio.fail_after(timeout):
            return msgspec.msgpack.decode(await self.ws.recv())

    async def recv_until(self, predicate, timeout: float = 10.0) -> dict:
        with anyio.fail_after(timeout):
            while True:
                frame = await self.recv()
                if predicate(frame):
                    return frame

    async def closed_with(self, timeout: float = 10.0) -> int:
        """Read until the server closes; return its close code."""
        with anyio.fail_after(timeout):
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else 1006

    async def sync_doc(self, doc_id: str, doc: core.Document, timeout: float = 10.0) -> DocSync:
        """Open ``doc_id`` and exchange sync messages until the server's
        durable heads equal ours."""
        sync = DocSync(doc)
        await self.send({"t": "open", "doc": doc_id})
        saved = None
        with anyio.fail_after(timeout):
            while saved != sorted(doc.get_heads()):
                for data in sync.generate():
                    await self.send({"t": "sync", "doc": doc_id, "data": data})
                frame = await self.recv()
                if frame["t"] == "sync":
                    sync.receive(frame["data"])
                elif frame["t"] == "saved":
                    saved = sorted(frame["heads"])
            return sync

    async def close(self) -> None:
        await self.ws.close()


def text_doc(text: str) -> core.Document:
    doc = core.Document()
    with doc.transaction() as tx:
        obj = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        tx.splice_text(obj, 0, 0, text)
    return doc
