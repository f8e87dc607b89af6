"""Who is on the other end: authentication returns an identity, not a bool.

An :data:`Authenticate` hook receives an :class:`AuthRequest` — the peer name
and token of the ``hello`` (or of an HTTP request: ``?token=`` or a Bearer
header) plus the HTTP request itself: headers, cookies, query parameters and
the client's address — and returns a :class:`Principal`, or None to refuse
(WebSocket close 4401, HTTP 401). It may be a coroutine function.

Hooks written for the first version returned a bool and read ``hello.token``
and ``hello.peer``: they keep working. An ``AuthRequest`` has the same
``peer`` and ``token`` attributes, True becomes the default principal named
after the peer, and False refuses.

The principal is stored with the connection, and every path checks it before
it touches a document: ``may_read`` to open or GET one (else ``forbidden`` /
403), ``may_write`` to create one or to have changes applied (else
``read_only`` / 403: nothing reaches the shared document). ``expires_at``
(epoch seconds) closes the connection with 4401 then, unless an ``auth``
frame brought a fresh token. The default principal (no hook) may do
everything; :class:`ScopedPrincipal` is what a token grants
(:mod:`bridge.tokens`), and a hook may return its own subclass.
"""

from __future__ import annotations

import inspect
from fnmatch import fnmatchcase
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Union

from starlette.requests import HTTPConnection

from .protocol.native import PROTOCOL_VERSION, Hello

__all__ = [
    "AuthRequest", "Authenticate", "AuthVerdict", "Principal", "ScopedPrincipal", "authenticate", "bearer_token",
    "quota_key",
]


READ, WRITE = "read", "write"


@dataclass(frozen=True)
class Principal:
    """An authenticated identity. Subclass it to restrict documents."""

    identity: str
    expires_at: float | None = None  # epoch seconds; None: never

    def may_read(self, doc_id: str) -> bool:
        return True

    def may_write(self, doc_id: str) -> bool:
        return True

    def may_administer(self) -> bool:
        """The admin routes (listing, deleting documents). Without auth,
        whoever reaches the bridge runs it."""
        return True

    def access(self, doc_id: str) -> str | None:
        """``"write"``, ``"read"`` or None (may not read it)."""
        if self.may_write(doc_id):
            return WRITE
        return READ if self.may_read(doc_id) else None


@dataclass(frozen=True)
class ScopedPrincipal(Principal):
    """What a token grants: ``docs`` pairs document-id glob patterns
    (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[...]``) with ``"read"`` or
    ``"write"``; ``admin`` opens the admin routes.

    Grants add up: a document any ``write`` pattern matches is writable, one
    only ``read`` patterns match is read-only, one no pattern matches is
    forbidden. There is no deny: a token says what its holder may do."""

    docs: tuple[tuple[str, str], ...] = ()
    admin: bool = False

    def may_read(self, doc_id: str) -> bool:
        return any(fnmatchcase(doc_id, pattern) for pattern, _ in self.docs)

    def may_write(self, doc_id: str) -> bool:
        return any(level == WRITE and fnmatchcase(doc_id, pattern) for pattern, level in self.docs)

    def may_administer(self) -> bool:
        return self.admin


@dataclass(frozen=True)
class AuthRequest:
    """What a hook may judge a peer by."""

    peer: str
    token: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    query_params: Mapping[str, str] = field(default_factory=dict)
    client: tuple[str, int] | None = None  # (host, port) of the immediate client
    transport: str = "websocket"  # or "http"
    hello: Hello | None = None  # the WebSocket handshake frame; None over HTTP

    @classmethod
    def from_connection(
        cls, connection: HTTPConnection, *, peer: str, token: str | None, transport: str, hello: Hello | None = None
    ) -> "AuthRequest":
        """From Starlette's ``WebSocket`` (its upgrade request) or ``Request``."""
        client = (connection.client.host, connection.client.port) if connection.client else None
        return cls(
            peer=peer,
            token=token,
            headers=connection.headers,
            cookies=connection.cookies,
            query_params=connection.query_params,
            client=client,
            transport=transport,
            hello=hello,
        )

    @classmethod
    def from_hello(cls, hello: Hello, connection: HTTPConnection | None = None) -> "AuthRequest":
        if connection is None:
            return cls(peer=hello.peer, token=hello.token, hello=hello)
        return cls.from_connection(connection, peer=hello.peer, token=hello.token, transport="websocket", hello=hello)

    # What a hook written against ``Hello`` may also read.
    @property
    def v(self) -> list[int]:
        return list(self.hello.v) if self.hello is not None else [PROTOCOL_VERSION]

    @property
    def caps(self) -> list[str]:
        return list(self.hello.caps) if self.hello is not None else []


AuthVerdict = Union[Principal, None, bool]
Authenticate = Callable[[AuthRequest], Union[AuthVerdict, Awaitable[AuthVerdict]]]


async def authenticate(hook: Authenticate | None, request: AuthRequest) -> Principal | None:
    """Run ``hook`` (sync or async) and turn its verdict into a principal or None.

    No hook: everyone is the default principal named after their peer.
    """
    if hook is None:
        return Principal(request.peer)
    verdict = hook(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is True:
        return Principal(request.peer)
    if verdict is False or verdict is None:
        return None
    if isinstance(verdict, Principal):
        return verdict
    raise TypeError(f"authenticate returned {type(verdict).__name__}; expected a Principal, None or a bool")


def bearer_token(connection: HTTPConnection) -> str | None:
    """``?token=`` (what a beacon can carry), else an ``Authorization: Bearer`` header."""
    token = connection.query_params.get("token")
    header = connection.headers.get("authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:]
    return token


def quota_key(principal: Principal | None, address: str | None, identity_verified: bool) -> str:
    """Who per-client quotas charge: the principal when an auth hook vouches
    for its identity, else the client's address (a peer name is only a claim)."""
    if identity_verified and principal is not None:
        return f"principal:{principal.identity}"
    return f"address:{address or '?'}"
