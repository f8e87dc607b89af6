"""The demo page and client.js: an ETag and 304 on revalidation, gzip when
asked for, and a favicon instead of a 404."""

from __future__ import annotations

import gzip

import httpx
import pytest

from bridge.server.app import WEB_DIST, create_app
from bridge.testing import serve_in_thread

pytestmark = pytest.mark.skipif(not (WEB_DIST / "client.js").is_file(), reason="web/dist is not built")


def test_client_js_is_compressed_and_revalidated(tmp_path):
    with serve_in_thread(create_app(data_dir=tmp_path)) as bridge, httpx.Client(base_url=bridge.http_url) as http:
        plain = http.get("/client.js", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert plain.content == (WEB_DIST / "client.js").read_bytes()
        etag = plain.headers["etag"]
        assert plain.headers["cache-control"] == "no-cache" and "accept-encoding" in plain.headers["vary"].lower()

        raw = http.stream("GET", "/client.js", headers={"Accept-Encoding": "gzip"})
        with raw as answer:
            body = b"".join(answer.iter_raw())  # as sent, not decoded
            assert answer.headers["content-encoding"] == "gzip" and answer.headers["etag"] == etag
        assert gzip.decompress(body) == plain.content
        assert len(body) < len(plain.content) / 2

        again = http.get("/client.js", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert http.get("/client.js", headers={"If-None-Match": '"stale"'}).status_code == 200
        page = http.get("/")
        assert page.headers["content-type"].startswith("text/html") and page.headers["etag"] != etag


def test_the_favicon_is_there(tmp_path):
    with serve_in_thread(create_app(data_dir=tmp_path)) as bridge, httpx.Client(base_url=bridge.http_url) as http:
        for path in ("/favicon.svg", "/favicon.ico"):
            answer = http.get(path)
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"
            assert answer.content.startswith(b"<svg")
