"""Token buckets, sans-IO: the caller passes the time.

One bucket per connection limits the frames and bytes a peer sends
(:mod:`bridge.server.peer`); one per client limits the documents it creates
(:class:`KeyedBuckets`, used by the hub).
"""

from __future__ import annotations

import math


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full.

    Sans-IO: the caller passes the time (any monotonic clock, in seconds)."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a token bucket needs a positive rate and burst, got {rate}/s, burst {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens (at most the whole burst); False if there are not enough."""
        self._refill(now)
        cost = min(float(cost), self.burst)
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst

    def seconds_until(self, cost: float) -> int:
        """Whole seconds until ``cost`` tokens are there again (at least 1)."""
        return max(1, math.ceil((min(float(cost), self.burst) - self.tokens) / self.rate))

    @property
    def refill_seconds(self) -> int:
        """Whole seconds an empty bucket takes to fill up again (at least 1)."""
        return max(1, math.ceil(self.burst / self.rate))


class KeyedBuckets:
    """One bucket per key (a client address, a principal), created full on
    first use. Buckets that have filled up again hold no information and are
    dropped when the map grows, so memory follows the clients active within
    one refill period, not every client ever seen."""

    def __init__(self, rate: float, burst: float, *, prune_above: int = 10_000) -> None:
        self.rate, self.burst = rate, burst
        self.prune_above = prune_above
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, cost: float = 1) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.prune_above:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(cost, now)

    def retry_after(self, key: str) -> int:
        bucket = self._buckets.get(key)
        return 1 if bucket is None else bucket.seconds_until(1)

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
