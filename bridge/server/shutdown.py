"""Graceful shutdown: nothing a peer sent is dropped, and every peer is told
to come back.

uvicorn, left alone, answers SIGTERM by failing every WebSocket with 1012 at
once: a peer's last frames may be accepted but its ``flushed`` never sent,
and nothing says which connections were mid-change. The bridge goes first:

1. stop taking work: new connections are closed with 1001, ``/readyz``
   says no (a load balancer stops routing here), and every connection stops
   reading (a frame being handled finishes);
2. commit what was accepted: group commit drains, so every change a peer
   sent is durable and its ``saved`` / ``flushed`` answers are queued;
3. let those answers go out (bounded per peer: one may not read), then
   close each peer with 1001, "going away": clients reconnect by themselves,
   to another node or to this one restarted;
4. then hand the signal to uvicorn, which stops listening, runs the
   lifespan's shutdown (drain again, close the store) and exits.

The whole sequence is bounded by ``grace`` seconds; uvicorn's own phase by
its ``timeout_graceful_shutdown``. A second SIGINT (Ctrl-C twice) skips the
wait.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Callable

import anyio

from ..logs import get_logger

if TYPE_CHECKING:
    from ..hub import Hub
    from .ws import SocketPump

log = get_logger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The app's connections and its going-away sequence."""

    def __init__(self, *, grace: float, send_timeout: float) -> None:
        self.grace = grace
        self.send_timeout = send_timeout
        self.pumps: set[SocketPump] = set()
        self.going_away = False
        self._requested = anyio.Event()
        self._signal: int | None = None

    async def go_away(self, hub: Hub) -> None:
        """Steps 1-3 above, bounded by ``grace``."""
        self.going_away = True
        pumps = list(self.pumps)
        log.info("shutting down: committing what %d connections sent, then closing them with 1001", len(pumps))
        with anyio.move_on_after(self.grace) as scope:
            for pump in pumps:
                pump.stop_reading()
            await hub.drain()
            async with anyio.create_task_group() as tg:
                for pump in pumps:
                    tg.start_soon(pump.go_away, self.send_timeout)
        if scope.cancelled_caught:
            log.warning("shutting down: not done within %g s; what is not committed was never acknowledged", self.grace)

    # --- signals ----------------------------------------------------------------

    async def watch_signals(self, hub: Hub, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Take SIGTERM and SIGINT from whoever handles them (uvicorn), go
        away, then hand the signal on. Only the main thread may handle
        signals: elsewhere (a server in a thread, as in tests) this does
        nothing and the embedding server's own shutdown applies."""
        if threading.current_thread() is not threading.main_thread():
            task_status.started()
            return
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        token = anyio.lowlevel.current_token()

        def on_signal(sig: int, frame) -> None:
            if self._signal is not None:  # asked twice: do not wait any longer
                _hand_on(previous[sig], sig, frame)
                return
            self._signal = sig
            _call_soon(token, self._requested.set)

        for sig in SIGNALS:
            signal.signal(sig, on_signal)
        try:
            task_status.started()
            await self._requested.wait()
            await self.go_away(hub)
            _hand_on(previous[self._signal], self._signal, None)
        finally:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is on_signal:
                    signal.signal(sig, handler)


def _call_soon(token, callback: Callable[[], None]) -> None:
    """Run ``callback`` on the event loop, from a signal handler (which runs
    between two bytecodes of the main thread, maybe inside the loop)."""
    native = token.native_token
    if hasattr(native, "call_soon_threadsafe"):  # asyncio: the loop
        native.call_soon_threadsafe(callback)
    else:  # trio
        native.run_sync_soon(callback)


def _hand_on(handler, sig: int, frame) -> None:
    """Do what would have happened to ``sig`` without us."""
    if callable(handler):
        handler(sig, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
