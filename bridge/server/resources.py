"""File descriptors: how many the process uses, and a clear log line (and a
``/healthz`` problem) when it runs out of them.

A process at its ``RLIMIT_NOFILE`` cannot accept a connection: every new
client, ``/healthz`` included, fails. What the operator sees depends on the
event loop:

- stdlib asyncio calls the loop's exception handler with
  ``"socket.accept() out of system resource"`` and the ``OSError`` (EMFILE,
  ENFILE, ENOBUFS, ENOMEM) on every failed accept (about once a second while
  it lasts: it stops listening for ``ACCEPT_RETRY_DELAY``), and the default
  handler logs each with a traceback;
- uvloop (what uvicorn picks when it is installed) reports nothing: libuv's
  "EMFILE trick" accepts the waiting connections with a reserved descriptor
  and closes them at once. Python never hears of it.

:class:`FdMonitor` covers both: it replaces asyncio's report with one
rate-limited warning (chaining every other exception to the previous
handler), and it samples the descriptor count about once a second
(:meth:`FdMonitor.watch`), treating "at the limit" as exhaustion. Its
:meth:`~FdMonitor.snapshot` and :meth:`~FdMonitor.problem` feed ``/healthz``
so that the episode is still visible after it ended.
"""

from __future__ import annotations

import asyncio
import errno
import logging

from ..logs import get_logger
import os
import time
from typing import Any, Callable

import anyio

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

log = get_logger(__name__)

#: The ``message`` asyncio's selector event loop gives a failed ``accept()``
#: (Lib/asyncio/selector_events.py, ``_accept_connection``).
ACCEPT_FAILURE_MESSAGE = "socket.accept() out of system resource"
ACCEPT_FAILURE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def open_fds() -> int | None:
    """Descriptors this process has open, or None where that cannot be told.

    Listing the directory takes a descriptor of its own, which is not
    counted. When even that fails with EMFILE, the process is at its limit.
    """
    for fd_dir in _FD_DIRS:
        try:
            return max(len(os.listdir(fd_dir)) - 1, 0)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                return fd_limit()
            return None
    return None


