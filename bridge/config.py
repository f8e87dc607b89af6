"""Settings a deployment tunes: limits on what one peer may do and how long
the bridge waits. The CLI's flags and ``AUTOMERGE_BRIDGE_*`` variables map
here; ``create_app(limits=Limits(...))`` takes them directly.

The bounds on what incoming Automerge data may contain are
:class:`bridge.core.chunks.Bounds` (``create_app(bounds=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    before they reconnect. ``None`` switches a bucket off.
    """

    max_frame_bytes: int = 16 * 1024 * 1024
    max_docs_per_connection: int = 1000
    max_outbox: int = 10_000
    handshake_timeout: float = 10.0
    flush_timeout: float = 10.0
    # How often a peer hears of durable heads advanced by others' changes.
    saved_interval: float = 0.25
    # Token buckets on frames received from one peer (see the docstring).
    max_frames_per_second: float | None = 200.0
    frame_burst: int = 400
    max_bytes_per_second: float | None = 4 * 1024 * 1024
    byte_burst: int = 16 * 1024 * 1024
