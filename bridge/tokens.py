"""Token auth, built in: JWTs that say who a peer is and which documents it
may read or write.

An application's backend mints a token with any JWT library (or
:func:`mint`, or ``automerge-bridge token``) and hands it to its frontend;
the bridge checks it with :class:`TokenAuth`, an ordinary authenticate hook
(:mod:`bridge.auth`). Claims::

    {"sub": "alice", "exp": 1790000000,
     "docs": {"invoice-*": "write", "catalog": "read"}, "admin": false}

- ``sub``: the identity (what ``eph`` frames are relayed ``from``, what
  quotas charge);
- ``exp``: expiry, required unless ``TokenAuth(require_exp=False)``; a
  connection closes with 4401 when its token expires, unless the client sent
  a fresh one (``auth`` frame);
- ``docs``: document-id glob patterns to ``"read"`` or ``"write"``
  (:class:`~bridge.auth.ScopedPrincipal` says how they combine);
- ``admin``: optional, opens the admin routes.

Keys: HS256 with a shared secret (``secret=``), or tokens signed elsewhere
with EdDSA, ES256 or RS256, checked with the matching public key in PEM
(``public_key=``). The algorithm is fixed by the key the bridge holds, never
taken from the token's header (no ``alg: none``, no HS256 signed with a
public key).

Where the token comes from: the ``hello`` frame's ``token``, else the
request (the WebSocket upgrade, or an HTTP call): ``Authorization: Bearer``,
then ``?token=``, then the cookie named ``cookie=`` (a browser cannot set
headers on a WebSocket). Tokens are never logged: :mod:`bridge.logs` strips
``token=`` from every log line, uvicorn's access log included.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Mapping

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, ed448, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .auth import READ, WRITE, AuthRequest, ScopedPrincipal
from .logs import get_logger

__all__ = ["TokenAuth", "TokenRefused", "mint"]

log = get_logger(__name__)

HS256 = "HS256"
# A token is a credential, not a document: anything this long is not one of ours.
MAX_TOKEN_CHARS = 16 * 1024
MAX_PATTERNS = 1000
MIN_SECRET = 32  # RFC 7518: an HS256 key at least as long as the hash


class TokenRefused(ValueError):
    """The token is missing, malformed, badly signed, expired, or its claims
    are not what the bridge needs. The message says which (never the token)."""


def algorithm_for(key) -> str:
    """The JWT algorithm for a public key: EdDSA, ES256 or RS256."""
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"ES256 needs a P-256 key, this one is {key.curve.name}")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    raise ValueError(f"unsupported public key type {type(key).__name__}: use Ed25519, P-256 or RSA")


class TokenAuth:
    """An authenticate hook that accepts the bridge's JWTs.

    ``TokenAuth(secret="...")`` for HS256, or ``TokenAuth(public_key=pem)``
    for EdDSA / ES256 / RS256 (the key's type picks the algorithm).
    ``leeway``: seconds of clock skew between the token's issuer and the
    bridge tolerated on ``exp`` and ``nbf`` (a connection then lasts until
    ``exp + leeway`` too).
    ``audience`` / ``issuer``: checked when given."""

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        require_exp: bool = True,
        cookie: str | None = "bridge_token",
        leeway: float = 0.0,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise ValueError("TokenAuth needs exactly one of secret= (HS256) or public_key= (EdDSA/ES256/RS256)")
        if secret is not None:
            if len(secret) < MIN_SECRET:
                # Anyone holding one token can guess a short secret offline.
                raise ValueError(f"an HS256 secret must be at least {MIN_SECRET} characters "
                                 "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
            self._key, self.algorithm = secret, HS256
        else:
            key = load_pem_public_key(public_key.encode() if isinstance(public_key, str) else public_key)
            self._key, self.algorithm = key, algorithm_for(key)
        self.require_exp = require_exp
        self.cookie = cookie
        self.leeway = leeway
        self.audience = audience
        self.issuer = issuer

    def __repr__(self) -> str:  # never the secret
        return f"TokenAuth(algorithm={self.algorithm!r}, require_exp={self.require_exp})"

    # --- the hook ---------------------------------------------------------------

    def __call__(self, request: AuthRequest) -> ScopedPrincipal | None:
        token = self.token_of(request)
        try:
            return self.verify(token)
        except TokenRefused as exc:
            address = request.client[0] if request.client else "?"
            log.info("refused a %s peer from %s: %s", request.transport, address, exc)
            return None

    def token_of(self, request: AuthRequest) -> str | None:
        """The request's token: the ``hello``'s (or an ``auth`` frame's), then
        a Bearer header, ``?token=``, the cookie."""
        if request.token:
            return request.token
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        if request.query_params.get("token"):
            return request.query_params["token"]
        if self.cookie and request.cookies.get(self.cookie):
            return request.cookies[self.cookie]
        return None

    def verify(self, token: str | None) -> ScopedPrincipal:
        """The principal ``token`` stands for; raises :class:`TokenRefused`."""
        if not token:
            raise TokenRefused("no token")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused(f"token longer than {MAX_TOKEN_CHARS} characters")
        required = ["sub", "exp"] if self.require_exp else ["sub"]
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                leeway=self.leeway,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(f"invalid token: {type(exc).__name__}") from None
        return principal_of(claims, self.leeway)


def principal_of(claims: Mapping, leeway: float = 0.0) -> ScopedPrincipal:
    """The principal a token's (verified) claims describe; raises TokenRefused."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise TokenRefused("claim sub must be a non-empty string of at most 256 characters")
    docs = claims.get("docs", {})
    if not isinstance(docs, dict) or len(docs) > MAX_PATTERNS:
        raise TokenRefused(f"claim docs must be an object of at most {MAX_PATTERNS} patterns")
    scopes = []
    for pattern, level in docs.items():
        if not isinstance(pattern, str) or not pattern or len(pattern) > 256 or level not in (READ, WRITE):
            raise TokenRefused('claim docs maps document-id patterns to "read" or "write"')
        scopes.append((pattern, level))
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise TokenRefused("claim admin must be true or false")
    exp = claims.get("exp")
    expires_at = float(exp) + leeway if exp is not None else None
    return ScopedPrincipal(sub, expires_at=expires_at, docs=tuple(scopes), admin=admin)


def mint(
    secret: str | bytes,
    *,
    sub: str,
    read: Iterable[str] = (),
    write: Iterable[str] = (),
    ttl: float | None = 3600,
    admin: bool = False,
    algorithm: str = HS256,
    now: float | None = None,
) -> str:
    """A token for ``sub``: ``read`` and ``write`` are document-id patterns;
    ``ttl`` seconds from now (None: no ``exp``, for servers started with
    ``require_exp=False``). With ``algorithm`` other than HS256, ``secret`` is
    the PEM private key."""
    if algorithm == HS256 and len(secret) < MIN_SECRET:
        raise ValueError(f"an HS256 secret must be at least {MIN_SECRET} characters")
    now = time.time() if now is None else now
    docs = {pattern: READ for pattern in read}
    docs.update({pattern: WRITE for pattern in write})
    claims: dict = {"sub": sub, "iat": int(now), "docs": docs}
    if ttl is not None:
        claims["exp"] = math.ceil(now + ttl)
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=algorithm)
