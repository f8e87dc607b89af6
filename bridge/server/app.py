"""The Starlette application: WebSocket ``/sync`` plus the HTTP routes.

``create_app`` returns an ordinary Starlette app. To mount it inside your own
Starlette or FastAPI app, mount it and hand its lifespan to the parent (a
mounted app's lifespan is not run by Starlette)::

    bridge_app = create_app(data_dir="data")
    app = Starlette(routes=[Mount("/bridge", bridge_app)],
                    lifespan=bridge_app.router.lifespan_context)

The hub is at ``bridge_app.state.hub`` once the app has started.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..auth import Authenticate, quota_key
from ..config import Limits
from ..core.chunks import Bounds
from ..core.ratelimit import ClientLedger
from ..errors import CloseCode
from ..hub import Hub
from ..logs import bind_connection, get_logger
from ..metrics import Metrics
from ..storage import Store, open_store

if TYPE_CHECKING:
    from ..cluster import Bus
    from ..webhook import Webhook
from .admission import Admission, Refusal
from .deadlines import header_timeout_protocol
from . import metrics as metrics_http
from .admin import admin_routes
from .http import doc_routes, error
from .peer import PeerSession
from .shutdown import Shutdown
from .web import web_routes
from .ws import SocketPump

log = get_logger(__name__)


def _find_web_dist() -> Path:
    """Where the demo page and the browser client are.

    In a checkout (``pip install -e .``) that is the checkout's web/dist, what
    ``npm run build`` writes; an installed wheel carries them as package data
    in ``bridge/web/`` (put there by the build hook in setup.py).
    """
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    if (checkout / "web" / "build.mjs").is_file() and (checkout / "pyproject.toml").is_file():
        return checkout / "web" / "dist"
    return package / "web"


WEB_DIST = _find_web_dist()


def create_app(
    store: Store | str | None = None,
    *,
    data_dir: str | Path = "data",
    limits: Limits | None = None,
    authenticate: Authenticate | None = None,
    idle_unload_after: float = 30.0,
    compact_after: int = 1000,
    create_on_open: bool = True,
    bounds: Bounds | None = None,
    web_dir: str | Path | None = WEB_DIST,
    reader_presence: bool = True,
    bus: "Bus | str | None" = None,
    heal_interval: float = 2.0,
    shutdown_grace: float = 10.0,
    handle_signals: bool = False,
    webhook: "Webhook | None" = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_route: bool = True,
) -> Starlette:
    """Build the bridge.

    ``store`` is a :class:`~bridge.storage.Store`, a store URL (``memory:``,
    ``sqlite:///path``) or None for SQLite at ``data_dir/bridge.sqlite3``.
    ``authenticate``: a hook (:mod:`bridge.auth`), e.g.
    ``bridge.tokens.TokenAuth(secret=...)``; None lets everyone read and
    write everything. ``reader_presence``: relay ``eph`` from read-only
    principals (viewers' cursors) too.

    ``bus`` (a :class:`~bridge.cluster.Bus` or a URL, ``redis://host/0``)
    joins this bridge to the others that share its store, which must then
    be a shared one (PostgreSQL): see docs/cluster.md. ``heal_interval``:
    seconds between two looks at the store for commits the bus did not bring.

    ``webhook``: a :class:`~bridge.webhook.Webhook` that POSTs each commit
    (docs/hooks.md); ``app.state.hub.committed()`` is the in-process hook.

    ``handle_signals``: on SIGTERM or SIGINT, commit what peers sent and
    close them with 1001 (within ``shutdown_grace`` seconds) before the
    server's own shutdown (:mod:`bridge.server.shutdown`); ``serve`` turns
    it on. Embedded, ``await app.state.shutdown.go_away(app.state.hub)``
    does the same from your own shutdown path.

    Prometheus metrics (docs/metrics.md) are at ``/metrics``, or with
    ``metrics_port`` on that port of ``metrics_host`` instead (served while
    the app runs). ``metrics_route=False``: nowhere, because something else
    serves them (``serve --workers``' supervisor, or your app, from
    ``app.state.metrics.registry``).
    """
    if store is None:
        store = f"sqlite:///{Path(data_dir) / 'bridge.sqlite3'}"
    if isinstance(store, str):
        store = open_store(store)
    node = None
    if bus is not None:
        from ..cluster import open_bus
        from ..cluster.node import ClusterNode, shares_store

        if not shares_store(store):
            raise ValueError(
                f"a bus joins bridges that share one store, but {type(store).__name__} is one bridge's alone: "
                "use a PostgreSQL store (postgresql://...)"
            )
        node = ClusterNode(store, open_bus(bus) if isinstance(bus, str) else bus, heal_interval=heal_interval)
    limits = limits or Limits()
    server_peer = f"bridge-{secrets.token_hex(4)}"
    admission = Admission(limits)
    metrics = Metrics()  # a registry per app: two apps in one process do not collide
    metrics.watch(admission=admission, node=node)
    shutdown = Shutdown(grace=shutdown_grace, send_timeout=limits.send_timeout)
    ledger = ClientLedger.from_limits(limits)  # shared by every session: kept across reconnects

    @contextlib.asynccontextmanager
    async def lifespan(parent: Starlette) -> AsyncIterator[None]:
        # ``parent`` is whichever app runs this lifespan: ours, or the app we
        # are mounted in. Handlers look the hub up on ours.
        await store.open()
        hub = Hub(
            store,
            idle_unload_after=idle_unload_after,
            compact_after=compact_after,
            create_on_open=create_on_open,
            bounds=bounds,
            docs_created_per_hour=limits.docs_created_per_hour,
            replicator=node,
            metrics=metrics,
        )
        metrics.watch(hub=hub)
        from .resources import FdMonitor

        # Out of file descriptors: one clear warning (not asyncio's traceback
        # per failed accept, nor uvloop's silence) and a /healthz problem.
        fd_monitor = FdMonitor()
        fd_monitor.install()
        app.state.fd_monitor = parent.state.fd_monitor = fd_monitor
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(hub.run)
                if handle_signals:
                    await tg.start(shutdown.watch_signals, hub)
                if webhook is not None:
                    await tg.start(webhook.run, hub.committed(max_docs=webhook.max_docs))
                if node is not None:
                    await tg.start(node.run, hub)
                tg.start_soon(fd_monitor.watch)
                app.state.hub = parent.state.hub = hub
                try:
                    async with metrics_http.running(metrics, metrics_port, metrics_host,
                                                    http=header_timeout_protocol(limits.header_timeout)):
                        yield
                finally:
                    # Bounded: a store that is down must not hang shutdown.
                    # What is not committed was never acknowledged.
                    with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                        await hub.drain()
                    tg.cancel_scope.cancel()
        finally:
            fd_monitor.uninstall()
            await store.close()

    async def sync_endpoint(websocket: WebSocket) -> None:
        hub: Hub = app.state.hub
        address = websocket.client.host if websocket.client else "?"
        log_context = bind_connection(address)  # every line about this connection names it
        if shutdown.going_away:
            await websocket.accept()
            await websocket.close(CloseCode.GOING_AWAY, "server shutting down; reconnect")
            metrics.dialect(PeerSession.DIALECT).closed(CloseCode.GOING_AWAY)
            return
        ticket = admission.admit(address)
        if isinstance(ticket, Refusal):
            log.warning("refused a connection from %s: %s", address, ticket.reason)
            metrics.rate_limited[ticket.bound].inc()
            metrics.dialect(PeerSession.DIALECT).closed(CloseCode.RATE_LIMITED)
            await websocket.accept()
            await websocket.close(CloseCode.RATE_LIMITED, f"retry after {ticket.retry_after} s: {ticket.reason}"[:120])
            return
        try:
            # Closed for its rate, and back before the delay it was given: held
            # (before its handshake, counted as unauthenticated) until the delay
            # is over. Refusing at once would only invite the next attempt:
            # a client that reconnects in a loop costs a handshake per attempt.
            blocked = ledger.blocked_for(quota_key(None, address, False), time.monotonic())
            if blocked:
                log.info("holding a connection from %s for %d s: rate limited, and reconnected too soon", address, blocked)
                await anyio.sleep(min(blocked, limits.handshake_timeout))
            session = PeerSession(
                hub, server_peer=server_peer, limits=limits, address=address,
                identity_verified=authenticate is not None, ledger=ledger, reader_presence=reader_presence,
            )
            session.on_welcome = ticket.welcomed
            log_context.session = session
            pump = SocketPump(websocket, session, hub, limits=limits, authenticate=authenticate, metrics=session.metrics)
            shutdown.pumps.add(pump)
            try:
                await pump.serve()
            finally:
                shutdown.pumps.discard(pump)
        finally:
            ticket.release()

    async def healthz(request: Request) -> Response:
        hub: Hub = app.state.hub
        health = hub.health()
        body = {
            **health, "peer": server_peer, "loaded_docs": len(hub.loaded), "commits": hub.writer.commits,
            "connections": admission.snapshot(), "clients": ledger.snapshot(),
        }
        if node is not None:
            body["cluster"] = node.health()
        fd_monitor = app.state.fd_monitor
        body["fds"] = fds = fd_monitor.snapshot()
        fd_problem = fd_monitor.problem(fds)
        if fd_problem is not None:
            # Never "failing" (503) for this: a node that ran out of
            # descriptors still saves; the operator must see it all the same.
            body["problems"] = [*body["problems"], fd_problem]
            if body["status"] == "ok":
                body["status"] = "degraded"
        # 503 only when saving is failing: one degraded document is reported
        # but must not take the whole node out of a load balancer.
        return JSONResponse(body, status_code=503 if health["status"] == "failing" else 200)

    async def readyz(request: Request) -> Response:
        """Ready to take traffic: the store answers (and the bus, when there
        is one), and commits are not failing. A load balancer routes around
        a node that says no; /healthz stays the liveness probe."""
        hub: Hub = app.state.hub
        problems: list[str] = []
        checks = [("store", store.check)] + ([("bus", node.bus.check)] if node is not None else [])
        for name, check in checks:
            try:
                with anyio.fail_after(2):
                    await check()
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}"[:300] if str(exc) else f"{name}: {type(exc).__name__}")
        if shutdown.going_away:
            problems.append("shutting down")
        if hub.writer.failing:
            problems.append(f"store: commits failing: {hub.writer.failing}")
        body = {"ready": not problems, "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def sync_over_http(request: Request) -> Response:
        # A plain GET on the socket's URL (a browser probing why its socket
        # failed) learns that the path is right and an upgrade is needed.
        return error(426, "upgrade_required", "this is the WebSocket endpoint: connect with a WebSocket")

    routes = [
        WebSocketRoute("/sync", sync_endpoint),
        Route("/sync", sync_over_http),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *doc_routes(lambda: app.state.hub, limits, authenticate),
        *admin_routes(lambda: app.state.hub, authenticate),
        # Open even when auth is on: counts only, no document data (docs/metrics.md).
        *([metrics_http.metrics_route(metrics)] if metrics_route and metrics_port is None else []),
    ]
    routes += web_routes(Path(web_dir)) if web_dir else []
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = NotStarted()
    app.state.limits = limits
    app.state.ledger = ledger
    app.state.shutdown = shutdown
    app.state.metrics = metrics
    return app


def uvicorn_options(limits: Limits | None = None) -> dict:
    """What uvicorn needs to serve the bridge within ``limits``: the HTTP
    header deadline, frames up to our own limit (so that *we* answer a
    larger one with close 1009 and a log line: uvicorn would close
    silently), and pings that find dead peers."""
    limits = limits or Limits()
    return {
        "http": header_timeout_protocol(limits.header_timeout),
        "ws_max_size": limits.max_frame_bytes * 2 + 1024,
        "ws_ping_interval": 20,
        "ws_ping_timeout": 20,
    }


class NotStarted:
    """``app.state.hub`` before the lifespan ran: every use says what to do."""

    def __getattr__(self, name: str):
        raise RuntimeError(
            "the bridge has not started: its hub exists once the app's lifespan runs "
            "(serve it with uvicorn, or hand bridge_app.router.lifespan_context to your app; see the README)"
        )
