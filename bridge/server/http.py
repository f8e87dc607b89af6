"""HTTP routes on documents: JSON view, binary save, durable check, POST changes.

``POST /docs/{id}/changes`` is also the target of a browser's
``navigator.sendBeacon`` on ``pagehide``: the last resort for edits that did
not make it over the WebSocket. It answers only once they are durable.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import WRITE, Authenticate, AuthRequest, Principal, authenticate as run_authenticate, bearer_token, quota_key
from ..config import Limits
from ..hub import DocNotFound, DocUnavailable, Hub
from ..errors import HTTP_STATUS, ErrorCode, FlushTimeout, QuotaExceeded
from ..local import LocalDoc, open_local
from ..protocol.httpsync import CONTENT_TYPE, SyncAnswer, SyncRequest
from ..protocol.native import valid_doc_id
from ..values import heads_hex, to_json

Handler = Callable[[Request, str, Hub], Awaitable[Response]]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "msg": message}, status_code=status)


async def http_principal(request: Request, authenticate: Authenticate | None, peer: str = "http") -> Principal | None:
    """Who an HTTP request is: the same ``authenticate`` hook as WebSocket
    peers (``peer`` names the route family); the token comes as ``?token=``
    (what a beacon can carry) or a Bearer header. None: refused."""
    auth_request = AuthRequest.from_connection(request, peer=peer, token=bearer_token(request), transport="http")
    return await run_authenticate(authenticate, auth_request)


def doc_routes(get_hub: Callable[[], Hub], limits: Limits, authenticate: Authenticate | None) -> list[Route]:
    def doc_route(handler: Handler, *, writes: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``writes``: the route changes the document (or creates it), so the
        principal must be allowed to write it; every route needs read."""

        async def endpoint(request: Request) -> Response:
            principal = await http_principal(request, authenticate)
            if principal is None:
                return error(401, "unauthorized", "missing, bad or expired token")
            request.state.principal = principal
            doc_id = request.path_params["doc_id"]
            if not valid_doc_id(doc_id):
                return error(400, "bad_doc_id", "document ids are 1-256 chars of [A-Za-z0-9._:~-]")
            access = principal.access(doc_id)
            if access is None:
                return error(403, ErrorCode.FORBIDDEN, "you may not read this document")
            if writes and access != WRITE:
                return error(403, ErrorCode.READ_ONLY, "you may read this document, not write it: nothing was merged")
            try:
                return await handler(request, doc_id, get_hub())
            except QuotaExceeded as exc:
                return error(HTTP_STATUS[exc.code], exc.code, str(exc))
            except DocUnavailable:
                return error(503, "unavailable", "the document's stored state cannot be loaded; an operator has been told")

        return endpoint

    async def get_doc(request: Request, doc_id: str, hub: Hub) -> Response:
        try:
            async with open_local(hub, doc_id, peer="http", create=False) as doc:
                if request.query_params.get("format") == "automerge":
                    return Response(doc.save(), media_type="application/octet-stream")
                return Response(to_json(doc.to_py()), media_type="application/json")
        except DocNotFound:
            return error(404, "not_found", "no such document")

    async def get_durable(request: Request, doc_id: str, hub: Hub) -> Response:
        """``?heads=hex,hex``: are these heads durable here? Plus the durable heads."""
        try:
            wanted = [bytes.fromhex(h) for h in request.query_params.get("heads", "").split(",") if h]
        except ValueError:
            return error(400, "bad_heads", "heads are comma-separated hex hashes")
        try:
            async with open_local(hub, doc_id, peer="http", create=False) as doc:
                return JSONResponse({"durable": doc.is_durable(wanted), "heads": heads_hex(doc.durable_heads)})
        except DocNotFound:
            return JSONResponse({"durable": not wanted, "heads": []})

    async def post_changes(request: Request, doc_id: str, hub: Hub) -> Response:
        body = await _read_body(request, limits.max_frame_bytes)
        if body is None:
            return error(413, "too_big", f"body exceeds {limits.max_frame_bytes} bytes")
        if not body:
            return error(400, "bad_changes", "empty body; send Automerge bytes")
        address = request.client.host if request.client else None
        creator = quota_key(request.state.principal, address, identity_verified=authenticate is not None)
        async with open_local(hub, doc_id, peer=_http_peer(request.state.principal), creator=creator) as doc:
            refused = await _merge_durably(doc, body, limits.flush_timeout)
            return refused or JSONResponse({"heads": heads_hex(doc.durable_heads)})

    async def post_sync(request: Request, doc_id: str, hub: Hub) -> Response:
        """Stateless sync (bridge/protocol/httpsync.py): merge the client's
        changes, answer once they are committed, with what it lacks."""
        body = await _read_body(request, limits.max_frame_bytes)
        if body is None:
            return error(413, "too_big", f"body exceeds {limits.max_frame_bytes} bytes")
        try:
            sync = msgspec.msgpack.decode(body, type=SyncRequest)
        except msgspec.MsgspecError as exc:
            return error(400, "bad_request", f"not a sync request: {exc}"[:300])
        principal = request.state.principal
        if sync.changes and principal.access(doc_id) != WRITE:
            return error(403, ErrorCode.READ_ONLY, "you may read this document, not write it: nothing was merged")
        address = request.client.host if request.client else None
        creator = quota_key(principal, address, identity_verified=authenticate is not None)
        try:
            async with open_local(hub, doc_id, peer=_http_peer(principal), create=bool(sync.changes),
                                  creator=creator) as doc:
                if sync.changes:
                    refused = await _merge_durably(doc, sync.changes, limits.flush_timeout)
                    if refused is not None:
                        return refused
                live = doc.live
                # Heads the server does not hold (another document's, made up)
                # say nothing about what the client has: send it everything.
                have = [h for h in sync.have if h in live.index.hashes]
                if len(have) != len(sync.have):
                    have = []
                lacking = b"".join(change.bytes for change in live.doc.get_changes(have))
                answer = SyncAnswer(changes=lacking, heads=doc.heads, durable=doc.durable_heads)
        except DocNotFound:
            return error(404, "not_found", "no such document; send changes to create it")
        return Response(msgspec.msgpack.encode(answer), media_type=CONTENT_TYPE)

    return [
        Route("/docs/{doc_id}", doc_route(get_doc)),
        Route("/docs/{doc_id}/sync", doc_route(post_sync), methods=["POST"]),
        Route("/docs/{doc_id}/changes", doc_route(post_changes, writes=True), methods=["POST"]),
        Route("/docs/{doc_id}/durable", doc_route(get_durable)),
    ]


async def _merge_durably(doc: LocalDoc, data: bytes, flush_timeout: float) -> JSONResponse | None:
    """Merge ``data`` (checked like a peer's) and wait until what it carried
    is committed: None then, else the error answer."""
    try:
        carried = doc.merge(data)
    except QuotaExceeded as exc:
        return error(HTTP_STATUS[exc.code], exc.code, str(exc))
    except ValueError as exc:
        return error(400, "bad_changes", str(exc))
    try:
        await doc.flush(flush_timeout, heads=carried)
    except FlushTimeout as exc:
        return error(503, exc.code, str(exc))
    return None


def _http_peer(principal: Principal) -> str:
    """The name an HTTP request's changes go by (the commit hooks' `origin`)."""
    identity = principal.identity
    return "http" if identity in (None, "http") else f"http:{identity}"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
