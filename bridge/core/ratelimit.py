"""Token buckets and what each client may spend, sans-IO: the caller passes
the time (any monotonic clock, in seconds).

- :class:`TokenBucket`: ``rate`` tokens per second, ``burst`` saved up.
- :class:`KeyedBuckets`: one bucket per key (documents created per client,
  used by the hub; log lines per template, used by :mod:`bridge.logs`).
- :class:`ClientLedger`: what each client's connections may send (frames and
  bytes) and how much of the event loop they may take, kept across
  reconnects (used by :mod:`bridge.server.peer`).
"""

from __future__ import annotations

import math

# Maps keyed by client forget entries that hold no information (full
# buckets) once they grow past this, so memory follows the clients active
# within one refill period, not every client ever seen.
PRUNE_ABOVE = 10_000


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full.

    :meth:`take` refuses what is not there; :meth:`spend` charges a cost only
    known afterwards (time already spent) and may leave the bucket in debt."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a token bucket needs a positive rate and burst, got {rate}/s, burst {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def refill(self, now: float) -> float:
        """Add what accrued since the last call; return the tokens there are."""
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now
        return self.tokens

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens (at most the whole burst); False if there are not enough."""
        cost = min(float(cost), self.burst)
        if cost > self.refill(now):
            return False
        self.tokens -= cost
        return True

    def spend(self, cost: float, now: float) -> None:
        self.refill(now)
        self.tokens -= cost

    def debt_seconds(self, now: float) -> float:
        """How long until the bucket is out of debt (0 if it is not)."""
        tokens = self.refill(now)
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def full(self, now: float) -> bool:
        return self.refill(now) >= self.burst

    def seconds_until(self, cost: float) -> int:
        """Whole seconds until ``cost`` tokens are there again (at least 1)."""
        return max(1, math.ceil((min(float(cost), self.burst) - self.tokens) / self.rate))

    @property
    def refill_seconds(self) -> int:
        """Whole seconds an empty bucket takes to fill up again (at least 1)."""
        return max(1, math.ceil(self.burst / self.rate))


class KeyedBuckets:
    """One bucket per key (a client address, a principal), created full on
    first use; full buckets are dropped when the map grows past PRUNE_ABOVE."""

    def __init__(self, rate: float, burst: float, *, prune_above: int = PRUNE_ABOVE) -> None:
        self.rate, self.burst = rate, burst
        self.prune_above = prune_above
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.prune_above:
                for full in [k for k, b in self._buckets.items() if b.full(now)]:
                    del self._buckets[full]
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket

    def take(self, key: str, now: float, cost: float = 1) -> bool:
        return self.bucket(key, now).take(cost, now)

    def retry_after(self, key: str) -> int:
        bucket = self._buckets.get(key)
        return 1 if bucket is None else bucket.seconds_until(1)

    def __len__(self) -> int:
        return len(self._buckets)


class Allowance:
    """One connection's frame and byte buckets (None: that limit is off)."""

    __slots__ = ("frames", "bytes")

    def __init__(self, frames: TokenBucket | None = None, bytes_: TokenBucket | None = None) -> None:
        self.frames = frames
        self.bytes = bytes_

    def full(self, now: float) -> bool:
        return all(b is None or b.full(now) for b in (self.frames, self.bytes))


