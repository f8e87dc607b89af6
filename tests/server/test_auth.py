"""Authentication returns a principal; bool hooks of the first version still work."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from bridge.auth import AuthRequest, Principal, authenticate, bearer_token
from bridge.protocol.native import Hello

pytestmark = pytest.mark.anyio


def http_request(query: bytes = b"", headers: list[tuple[bytes, bytes]] = ()) -> Request:
    scope = {
        "type": "http", "method": "GET", "path": "/docs/x", "query_string": query,
        "headers": list(headers), "client": ("10.0.0.7", 5555), "server": ("test", 80), "scheme": "http",
    }
    return Request(scope)


async def test_no_hook_is_the_default_principal_named_after_the_peer():
    principal = await authenticate(None, AuthRequest(peer="ada", token=None))
    assert principal == Principal("ada") and principal.may_read("any") and principal.may_write("any")


async def test_bool_hooks_keep_working():
    hook = lambda hello: hello.token == "sesame"  # noqa: E731  (the README's shape)
    assert await authenticate(hook, AuthRequest.from_hello(Hello(v=[1], peer="p", token="sesame"))) == Principal("p")
    assert await authenticate(hook, AuthRequest.from_hello(Hello(v=[1], peer="p", token="wrong"))) is None


async def test_async_hooks_return_a_principal_or_none():
    class ReadOnly(Principal):
        def may_write(self, doc_id: str) -> bool:
            return False

    async def hook(request: AuthRequest) -> Principal | None:
        if request.cookies.get("session") == "abc" and request.client == ("10.0.0.7", 5555):
            return ReadOnly("cookie-user")
        return None

    request = http_request(headers=[(b"cookie", b"session=abc")])
    principal = await authenticate(hook, AuthRequest.from_connection(request, peer="http", token=None, transport="http"))
    assert principal == ReadOnly("cookie-user") and principal.may_read("d") and not principal.may_write("d")
    assert await authenticate(hook, AuthRequest(peer="x", token=None)) is None


async def test_a_hook_returning_nonsense_is_a_bug():
    with pytest.raises(TypeError):
        await authenticate(lambda request: "yes", AuthRequest(peer="x", token=None))


def test_the_request_carries_headers_cookies_query_and_client():
    request = http_request(b"token=q&x=1", [(b"authorization", b"Bearer h"), (b"x-tenant", b"acme")])
    auth = AuthRequest.from_connection(request, peer="http", token=bearer_token(request), transport="http")
    assert auth.token == "q", "?token= first: what a beacon can carry"
    assert auth.headers["x-tenant"] == "acme" and auth.query_params["x"] == "1" and auth.client == ("10.0.0.7", 5555)
    assert bearer_token(http_request(headers=[(b"authorization", b"Bearer h")])) == "h"
    assert auth.v == [1] and auth.caps == [] and auth.hello is None


async def test_the_websocket_hook_sees_the_upgrade_request_and_none_closes_4401(tmp_path):
    import websockets

    from bridge import create_app
    from bridge.testing import serve_in_task

    from ..rawpeer import RawPeer

    seen: list[AuthRequest] = []

    async def hook(request: AuthRequest) -> Principal | None:
        seen.append(request)
        return Principal(f"tenant-{request.query_params['tenant']}") if request.token == "sesame" else None

    app = create_app(store="memory:", web_dir=None, authenticate=hook)
    async with serve_in_task(app) as running:
        ws = await websockets.connect(f"{running.ws_url}?tenant=acme", additional_headers={"X-Trace": "t1"})
        peer = RawPeer(ws)
        await peer.send({"t": "hello", "v": [1], "peer": "p", "token": "sesame"})
        assert (await peer.recv())["t"] == "welcome"
        await peer.send({"t": "bye"})
        assert await peer.closed_with() == 1000
        assert seen[0].peer == "p" and seen[0].headers["x-trace"] == "t1" and seen[0].transport == "websocket"
        assert seen[0].client is not None and seen[0].hello is not None

        peer = await RawPeer.connect(f"{running.ws_url}?tenant=acme", hello=False)
        await peer.send({"t": "hello", "v": [1], "peer": "p", "token": "wrong"})
        assert await peer.closed_with() == 4401
