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
