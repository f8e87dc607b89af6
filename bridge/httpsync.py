"""Python client for stateless HTTP sync (``POST /docs/{id}/sync``), for code
that cannot hold a WebSocket: a serverless function, a cron job, a script
behind a proxy that refuses upgrades.

    async with HttpSyncClient("http://127.0.0.1:8080", token=token) as client:
        doc = client.doc("invoice-7")
        await doc.sync()                      # fetch
        with doc.change() as d:
            d["status"] = "paid"
        durable = await doc.sync()            # send; returns once committed
        ...
        async with doc.syncing(every=5.0):   # or keep it in step on an interval
            ...

Each ``sync()`` is one request: the changes made here since the server's
last heads go up, and what the server has that this copy lacks comes back.
The answer arrives only once the changes sent are committed, so ``sync()``
returning means they are durable: it returns the durable heads. Changes from
the server are checked with the bridge's own bounded reader before the
local copy applies them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

import anyio
import httpx
import msgspec
from automerge import core
from automerge.document import MapReadProxy, MapWriteProxy

from .core.binding import apply_chunks, expand_chunks
from .core.chunks import Bounds
from .errors import BridgeError
from .protocol.httpsync import CONTENT_TYPE, SyncAnswer, SyncRequest

Heads = list[bytes]


class HttpSyncError(BridgeError):
    """The server refused a sync request; ``status`` and ``code`` say why."""

    code = "http_sync"

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class HttpSyncDoc:
    """A local copy of one document, kept in step with the server by ``sync()``."""

    def __init__(self, client: HttpSyncClient, doc_id: str) -> None:
        self.client = client
        self.id = doc_id
        self.doc = core.Document()
        self.server_heads: Heads = []  # what the server had at the last sync
        self.durable_heads: Heads = []
        self._lock = anyio.Lock()

    @property
    def heads(self) -> Heads:
        return self.doc.get_heads()

    @property
    def root(self) -> MapReadProxy:
        return MapReadProxy(self.doc, core.ROOT, None)

    def to_py(self) -> dict:
        return core.extract(self.doc)

    @contextmanager
    def change(self) -> Iterator[MapWriteProxy]:
        """Edit in one transaction; the next ``sync()`` sends it."""
        with self.doc.transaction() as tx:
            yield MapWriteProxy(tx, core.ROOT, None)

    async def sync(self) -> Heads:
        """Send what is new here, take what is new there; return the durable
        heads (all of this copy's changes are among them when it returns)."""
        async with self._lock:
            ours = b"".join(change.bytes for change in self.doc.get_changes(self.server_heads))
            answer = await self.client._post(self.id, SyncRequest(have=self.server_heads, changes=ours))
            if answer.changes:
                incoming = expand_chunks(answer.changes, self.client.bounds, heads=self.doc.get_heads())
                apply_chunks(self.doc, [change.chunk for change in incoming])
            self.server_heads = answer.heads
            self.durable_heads = answer.durable
            return answer.durable

    @asynccontextmanager
    async def syncing(self, every: float) -> AsyncIterator[HttpSyncDoc]:
        """Sync now and then every ``every`` seconds while the block runs,
        and once more at its end (so nothing made in it is left unsent)."""
        await self.sync()
        async with anyio.create_task_group() as tg:

            async def loop() -> None:
                while True:
                    await anyio.sleep(every)
                    await self.sync()

            tg.start_soon(loop)
            yield self
            tg.cancel_scope.cancel()
        await self.sync()


class HttpSyncClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0,
                 bounds: Bounds | None = None) -> None:
        """``base_url``: where the bridge's HTTP routes are (``http://host:8080``,
        or the mount prefix); ``token``: sent as a Bearer header."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.bounds = bounds or Bounds()
        self.docs: dict[str, HttpSyncDoc] = {}

    def doc(self, doc_id: str) -> HttpSyncDoc:
        if doc_id not in self.docs:
            self.docs[doc_id] = HttpSyncDoc(self, doc_id)
        return self.docs[doc_id]

    async def _post(self, doc_id: str, request: SyncRequest) -> SyncAnswer:
        answer = await self._http.post(f"/docs/{doc_id}/sync", content=msgspec.msgpack.encode(request),
                                       headers={"Content-Type": CONTENT_TYPE})
        if answer.status_code != 200:
            try:
                body = answer.json()
                code, message = body.get("error", "error"), body.get("msg", "")
            except ValueError:
                code, message = "error", answer.text[:200]
            raise HttpSyncError(answer.status_code, code, message)
        return msgspec.msgpack.decode(answer.content, type=SyncAnswer)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HttpSyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
