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
from pathlib import Path
from typing import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .connection import Authenticate, Limits, PeerConnection
from .hub import DocNotFound, Hub
from .local import open_local
from .messages import PROTOCOL_VERSION, Hello, valid_doc_id
from .storage import Store, open_store
from .values import heads_hex, to_json

log = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def create_app(
    store: Store | str | None = None,
    *,
    data_dir: str | Path = "data",
    limits: Limits | None = None,
    authenticate: Authenticate | None = None,
    idle_unload_after: float = 30.0,
    compact_after: int = 1000,
    create_on_open: bool = True,
    web_dir: str | Path | None = WEB_DIST,
) -> Starlette:
    """Build the bridge.

    ``store`` is a :class:`~bridge.storage.Store`, a store URL (``memory:``,
    ``sqlite:///path``) or None for SQLite at ``data_dir/bridge.sqlite3``.
    """
    if store is None:
        store = f"sqlite:///{Path(data_dir) / 'bridge.sqlite3'}"
    if isinstance(store, str):
        store = open_store(store)
    limits = limits or Limits()
    server_peer = f"bridge-{secrets.token_hex(4)}"

    @contextlib.asynccontextmanager
    async def lifespan(parent: Starlette) -> AsyncIterator[None]:
        # ``parent`` is whichever app runs this lifespan: ours, or the app we
        # are mounted in. Handlers look the hub up on ours.
        await store.open()
        hub = Hub(store, idle_unload_after=idle_unload_after, compact_after=compact_after, create_on_open=create_on_open)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(hub.run)
                app.state.hub = parent.state.hub = hub
                try:
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        await hub.drain()
                    tg.cancel_scope.cancel()
        finally:
            await store.close()

    async def sync_endpoint(websocket: WebSocket) -> None:
        connection = PeerConnection(
            websocket, app.state.hub, server_peer=server_peer, limits=limits, authenticate=authenticate
        )
        await connection.serve()

    async def healthz(request: Request) -> Response:
        hub: Hub = app.state.hub
        return JSONResponse(
            {"status": "ok", "peer": server_peer, "loaded_docs": len(hub.loaded), "commits": hub.writer.commits}
        )

    async def get_doc(request: Request) -> Response:
        if not await authorized(request):
            return _error(401, "unauthorized", "missing or bad token")
        doc_id = request.path_params["doc_id"]
        if not valid_doc_id(doc_id):
            return _error(400, "bad_doc_id", "document ids are 1-256 chars of [A-Za-z0-9._:~-]")
        try:
            async with open_local(app.state.hub, doc_id, peer="http", create=False) as doc:
                live = doc._live
                if request.query_params.get("format") == "automerge":
                    return Response(live.doc.save(), media_type="application/octet-stream")
                return Response(to_json(live.doc), media_type="application/json")
        except DocNotFound:
            return _error(404, "not_found", "no such document")

    async def authorized(request: Request) -> bool:
        """HTTP gets the same ``authenticate`` as WebSocket peers; the token
        comes as ``?token=`` (what a beacon can carry) or a Bearer header."""
        if authenticate is None:
            return True
        token = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        if token is None and header.lower().startswith("bearer "):
            token = header[7:]
        verdict = authenticate(Hello(v=[PROTOCOL_VERSION], peer="http", token=token))
        return verdict if isinstance(verdict, bool) else await verdict

    async def get_durable(request: Request) -> Response:
        """``?heads=hex,hex``: are these heads durable here? Plus the durable heads."""
        if not await authorized(request):
            return _error(401, "unauthorized", "missing or bad token")
        doc_id = request.path_params["doc_id"]
        if not valid_doc_id(doc_id):
            return _error(400, "bad_doc_id", "document ids are 1-256 chars of [A-Za-z0-9._:~-]")
        try:
            wanted = [bytes.fromhex(h) for h in request.query_params.get("heads", "").split(",") if h]
        except ValueError:
            return _error(400, "bad_heads", "heads are comma-separated hex hashes")
        try:
            async with open_local(app.state.hub, doc_id, peer="http", create=False) as doc:
                live = doc._live
                return JSONResponse({"durable": live.is_durable(wanted), "heads": heads_hex(live.durable_heads)})
        except DocNotFound:
            return JSONResponse({"durable": not wanted, "heads": []})

    async def post_changes(request: Request) -> Response:
        if not await authorized(request):
            return _error(401, "unauthorized", "missing or bad token")
        doc_id = request.path_params["doc_id"]
        if not valid_doc_id(doc_id):
            return _error(400, "bad_doc_id", "document ids are 1-256 chars of [A-Za-z0-9._:~-]")
        body = await _read_body(request, limits.max_frame_bytes)
        if body is None:
            return _error(413, "too_big", f"body exceeds {limits.max_frame_bytes} bytes")
        if not body:
            return _error(400, "bad_changes", "empty body; send Automerge bytes")
        hub: Hub = app.state.hub
        async with open_local(hub, doc_id, peer="http") as doc:
            try:
                heads = hub.merge_bytes(doc._live, body)
            except ValueError as exc:
                return _error(400, "bad_changes", str(exc))
            with anyio.move_on_after(limits.flush_timeout):
                await doc._live.wait_durable(heads)
                return JSONResponse({"heads": heads_hex(doc._live.durable_heads)})
        return _error(503, "flush_timeout", f"not durable within {limits.flush_timeout}s")

    routes = [
        WebSocketRoute("/sync", sync_endpoint),
        Route("/healthz", healthz),
        Route("/docs/{doc_id}", get_doc),
        Route("/docs/{doc_id}/changes", post_changes, methods=["POST"]),
        Route("/docs/{doc_id}/durable", get_durable),
    ]
    routes += _web_routes(Path(web_dir)) if web_dir else []
    app = Starlette(routes=routes, lifespan=lifespan)
    return app


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "msg": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _web_routes(web_dir: Path) -> list[Route]:
    """The demo page and the browser client, when they have been built."""
    files = {"/": "index.html", "/client.js": "client.js", "/demo.js": "demo.js"}

    def serve(name: str):
        async def endpoint(request: Request) -> Response:
            path = web_dir / name
            if not path.is_file():
                return _error(404, "not_built", f"{name} is not built; run `npm ci && npm run build`")
            return FileResponse(path)

        return endpoint

    return [Route(url, serve(name)) for url, name in files.items()]
