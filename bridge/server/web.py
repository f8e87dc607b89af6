"""The demo page and the browser client, served well.

client.js is about 5 MB (the Automerge core is inside it). Each file is
read, hashed and gzip-compressed once, in a worker thread on first use (and
again when the file changes on disk), so no request pays for compression
and the event loop never does. Every answer carries:

- an ``ETag`` (a hash of the content) with ``Cache-Control: no-cache``. A
  browser revalidates on every load and gets a bodiless ``304`` while
  nothing changed, so a new build is picked up at once.
- gzip when the request accepts it (``Vary: Accept-Encoding``): client.js
  goes from 5.1 MB to 1.7 MB.

The favicon is a small inline SVG, served at /favicon.svg and /favicon.ico,
so no browser logs a 404 for it.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .http import error

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/client.js": ("client.js", "text/javascript; charset=utf-8"),
         "/demo.js": ("demo.js", "text/javascript; charset=utf-8")}

FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
           b'<rect width="32" height="32" rx="7" fill="#1d232b"/>'
           b'<circle cx="11" cy="16" r="5" fill="#1f9d55"/><circle cx="21" cy="16" r="5" fill="#3b6fd9" opacity=".9"/>'
           b'</svg>')


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str
    stamp: tuple[int, int]  # (mtime_ns, size) of the file it was read from


def _prepare(path: Path, media_type: str, stamp: tuple[int, int]) -> Asset:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, gzip.compress(body, compresslevel=6, mtime=0), f'"{digest}"', media_type, stamp)


class Assets:
    def __init__(self, web_dir: Path) -> None:
        self.web_dir = web_dir
        self._cache: dict[str, Asset] = {}

    async def get(self, name: str, media_type: str) -> Asset | None:
        path = self.web_dir / name
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(name)
        if cached is None or cached.stamp != stamp:
            cached = self._cache[name] = await anyio.to_thread.run_sync(_prepare, path, media_type, stamp)
        return cached


def respond(request: Request, asset: Asset) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def web_routes(web_dir: Path) -> list[Route]:
    """The demo page, the browser client and the favicon, when they have been built."""
    assets = Assets(web_dir)

    def serve(name: str, media_type: str):
        async def endpoint(request: Request) -> Response:
            asset = await assets.get(name, media_type)
            if asset is None:
                return error(404, "not_built", f"{name} is not built; run `npm ci && npm run build`")
            return respond(request, asset)

        return endpoint

    async def favicon(request: Request) -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return [Route(url, serve(name, media_type)) for url, (name, media_type) in FILES.items()] + [
        Route("/favicon.svg", favicon), Route("/favicon.ico", favicon)]