class ClientLedger:
    """What each client may still spend, shared by its connections and kept
    across reconnects. A client is a key: its address, or its principal when
    an auth hook vouches for identities (:func:`bridge.auth.quota_key`).

    - **Frames and bytes** are limited per connection (``frames`` and
      ``bytes_`` are ``(rate, burst)``), but a connection's buckets outlive
      it: the client's next connection starts from the emptiest bucket its
      live and ended connections hold (refilled for the time since). A peer
      closed for flooding cannot reset its allowance by reconnecting, nor by
      opening a second connection while the first floods; one that waits
      the retry delay finds it full again. (Connections opened at the same
      moment each start full: the per-address connection cap and the loop
      share bound what that buys.)
    - **Loop time** (``loop`` is ``(share, burst)``): the event loop is what
      every peer shares, and the Automerge core holds it while it works. Each
      client may take ``share`` seconds of handling per second, ``burst``
      saved up; over it, its connections' reads pause until it is back in
      credit. Work-conserving: a share applies only while another client is
      connected, so a lone busy client (a bulk import, a test suite behind
      one address) still has the whole loop.
    """

    def __init__(
        self,
        *,
        frames: tuple[float, float] | None = None,
        bytes_: tuple[float, float] | None = None,
        loop: tuple[float, float] | None = None,
    ) -> None:
        self._frames, self._bytes = frames, bytes_
        self._loop = KeyedBuckets(*loop) if loop is not None else None
        self._left: dict[str, Allowance] = {}  # what ended connections still owe
        self._blocked: dict[str, float] = {}  # closed for its rate: no new connection until then
        self._live: dict[str, list[Allowance]] = {}  # connected clients' connections
        self.pauses = 0
        self.paused_seconds = 0.0

    @classmethod
    def from_limits(cls, limits) -> "ClientLedger":
        """The ledger :class:`bridge.config.Limits` describe."""
        def pair(rate: float | None, burst: float) -> tuple[float, float] | None:
            return (rate, burst) if rate else None

        return cls(
            frames=pair(limits.max_frames_per_second, limits.frame_burst),
            bytes_=pair(limits.max_bytes_per_second, limits.byte_burst),
            loop=pair(limits.max_loop_share, limits.loop_burst),
        )

    # --- connections ----------------------------------------------------------

    def join(self, key: str, now: float) -> Allowance:
        """A connection of ``key`` begins: its buckets start as low as the
        emptiest the client has, among its ended connections and its live
        ones (a connection opened while another floods does not start full)."""
        live = self._live.setdefault(key, [])
        others = [*live, self._left.get(key) or Allowance()]
        allowance = Allowance(
            self._inherit(self._frames, _emptiest([a.frames for a in others], now), now),
            self._inherit(self._bytes, _emptiest([a.bytes for a in others], now), now),
        )
        live.append(allowance)
        return allowance

    def leave(self, key: str, allowance: Allowance, now: float) -> None:
        """A connection of ``key`` ended with ``allowance`` as it stood."""
        live = self._live.get(key, [])
        if allowance in live:
            live.remove(allowance)
        if not live:
            self._live.pop(key, None)
        kept = self._left.pop(key, None) or Allowance()
        owed = Allowance(_emptier(kept.frames, allowance.frames, now), _emptier(kept.bytes, allowance.bytes, now))
        if owed.full(now):
            return  # nothing owed, nothing to remember
        if len(self._left) >= PRUNE_ABOVE:
            for other in [k for k, a in self._left.items() if a.full(now)]:
                del self._left[other]
        self._left[key] = owed

    def block(self, key: str, seconds: float, now: float) -> None:
        """``key`` was closed for its rate and told to come back in
        ``seconds``: until then its new connections are refused at once
        (before their handshake where the key is an address), so a client
        that reconnects without waiting costs the bridge as little as can be."""
        if len(self._blocked) >= PRUNE_ABOVE:
            for other in [k for k, until in self._blocked.items() if until <= now]:
                del self._blocked[other]
        self._blocked[key] = max(now + seconds, self._blocked.get(key, now))

    def blocked_for(self, key: str, now: float) -> int:
        """Whole seconds (at least 1) until ``key`` may connect again; 0 if it may now."""
        until = self._blocked.get(key)
        if until is None:
            return 0
        if now >= until:
            del self._blocked[key]
            return 0
        return max(1, math.ceil(until - now))

    @staticmethod
    def _inherit(rate: tuple[float, float] | None, left: TokenBucket | None, now: float) -> TokenBucket | None:
        if rate is None:
            return None
        bucket = TokenBucket(*rate)
        if left is not None:
            bucket.tokens, bucket.stamp = min(bucket.burst, left.refill(now)), now
        return bucket

    # --- loop time ------------------------------------------------------------

    @property
    def contended(self) -> bool:
        """Another client is connected too: shares apply."""
        return len(self._live) > 1

    def charge_loop(self, key: str, seconds: float, now: float) -> float:
        """Charge ``seconds`` of handling to ``key``; return how long its
        reads should pause (0: not at all)."""
        if self._loop is None:
            return 0.0
        bucket = self._loop.bucket(key, now)
        bucket.spend(seconds, now)
        if not self.contended:
            # Time nobody else wanted is not owed: a lone client that then
            # meets another starts from an empty bucket, not a long pause.
            bucket.tokens = max(bucket.tokens, 0.0)
            return 0.0
        return bucket.debt_seconds(now)

    def paused(self, seconds: float) -> None:
        """A connection's reads were paused for ``seconds`` (for /healthz)."""
        self.pauses += 1
        self.paused_seconds += seconds

    def snapshot(self) -> dict:
        """For /healthz: clients connected, clients whose ended connections
        still owe, and the pauses imposed for loop time so far."""
        return {
            "clients": len(self._live),
            "owing": len(self._left),
            "pauses": self.pauses,
            "paused_seconds": round(self.paused_seconds, 3),
        }


def _emptiest(buckets: list[TokenBucket | None], now: float) -> TokenBucket | None:
    found: TokenBucket | None = None
    for bucket in buckets:
        found = _emptier(found, bucket, now)
    return found


def _emptier(a: TokenBucket | None, b: TokenBucket | None, now: float) -> TokenBucket | None:
    if a is None or b is None:
        return a or b
    return a if a.refill(now) <= b.refill(now) else b
