"""Admin HTTP routes: what an operator does to documents by hand.

    GET    /admin/docs?after=ID&limit=N   stored documents, in id order, a page at a time
    GET    /admin/docs/{id}               one document: size, last change, durable heads
    POST   /admin/docs/{id}/compact       compact it now (snapshot, retire covered rows)
    DELETE /admin/docs/{id}               delete it: its peers get `error not_found`

With auth on, only a principal that may administer (a token with the
``admin`` claim) gets in; others get 403, and no token gets 401. Without
auth, whoever reaches the bridge runs it, as for every other route: listen
on 127.0.0.1 or put the bridge behind something that authenticates.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Authenticate
from ..hub import DocNotFound, DocUnavailable, Hub
from ..local import open_local
from ..protocol.native import valid_doc_id
from ..storage import DocInfo
from ..values import heads_hex
from .http import error, http_principal

MAX_PAGE = 1000  # documents per listing page
DEFAULT_PAGE = 100


def _info(info: DocInfo, hub: Hub) -> dict:
    live = hub.loaded.get(info.doc_id)
    return {"id": info.doc_id, "size": info.size, "changed_at": info.changed_at,
            "loaded": live is not None, "peers": len(live.subscribers) if live is not None else 0}


def admin_routes(get_hub: Callable[[], Hub], authenticate: Authenticate | None) -> list[Route]:
    def admin_route(handler: Callable[[Request, Hub], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            principal = await http_principal(request, authenticate, peer="admin")
            if principal is None:
                return error(401, "unauthorized", "missing, bad or expired token")
            if not principal.may_administer():
                return error(403, "forbidden", "the admin routes need a token with the admin claim")
            doc_id = request.path_params.get("doc_id")
            if doc_id is not None and not valid_doc_id(doc_id):
                return error(400, "bad_doc_id", "document ids are 1-256 chars of [A-Za-z0-9._:~-]")
            return await handler(request, get_hub())

        return endpoint

    async def list_docs(request: Request, hub: Hub) -> Response:
        after = request.query_params.get("after") or None
        try:
            limit = int(request.query_params.get("limit", DEFAULT_PAGE))
        except ValueError:
            return error(400, "bad_limit", "limit is a whole number")
        if not 1 <= limit <= MAX_PAGE:
            return error(400, "bad_limit", f"limit is 1 to {MAX_PAGE}")
        if after is not None and not valid_doc_id(after):
            return error(400, "bad_doc_id", "after is a document id")
        infos = await hub.store.doc_infos(after=after, limit=limit)
        # `next`: pass it as `after` for the following page; null on the last one.
        following = infos[-1].doc_id if len(infos) == limit else None
        return JSONResponse({"docs": [_info(i, hub) for i in infos], "next": following})

    async def get_doc(request: Request, hub: Hub) -> Response:
        doc_id = request.path_params["doc_id"]
        infos = await hub.store.doc_infos(only=doc_id)
        try:
            async with open_local(hub, doc_id, peer="admin", create=False) as doc:
                heads = heads_hex(doc.durable_heads)
        except DocNotFound:
            return error(404, "not_found", "no such document")
        except DocUnavailable:
            return error(503, "unavailable", "the document's stored state cannot be loaded; see the log")
        body = _info(infos[0], hub) if infos else {"id": doc_id, "size": 0, "changed_at": None}
        return JSONResponse({**body, "heads": heads})

    async def compact(request: Request, hub: Hub) -> Response:
        doc_id = request.path_params["doc_id"]
        try:
            async with open_local(hub, doc_id, peer="admin", create=False) as doc:
                await doc.flush()  # what is accepted goes into the snapshot as stored rows
                compacted = await hub.compact_now(doc_id)
        except DocNotFound:
            return error(404, "not_found", "no such document")
        except DocUnavailable:
            return error(503, "unavailable", "the document's stored state cannot be loaded; see the log")
        [info] = await hub.store.doc_infos(only=doc_id) or [None]
        return JSONResponse({"compacted": compacted, "size": info.size if info else 0})

    async def delete(request: Request, hub: Hub) -> Response:
        doc_id = request.path_params["doc_id"]
        try:
            existed = await hub.delete(doc_id)
        except NotImplementedError as exc:
            return error(409, "not_supported", str(exc))
        except TimeoutError:
            return error(503, "unavailable", "the store did not confirm the deletion in time; try again")
        if not existed:
            return error(404, "not_found", "no such document")
        return JSONResponse({"deleted": doc_id})

    return [
        Route("/admin/docs", admin_route(list_docs)),
        Route("/admin/docs/{doc_id}", admin_route(get_doc), methods=["GET"]),
        Route("/admin/docs/{doc_id}", admin_route(delete), methods=["DELETE"]),
        Route("/admin/docs/{doc_id}/compact", admin_route(compact), methods=["POST"]),
    ]
