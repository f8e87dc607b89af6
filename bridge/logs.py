"""Log lines a peer cannot blow up.

Peers choose much of what the bridge logs about them (names, document ids,
the reasons their input was refused), and a flooding peer can make the same
warning happen thousands of times a second. Every bridge logger that may
speak about a peer comes from :func:`get_logger`, whose filter

- cuts each line to ``MAX_LINE`` characters (the formatted message, with
  its arguments; a traceback, which is the bridge's own, is left alone);
- lets each kind of line (logger and message template) through at
  ``LINES_PER_SECOND`` with a burst of ``BURST``, and counts the rest: the
  next line of that kind that gets through says how many were suppressed.

Errors go through the same filter: a store that fails on every commit must
not fill the disk either.
"""

from __future__ import annotations

import logging
import re
import time

from .core.ratelimit import KeyedBuckets

MAX_LINE = 2000
LINES_PER_SECOND = 5.0
BURST = 50


class BoundedLines(logging.Filter):
    def __init__(self, *, max_line: int = MAX_LINE, rate: float = LINES_PER_SECOND, burst: int = BURST,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.max_line = max_line
        self._buckets = KeyedBuckets(rate, burst)
        self._suppressed: dict[str, int] = {}
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}\0{record.msg}"
        if not self._buckets.take(key, self._clock()):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        message = record.getMessage()
        if len(message) > self.max_line:
            message = f"{message[: self.max_line]}... ({len(message) - self.max_line} more characters)"
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" [{suppressed} similar lines suppressed]"
        record.msg, record.args = message, None
        return True


_FILTER = BoundedLines()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the shared :class:`BoundedLines` filter."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


# --- tokens never reach a log line ------------------------------------------------

# What a credential looks like in a line: a query parameter, a Bearer header,
# or a bare JWT (three base64url parts, the first a JSON header: "eyJ").
_SECRETS = re.compile(r"(?i)(token=|bearer\s+)[^\s&\"'#]+|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")


def redact(text: str) -> str:
    """``text`` with every token in it replaced by ``[redacted]``."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class RedactTokens(logging.Filter):
    """Strips tokens from a record's message and from each of its string
    arguments (uvicorn's access formatter reads its arguments by position,
    so they stay a tuple). Installed on every handler by
    :func:`redact_tokens_everywhere`, so lines from any logger — uvicorn's
    access log (``GET /docs/x?token=...``) and its WebSocket lines included —
    are covered."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


_REDACT = RedactTokens()


def redact_tokens_everywhere() -> None:
    """Add :class:`RedactTokens` to every handler of the root logger and of
    uvicorn's loggers (call it after logging is configured)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if _REDACT not in handler.filters:
                handler.addFilter(_REDACT)
