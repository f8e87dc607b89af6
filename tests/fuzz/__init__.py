"""Fuzz suites (see README.md here); helpers they share."""

from __future__ import annotations

from .. import crafting


def flip_bytes(draw, data: bytes, st) -> bytes:
    """``data`` with 1-4 bytes changed (hypothesis ``draw``, strategies
    module ``st``); half the time the chunk checksum is fixed up afterwards,
    so the damage gets past the checksum and into the parser."""
    if not data:
        return b"\x00"
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    out = bytes(out)
    if draw(st.booleans()):
        try:
            out = crafting.rechecksum(out)
        except Exception:
            pass
    return out
