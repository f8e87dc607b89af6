"""``/metrics`` over HTTP: on the app's own port, on a port of its own, or
(``serve --workers N --metrics-port``) from the supervisor process.

On its own port it is a second uvicorn server in the bridge's event loop,
started and stopped by the app's lifespan, rather than prometheus-client's
``start_http_server``: that one answers from a thread, and the values read at
scrape time (documents, connections, the cluster's trackers) are plain dicts
that the event loop changes meanwhile. In the loop, a scrape sees them whole.

The supervisor of ``--workers`` has no app and no loop of its own (uvicorn's
``Multiprocess`` runs there): it does use ``start_http_server``, which is
safe there because all it reads is the workers' files.

Neither port asks for a token: the series carry counts, never document ids,
peer names or contents, and a scraper rarely holds a token. An operator who
wants them private gives ``--metrics-port 127.0.0.1:9100`` (or any interface
only the scraper reaches); docs/metrics.md says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import tempfile
from typing import AsyncIterator, Iterator

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..logs import get_logger
from ..metrics import AllWorkers, Metrics

log = get_logger(__name__)


def metrics_route(metrics: Metrics) -> Route:
    """``GET /metrics``: Prometheus text (OpenMetrics if the scraper asks)."""

    async def endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return Route("/metrics", endpoint)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _saying_where(host, port):
        return socket.create_server((host, port), family=family)


@contextlib.contextmanager
def _saying_where(host: str, port: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for /metrics on {host}:{port}: {exc.strerror or exc}") from None


class _InnerServer(uvicorn.Server):
    """A uvicorn server inside another's event loop: the process's signals
    are the main server's (whose shutdown ends the lifespan, and this
    server with it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Set in the inner server's task (and so in its connections' tasks).
_inner = contextvars.ContextVar("automerge_bridge_metrics_server", default=False)


class _QuietInner(logging.Filter):
    """Leaves out the inner server's "Started server process", "Shutting
    down"...: they would read as the main server's, twice over. Its warnings
    and errors stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _inner.get()


def _quiet_inner_lines() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietInner) for f in logger.filters):
        logger.addFilter(_QuietInner())


@contextlib.asynccontextmanager
async def metrics_port(metrics: Metrics, host: str, port: int, *, http: object = "auto") -> AsyncIterator[int]:
    """Serve ``/metrics`` (only) on ``host:port`` while the block runs; yields
    the port (useful with 0). ``http``: uvicorn's HTTP protocol (the app's,
    with its header deadline)."""
    sock = _listen(host, port)
    # No log_config / log_level: the main server configured logging, and
    # this one must not reconfigure it (its access lines go through the same
    # filters, which leave /metrics out).
    config = uvicorn.Config(Starlette(routes=[metrics_route(metrics)]), lifespan="off", log_config=None,
                            log_level=None, http=http)
    server = _InnerServer(config)
    stopped = anyio.Event()

    _quiet_inner_lines()

    async def run() -> None:
        _inner.set(True)
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            log.info("metrics on http://%s:%d/metrics", host, sock.getsockname()[1])
            try:
                yield sock.getsockname()[1]
            finally:
                server.should_exit = True
                with anyio.move_on_after(5):  # a scrape in flight finishes; a stuck one does not hold us up
                    await stopped.wait()
                tg.cancel_scope.cancel()
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def running(metrics: Metrics, port: int | None, host: str, *, http: object = "auto") -> AsyncIterator[None]:
    """What metrics need while the app runs: its own port when it has one,
    and in multiprocess mode this worker's live values kept in the files."""
    async with anyio.create_task_group() as tg:
        if metrics.multiprocess_dir is not None:
            tg.start_soon(metrics.share_periodically)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if port is not None:
                    metrics.port = await stack.enter_async_context(metrics_port(metrics, host, port, http=http))
                yield
        finally:
            tg.cancel_scope.cancel()
            metrics.process_exiting()


@contextlib.contextmanager
def for_workers(metrics_address: tuple[str, int] | None) -> Iterator[None]:
    """``serve --workers N``, in the supervisor: multiprocess mode for the
    workers it is about to start (a fresh directory for their files, in
    the environment they inherit), and ``/metrics`` on ``metrics_address``
    summed over them, when given. Removed again when the block ends."""
    from prometheus_client import CollectorRegistry, start_http_server

    with tempfile.TemporaryDirectory(prefix="automerge-bridge-metrics-") as path:
        previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        server = None
        try:
            if metrics_address is not None:
                registry = CollectorRegistry()
                registry.register(AllWorkers(path))
                host, port = metrics_address
                with _saying_where(host, port):
                    server, _ = start_http_server(port, addr=host, registry=registry)
                log.info("metrics of every worker on http://%s:%d/metrics", host, server.server_port)
            yield
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            if previous is None:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
