"""Admission: how many WebSocket connections the bridge holds, per client
address and in all, and how many of them are still in their handshake.

Sans-IO and synchronous: the endpoint asks :meth:`Admission.admit` before it
serves a socket and gets a :class:`Ticket` (release it when the connection
ends; call :meth:`Ticket.welcomed` when the handshake is over) or a
:class:`Refusal` naming the bound and a retry delay. A refused client is
closed with 4429 and ``"retry after N s: ..."``, which both clients honour:
an HTTP error on the upgrade would be fatal to them, while too many
connections is a state that passes.

Unauthenticated sockets are bounded apart from the rest because they cost
the bridge without having proven anything: a flood of sockets that never
finish their handshake cannot crowd out peers that did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..config import Limits

# Connections held is a state, not a rate: the delay only spaces retries out.
RETRY_SECONDS = 5


@dataclass(frozen=True)
class Refusal:
    reason: str
    retry_after: int = RETRY_SECONDS
    bound: str = "total"  # which one: "total", "per_address" or "unauthenticated"


class Ticket:
    """One admitted connection."""

    __slots__ = ("_admission", "address", "dialect", "_welcomed", "_released")

    def __init__(self, admission: "Admission", address: str, dialect: str) -> None:
        self._admission = admission
        self.address = address
        self.dialect = dialect
        self._welcomed = False
        self._released = False

    def welcomed(self) -> None:
        """The handshake is over: no longer counted as unauthenticated."""
        if not self._welcomed and not self._released:
            self._welcomed = True
            self._admission._unauthenticated -= 1
            self._admission.by_dialect[(self.dialect, "handshake")] -= 1
            self._admission.by_dialect[(self.dialect, "open")] += 1

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        admission = self._admission
        if not self._welcomed:
            admission._unauthenticated -= 1
        admission.by_dialect[(self.dialect, "open" if self._welcomed else "handshake")] -= 1
        admission._total -= 1
        admission._per_address[self.address] -= 1
        if not admission._per_address[self.address]:
            del admission._per_address[self.address]


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.max_total = limits.max_connections
        self.max_per_address = limits.max_connections_per_address
        self.max_unauthenticated = limits.max_unauthenticated
        self._total = 0
        self._unauthenticated = 0
        self._per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by bound, for health and metrics
        # (dialect, "handshake" | "open") -> connections held, for metrics
        self.by_dialect: Counter[tuple[str, str]] = Counter()

    def admit(self, address: str, dialect: str = "native") -> Ticket | Refusal:
        if self.max_total is not None and self._total >= self.max_total:
            return self._refuse("total", f"the server holds its maximum of {self.max_total} connections")
        if self.max_per_address is not None and self._per_address[address] >= self.max_per_address:
            return self._refuse("per_address", f"at most {self.max_per_address} connections per client address")
        if self.max_unauthenticated is not None and self._unauthenticated >= self.max_unauthenticated:
            return self._refuse("unauthenticated", f"too many connections in their handshake (at most {self.max_unauthenticated})")
        self._total += 1
        self._unauthenticated += 1
        self._per_address[address] += 1
        self.by_dialect[(dialect, "handshake")] += 1
        return Ticket(self, address, dialect)

    def _refuse(self, bound: str, reason: str) -> Refusal:
        self.refused[bound] += 1
        return Refusal(reason, bound=bound)

    def snapshot(self) -> dict:
        return {
            "connections": self._total,
            "unauthenticated": self._unauthenticated,
            "addresses": len(self._per_address),
            "refused": dict(self.refused),
        }
