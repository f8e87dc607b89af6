"""An HTTP header deadline for uvicorn.

uvicorn times out idle keep-alive connections, but a connection that sends
its request headers one byte at a time (slowloris), or opens and says nothing,
is held for as long as the client likes: every such socket costs a file
descriptor and a protocol object. :func:`header_timeout_protocol` returns
uvicorn's own HTTP protocol class with one addition: from the moment a
connection is made (and again when a further request on a keep-alive
connection begins), the client has ``seconds`` to finish its request headers,
or the socket is closed. Bytes trickling in do not extend the deadline.

Pass the class as ``uvicorn.run(app, http=...)``; the CLI does.
"""

from __future__ import annotations

import asyncio
import logging

from ..logs import get_logger
from typing import Any

log = get_logger(__name__)


class _HeaderDeadline:
    """Mixed into a uvicorn HTTP protocol class; ``header_timeout`` is set
    on the subclass."""

    header_timeout: float
    transport: asyncio.Transport
    client: Any
    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_timer = asyncio.get_running_loop().call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection from %s: no complete request headers within %g s",
                     _address(self.client), self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]


def _address(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a
    header deadline of ``seconds``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return _h11_protocol(seconds)

    class HttpToolsWithHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
        header_timeout = seconds

        # Parser callbacks: a request begins (re-arm: a keep-alive connection
        # gets a fresh deadline per request) and its headers are complete.
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_header_deadline()
            super().on_headers_complete()

    return HttpToolsWithHeaderDeadline


def _h11_protocol(seconds: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeaderDeadline(_HeaderDeadline, H11Protocol):  # type: ignore[misc]
        header_timeout = seconds

        def handle_events(self) -> None:
            super().handle_events()
            # h11 has parsed the request line and headers once it expects
            # the body (or the request is done); an upgrade replaced us.
            if self.conn.their_state in (h11.SEND_BODY, h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._disarm_header_deadline()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._disarm_header_deadline()
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The keep-alive timeout covers the wait for the next request;
            # once it starts, headers are due within the deadline again.
            self._arm_header_deadline()

    return H11WithHeaderDeadline


# For uvicorn's ``http`` option as an import string, where the config must be
# picklable (``serve --workers``: each worker process builds its own). Each
# worker sets the deadline from its settings before it serves.
HeaderDeadlineHTTP = header_timeout_protocol(10.0)
