"""Settings a deployment tunes: limits on what one peer, one client address
and everyone together may make the bridge spend, and how long it waits.

``create_app(limits=Limits(...))`` takes them directly. Every field declared
with :func:`knob` is also a ``serve`` flag and an ``AUTOMERGE_BRIDGE_*``
variable (the CLI builds both from the metadata, and the README's limits table
lists them); ``None`` switches a limit off. The bounds on what incoming
Automerge data may contain are :class:`bridge.core.chunks.Bounds`
(``create_app(bounds=...)``), offered by the CLI the same way.

docs/limits.md explains each bound, what breaking it gets the peer, and what
the defaults cost at most on a small machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator

MiB = 1024 * 1024


def knob(default: Any, help: str, unit: str = "") -> Any:
    """A limit an operator may change; ``unit`` names the flag's value (BYTES,
    SECONDS...) and ``help`` is the flag's help text."""
    return field(default=default, metadata={"help": help, "unit": unit})


def knobs(cls: type) -> Iterator[tuple[str, Any, str, str]]:
    """``(name, default, help, unit)`` of every operator-facing field of a
    settings dataclass (:class:`Limits` or :class:`~bridge.core.chunks.Bounds`)."""
    for f in fields(cls):
        if "help" in f.metadata:
            yield f.name, f.default, f.metadata["help"], f.metadata.get("unit", "")


@dataclass
class Limits:
    """What one peer may do, and how long the bridge waits.

    Rate limits: each connection has two token buckets on what it *sends*
    (frames received by the bridge, counted from the first frame, ``hello``
    included): ``max_frames_per_second`` frames/s with a burst of
    ``frame_burst`` frames, and ``max_bytes_per_second`` bytes/s with a burst
    of ``byte_burst`` bytes (a frame larger than the burst costs the whole
    burst, so a single frame up to ``max_frame_bytes`` always fits a full
    bucket). The defaults are far above what a real application sends: an
    editor syncs a few frames per keystroke batch, and presence is a handful
    per second. A peer over either bucket is closed with 4429 and the reason
    ``"retry after N s: over ..."``, where N (whole seconds, at least 1) is
    the time its emptied bucket takes to refill; both clients wait that long
    before they reconnect. The buckets outlive the connection: a client's
    next connection starts where its last one left off, so reconnecting does
    not reset them (:class:`~bridge.core.ratelimit.ClientLedger`).

    Loop share: each client (its address, or its principal when identities
    are verified) may take ``max_loop_share`` of the event loop's time while
    other clients are connected (``loop_burst`` seconds saved up); past it
    its reads pause, which slows it down without closing it.
    """

    # --- frames and what a connection may hold ---------------------------------
    max_frame_bytes: int = knob(
        16 * MiB, "largest WebSocket frame or HTTP body a peer may send; a larger frame closes with 1009", "BYTES")
    max_hello_bytes: int = knob(
        64 * 1024, "largest first frame (the hello) before the handshake; larger closes with 1009", "BYTES")
    max_docs_per_connection: int = knob(
        1000, "documents one connection may have open; more: error too_many_docs", "COUNT")
    max_flushes_in_flight: int = knob(
        64, "flush requests one connection may have waiting; more: error quota for that flush", "COUNT")
    max_outbox: int = knob(
        10_000, "control frames queued for a peer that does not read; more closes it with 4409", "COUNT")
    max_outbox_bytes: int = knob(
        64 * MiB, "bytes queued for a peer that does not read; more closes it with 4409", "BYTES")
    # --- rate limits (see the class docstring) ------------------------------------
    max_frames_per_second: float | None = knob(
        200.0, "frames/s one connection may send (token bucket, kept across the client's reconnects); over it: "
        "close 4429 with a retry delay", "RATE")
    frame_burst: int = knob(400, "frames one connection may send at once above its rate", "COUNT")
    max_bytes_per_second: float | None = knob(
        4 * MiB, "bytes/s one connection may send (token bucket, kept across the client's reconnects); over it: "
        "close 4429 with a retry delay", "RATE")
    byte_burst: int = knob(16 * MiB, "bytes one connection may send at once above its rate", "BYTES")
    max_loop_share: float | None = knob(
        0.5, "share of the event loop one client's frames may take while other clients are connected; "
        "past it, its reads pause", "FRACTION")
    loop_burst: float = knob(0.5, "seconds of event-loop time one client may take at once above its share", "SECONDS")
    # --- connections -------------------------------------------------------------
    max_connections: int | None = knob(
        10_000, "WebSocket connections in all; more are closed with 4429 and a retry delay", "COUNT")
    max_connections_per_address: int | None = knob(
        256, "WebSocket connections from one client address (behind a proxy, configure --forwarded-allow-ips); "
        "more: 4429", "COUNT")
    max_unauthenticated: int | None = knob(
        512, "connections still in their handshake (no welcome yet), in all; more: 4429", "COUNT")
    docs_created_per_hour: int | None = knob(
        10_000, "new documents one client (principal, or address without auth) may create per hour; "
        "more: error quota", "COUNT")
    # --- time --------------------------------------------------------------------
    header_timeout: float = knob(
        10.0, "seconds a client has to send its HTTP request headers; then the socket is closed", "SECONDS")
    handshake_timeout: float = knob(
        10.0, "seconds from the WebSocket upgrade to the welcome (hello and authentication); traffic does not "
        "extend it; then close 4408", "SECONDS")
    send_timeout: float = knob(
        30.0, "seconds one frame may take to reach a peer's socket; a peer that stops reading is closed with 4409",
        "SECONDS")
    flush_timeout: float = knob(
        10.0, "seconds a flush may wait for its heads to be durable before it fails with flush_timeout", "SECONDS")
    # How often a peer hears of durable heads advanced by others' changes.
    saved_interval: float = 0.25
    # Relayed presence reaches a peer at most once per window (the newest per
    # sender); automerge-repo throttles its sync to 100 ms.
    eph_interval: float = 0.05
