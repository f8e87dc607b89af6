"""What one side of a connection still has to send, drained by one writer task.

Shared by the server's per-peer connection and the Python client. Three kinds
of pending output, sent in this order of priority:

- control frames, in order (bounded in count and, with the latest frames
  below, in bytes: overflow means the peer is too slow);
- "latest" frames keyed by a name (``saved`` heads, relayed ``eph`` presence
  per sender): only the newest counts, so they never pile up;
- dirty documents: sync messages are generated only when the socket can take
  them, so a busy or slow peer gets one message covering everything that
  happened meanwhile instead of a backlog.
"""

from __future__ import annotations

from collections import deque
from typing import Awaitable, Callable

import anyio


class OutboxOverflow(Exception):
    pass


class Outbox:
    def __init__(self, max_control: int = 10_000, max_bytes: int | None = None) -> None:
        self.max_control = max_control
        self.max_bytes = max_bytes
        self._control: deque[bytes] = deque()
        self._latest: dict[object, bytes] = {}
        self._dirty: dict[str, None] = {}
        self._wake = anyio.Event()
        self._emptied = anyio.Event()
        self.overflowed = False
        self.queued_bytes = 0  # control plus latest frames waiting

    def push(self, frame: bytes) -> None:
        if len(self._control) >= self.max_control or not self._fits(len(frame)):
            self.overflowed = True
        else:
            self._control.append(frame)
            self.queued_bytes += len(frame)
        self._wake.set()

    def push_latest(self, key: object, frame: bytes) -> None:
        replaced = self._latest.get(key)
        freed = len(replaced) if replaced is not None else 0
        if not self._fits(len(frame) - freed):
            self.overflowed = True
        else:
            self._latest[key] = frame
            self.queued_bytes += len(frame) - freed
        self._wake.set()

    def _fits(self, more: int) -> bool:
        return self.max_bytes is None or self.queued_bytes + more <= self.max_bytes

    def mark_dirty(self, doc_id: str) -> None:
        self._dirty[doc_id] = None
        self._wake.set()

    def forget(self, doc_id: str) -> None:
        """Drop what is pending for ``doc_id``: its dirty mark and every
        "latest" frame whose key is a tuple naming it second, e.g.
        ``("saved", doc_id)`` or ``("eph", doc_id, sender)``."""
        self._dirty.pop(doc_id, None)
        for key in [k for k in self._latest if isinstance(k, tuple) and len(k) > 1 and k[1] == doc_id]:
            self.queued_bytes -= len(self._latest.pop(key))

    @property
    def idle(self) -> bool:
        return not (self._control or self._latest or self._dirty)

    async def wait_idle(self) -> None:
        """Until everything queued has been handed to ``send`` (by a running
        :meth:`pump`; the last frame may still be in its ``send``)."""
        while not self.idle:
            if self._emptied.is_set():
                self._emptied = anyio.Event()
            await self._emptied.wait()

    async def pump(
        self,
        send: Callable[[bytes], Awaitable[None]],
        generate: Callable[[str], list[bytes]],
    ) -> None:
        """Send forever; ``generate(doc_id)`` returns a dirty document's frames.

        Raises :class:`OutboxOverflow` once the control queue has overflowed.
        """
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while not self.idle or self.overflowed:
                if self.overflowed:
                    raise OutboxOverflow
                if self._control:
                    frame = self._control.popleft()
                    self.queued_bytes -= len(frame)
                    await send(frame)
                elif self._dirty:
                    doc_id = next(iter(self._dirty))
                    del self._dirty[doc_id]
                    for frame in generate(doc_id):
                        await send(frame)
                else:
                    frame = self._latest.pop(next(iter(self._latest)))
                    self.queued_bytes -= len(frame)
                    await send(frame)
            self._emptied.set()
