"""The webhook: POST each commit to a URL the operator chose, signed.

One consumer of :meth:`bridge.hub.Hub.committed`, so it inherits its
guarantees: it never slows the bridge, and a receiver that is down or slow
sees the latest heads per document (coalesced) rather than a backlog, and
a ``missed`` event if it fell more than ``max_docs`` documents behind.

Each delivery is one JSON body::

    {"type": "commit", "doc_id": "notes", "heads": ["ab12..."], "origin": "alice",
     "at": 1795000000.123, "coalesced": 1}
    {"type": "missed", "dropped": 120}

signed like Stripe's: ``X-Bridge-Signature: t=<unix seconds>,v1=<hex>`` where
``v1`` is HMAC-SHA256 with the shared secret over ``"<t>.<raw body>"``. A
receiver recomputes it (compare in constant time) and rejects a ``t`` older
than a few minutes, so a captured request cannot be replayed later.

Deliveries go one at a time, in commit order per document. A failed one
(a network error, a timeout, a status other than 2xx) is retried with
jittered exponential backoff, up to ``max_attempts``; then it is dropped
with a warning. The receiver reads the current state at ``heads`` anyway,
so only the newest event of a document matters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import anyio
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .hooks import Commit, CommitSubscription, Missed
from .logs import get_logger

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Bridge-Signature"


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str | bytes, body: bytes, header: str, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class DeliveryFailed(Exception):
    pass


class Webhook:
    def __init__(self, url: str, secret: str, *, timeout: float = 10.0, max_attempts: int = 8,
                 max_backoff: float = 30.0, max_docs: int = 10_000) -> None:
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.max_docs = max_docs
        self.delivered = self.failed = 0

    def __repr__(self) -> str:  # never the secret
        return f"Webhook({self.url!r})"

    async def run(self, commits: CommitSubscription, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            task_status.started()
            async for event in commits:
                try:
                    await self._deliver(http, event)
                except Exception:  # a bug or a bad URL must not take the bridge down with the webhook
                    self.failed += 1
                    log.exception("webhook %s: delivering failed", self.url)

    async def _deliver(self, http: httpx.AsyncClient, event: Commit | Missed) -> None:
        body = json.dumps(_payload(event), separators=(",", ":")).encode()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_attempts),
                wait=wait_exponential_jitter(multiplier=0.1, max=self.max_backoff, jitter=0.5),
                retry=retry_if_exception_type((httpx.HTTPError, DeliveryFailed)),
                reraise=True,
            ):
                with attempt:
                    await self._post(http, body)
        except (httpx.HTTPError, DeliveryFailed) as exc:
            self.failed += 1
            what = f"document {event.doc_id}" if isinstance(event, Commit) else "a missed-events notice"
            log.warning("webhook %s: giving up on %s after %d attempts: %s", self.url, what, self.max_attempts,
                        str(exc) or type(exc).__name__)
        else:
            self.delivered += 1

    async def _post(self, http: httpx.AsyncClient, body: bytes) -> None:
        # Signed per attempt: a retry carries a fresh timestamp.
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body, int(time.time()))}
        answer = await http.post(self.url, content=body, headers=headers)
        if not 200 <= answer.status_code < 300:
            raise DeliveryFailed(f"HTTP {answer.status_code}")


def _payload(event: Commit | Missed) -> dict:
    if isinstance(event, Missed):
        return {"type": "missed", "dropped": event.dropped}
    return {"type": "commit", "doc_id": event.doc_id, "heads": event.heads_hex, "origin": event.origin,
            "at": round(event.at, 3), "coalesced": event.coalesced}