def fd_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE``, or None when unlimited or unknown."""
    if resource is None:
        return None
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft < 0 else soft


class FdMonitor:
    """File-descriptor use of the process, and what to say when it runs out.

    ``install()`` (in the running asyncio loop) makes it the loop's exception
    handler; ``uninstall()`` puts the previous one back. ``watch()`` is the
    sampling task. All of it runs in the event loop's thread.
    """

    def __init__(
        self,
        *,
        warn_every: float = 10.0,
        recent: float = 60.0,
        high_water: float = 0.9,
        sample_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        count_open: Callable[[], int | None] = open_fds,
        get_limit: Callable[[], int | None] = fd_limit,
    ) -> None:
        self.warn_every = warn_every
        self.recent = recent
        self.high_water = high_water
        self.sample_every = sample_every
        self._clock = clock
        self._count_open = count_open
        self._get_limit = get_limit

        self.accept_failures = 0
        self.last_accept_failure: float | None = None
        self.limit_reached = 0  # samples that found the process at its limit
        self.last_limit_reached: float | None = None

        self._last_warning: float | None = None
        self._suppressed = 0  # warnings not logged since the last one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None
        self._active = False

    # --- the loop's exception handler ------------------------------------------

    def install(self) -> bool:
        """Become the running asyncio loop's exception handler, chaining to
        the one there. Does nothing (False) outside asyncio (trio)."""
        if self._active:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._active = True
        loop.set_exception_handler(self._handle)
        return True

    def uninstall(self) -> None:
        """Give the loop its previous handler back. If another handler was
        installed on top of ours, ours stays in its chain, forwarding all."""
        if not self._active:
            return
        self._active = False
        loop, self._loop = self._loop, None
        try:
            if loop is not None and not loop.is_closed() and loop.get_exception_handler() == self._handle:
                loop.set_exception_handler(self._previous)
                self._previous = None
        except Exception:  # never let shutdown fail over this
            log.debug("could not restore the previous exception handler", exc_info=True)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self._active and is_accept_failure(context):
            try:
                self.record_accept_failure(context["exception"])
                return
            except Exception:  # fall through: asyncio's own report is better than none
                log.debug("recording an accept failure failed", exc_info=True)
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    # --- events ----------------------------------------------------------------

    def record_accept_failure(self, exc: OSError) -> None:
        now = self._clock()
        self.accept_failures += 1
        self.last_accept_failure = now
        self._warn(now, exc.errno)

    def sample(self) -> tuple[int | None, int | None]:
        """Count the descriptors now; at the limit counts as exhaustion."""
        open_now, limit = self._count_open(), self._get_limit()
        if open_now is not None and limit is not None and open_now >= limit:
            now = self._clock()
            self.limit_reached += 1
            self.last_limit_reached = now
            self._warn(now, errno.EMFILE, open_now, limit)
        return open_now, limit

    async def watch(self) -> None:
        """Sample every ``sample_every`` seconds until cancelled: under
        uvloop that is the only way to see the descriptors run out."""
        while True:
            try:
                self.sample()
            except Exception:  # a monitor must not take the server down
                log.debug("sampling file descriptors failed", exc_info=True)
            await anyio.sleep(self.sample_every)

    def _warn(self, now: float, error: int | None, open_now: int | None = None, limit: int | None = None) -> None:
        if self._last_warning is not None and now - self._last_warning < self.warn_every:
            self._suppressed += 1
            return
        self._last_warning = now
        suppressed, self._suppressed = self._suppressed, 0
        if limit is None:
            limit = self._get_limit()
        if open_now is None:
            open_now = self._count_open()
        usage = f"{_n(open_now)} of {_n(limit)} open"
        if error in (errno.EMFILE, None):
            line = (f"out of file descriptors: {usage}; new connections are refused until some close "
                    "(raise the limit with ulimit -n)")
        elif error == errno.ENFILE:
            line = ("the system is out of file descriptors (ENFILE; this process has "
                    f"{usage}); new connections are refused until some close (raise fs.file-max)")
        else:
            line = (f"out of memory for new connections ({errno.errorcode.get(error, error)}; "
                    f"file descriptors: {usage}); new connections are refused until it frees up")
        if suppressed:
            line += f" ({suppressed} more since the previous warning, not logged)"
        log.warning("%s", line)

    # --- health ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        open_now, limit = self._count_open(), self._get_limit()
        return {
            "open": open_now,
            "limit": limit,
            "accept_failures": self.accept_failures,
            "last_accept_failure_age_s": self._age(self.last_accept_failure),
            "limit_reached": self.limit_reached,
            "last_limit_reached_age_s": self._age(self.last_limit_reached),
        }

    def problem(self, snapshot: dict[str, Any] | None = None) -> str | None:
        """What ``/healthz`` should report, or None when all is well."""
        snap = snapshot if snapshot is not None else self.snapshot()
        usage = f"{_n(snap['open'])} of {_n(snap['limit'])} file descriptors open"
        ages = [age for age in (snap["last_accept_failure_age_s"], snap["last_limit_reached_age_s"]) if age is not None]
        if ages and min(ages) < self.recent:
            what = (f"{snap['accept_failures']} accept failures" if snap["accept_failures"]
                    else "the process was at its limit")
            return (f"out of file descriptors {min(ages):.0f} s ago ({what}): new connections were refused; "
                    f"{usage} now (raise the limit with ulimit -n)")
        if snap["open"] is not None and snap["limit"] and snap["open"] >= self.high_water * snap["limit"]:
            return (f"{usage} ({100 * snap['open'] // snap['limit']}%): at the limit new connections "
                    "are refused (raise the limit with ulimit -n)")
        return None

    def _age(self, when: float | None) -> float | None:
        return None if when is None else round(max(self._clock() - when, 0.0), 1)


def is_accept_failure(context: dict[str, Any]) -> bool:
    """Is this asyncio's report of an ``accept()`` out of descriptors or memory?"""
    exc = context.get("exception")
    message = str(context.get("message", ""))
    return (
        isinstance(exc, OSError)
        and exc.errno in ACCEPT_FAILURE_ERRNOS
        and (message == ACCEPT_FAILURE_MESSAGE or "accept" in message)
    )


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
