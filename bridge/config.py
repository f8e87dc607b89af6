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
    max_frame_bytes: int = 16 * 1024 * 1024
    max_docs_per_connection: int = 1000
    max_outbox: int = 10_000
    handshake_timeout: float = 10.0
    flush_timeout: float = 10.0
    # How often a peer hears of durable heads advanced by others' changes.
    saved_interval: float = 0.25
