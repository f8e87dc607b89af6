"""In-process access to documents for Python services running beside the hub.

A :class:`LocalDoc` is a subscriber like any WebSocket peer: its changes are
persisted and relayed through the same path, and it hears about everyone
else's. Reading and writing use the ``automerge`` package's proxies, so a
plain ``str`` becomes collaborative Text (the ``@automerge/automerge`` 3.x
convention) and ``automerge.ImmutableString`` makes a scalar string.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

import anyio
from automerge import core
from automerge.document import MapReadProxy, MapWriteProxy

from .errors import FlushTimeout
from .hub import Hub, LiveDoc


class LocalDoc:
    def __init__(self, hub: Hub, live: LiveDoc, peer: str) -> None:
        self.peer = peer
        self._hub = hub
        self._live = live
        self._changed = anyio.Event()
        self._closed = False

    @property
    def live(self) -> LiveDoc:
        """The hub's loaded document this handle follows."""
        return self._live

    @property
    def id(self) -> str:
        return self._live.doc_id

    @property
    def heads(self) -> list[bytes]:
        return self._live.doc.get_heads()

    @property
    def root(self) -> MapReadProxy:
        """Live read-only view of the document's root map."""
        return MapReadProxy(self._live.doc, core.ROOT, None)

    def to_py(self) -> dict:
        return core.extract(self._live.doc)

    @contextmanager
    def change(self) -> Iterator[MapWriteProxy]:
        """Edit in one transaction; on exit it is persisted and relayed.

        An exception inside the block rolls the transaction back.
        """
        before = self._live.doc.get_heads()
        with self._live.doc.transaction() as tx:
            yield MapWriteProxy(tx, core.ROOT, None)
        self._hub.change_locally(self._live, before, self)

    def merge(self, data: bytes) -> list[bytes]:
        """Merge a saved document or change chunks, checked like a peer's
        sync message; return the hashes it carried. ``ValueError`` when (part
        of) it is refused (:class:`~bridge.errors.QuotaExceeded` when the
        document is full); the valid part is merged all the same."""
        return self._hub.merge_bytes(self._live, data, self)

    def save(self) -> bytes:
        """The whole document as one Automerge file."""
        return self._live.doc.save()

    @property
    def durable_heads(self) -> list[bytes]:
        return self._live.durable_heads

    def is_durable(self, heads: list[bytes]) -> bool:
        return self._live.is_durable(heads)

    async def flush(self, timeout: float = 10.0, heads: list[bytes] | None = None) -> list[bytes]:
        """Wait until everything in this document so far (or ``heads``) is
        durable; raise :class:`~bridge.errors.FlushTimeout` after ``timeout``."""
        heads = self.heads if heads is None else heads
        try:
            with anyio.fail_after(timeout):
                await self._live.wait_durable(heads)
        except TimeoutError:
            raise FlushTimeout(f"{self.id}: not durable after {timeout}s", doc=self.id) from None
        return heads

    async def updates(self) -> AsyncIterator[list[bytes]]:
        """Yield the document's heads whenever someone else changed it.

        Changes that land while the consumer is busy are coalesced into one
        step: the iterator reports the latest state, not every change.
        """
        while not self._closed:
            await self._changed.wait()
            self._changed = anyio.Event()
            yield self.heads

    # --- Subscriber ---------------------------------------------------------

    def doc_changed(self, doc_id: str, origin: object) -> None:
        if origin is not self:
            self._changed.set()

    def doc_saved(self, doc_id: str, heads: list[bytes], own: bool) -> None:
        pass

    def doc_deleted(self, doc_id: str) -> None:
        self._close()  # its live copy is gone: changes now raise DocNotFound

    def doc_reloaded(self, doc_id: str) -> None:
        self._changed.set()

    def ephemeral(self, doc_id: str, sender: str, data: bytes, source: object = None) -> None:
        pass

    def _close(self) -> None:
        self._closed = True
        self._changed.set()


@asynccontextmanager
async def open_local(
    hub: Hub, doc_id: str, *, peer: str = "local", create: bool = True, creator: str | None = None
) -> AsyncIterator[LocalDoc]:
    """``async with open_local(app.state.hub, "doc") as doc: ...``

    ``creator``: who a new document counts against (the HTTP routes pass
    the client; in-process code is trusted and passes nothing)."""
    handle = LocalDoc(hub, None, peer)  # type: ignore[arg-type]
    handle._live = await hub.subscribe(doc_id, handle, create=create, creator=creator)
    try:
        yield handle
    finally:
        hub.unsubscribe(doc_id, handle)
        handle._close()
