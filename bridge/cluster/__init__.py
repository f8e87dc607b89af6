"""Many bridges, one set of documents: the fan-out bus between them.

Bridges that share a store (PostgreSQL) tell each other about commits over a
:class:`Bus`. The bus is an optimisation, never the source of truth: a
message may be lost (the broker restarted, a subscription dropped, a consumer
fell behind) and the receiving bridge heals from the store
(:mod:`bridge.cluster.node`). So a bus only has to be fast and to say when it
(re)connected; it does not have to be reliable.

A bus carries opaque payloads on one channel per document. A bridge follows
the channels of the documents it has loaded.
"""

from __future__ import annotations

from typing import Callable, Protocol

import anyio


class BusHandler(Protocol):
    def bus_message(self, doc_id: str, payload: bytes) -> None:
        """A payload published on ``doc_id``'s channel by any bridge (ours
        included: the receiver tells its own apart by what is inside)."""

    def bus_connected(self) -> None:
        """The bus (re)connected and follows every followed channel again:
        whatever was published meanwhile may be lost, so heal now."""


class Bus(Protocol):
    connected: bool  # connected and subscribed right now

    async def run(self, handler: BusHandler, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, and stay connected until cancelled: reconnect with
        backoff whenever the connection drops, calling
        ``handler.bus_connected()`` after each (re)connection once every
        followed channel is subscribed again. ``task_status.started()`` is
        called at once, connected or not: a bridge serves its own peers
        while the bus is down."""

    def follow(self, doc_id: str) -> None:
        """Start receiving ``doc_id``'s messages (synchronous; takes effect soon)."""

    def unfollow(self, doc_id: str) -> None:
        """Stop receiving them."""

    def publish(self, doc_id: str, payload: bytes) -> None:
        """Send ``payload`` to every bridge following ``doc_id``, soon.
        Synchronous, never blocks: dropped when disconnected or too far behind."""

    async def check(self) -> None:
        """Raise unless the broker answers now (readiness; callers bound the wait)."""


BusFactory = Callable[[str], Bus]


def open_bus(url: str) -> Bus:
    """A bus from its URL: ``redis://host:6379/0`` (``rediss://`` for TLS)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBus

        return RedisBus(url)
    raise ValueError(f"unsupported bus URL {url!r}: use redis://host:6379/0")
