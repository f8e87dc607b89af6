"""One error tree with codes, shared by the server, the clients and HTTP.

Every failure that crosses a boundary has a *code*: the string in an
``error`` frame, the ``error`` field of an HTTP JSON answer, and the
``code`` attribute of the exception a Python caller catches. Close codes are
the WebSocket side of the same vocabulary.

- :class:`BridgeError` is the root: ``except BridgeError`` catches everything
  the bridge or a client raises on purpose.
- :class:`ProtocolError`: a fatal violation of the wire protocol (the
  connection closes with ``close_code``).
- :class:`DocError`: a non-fatal, document- or request-scoped refusal (one
  ``error`` frame); :meth:`DocError.of` picks the subclass for a code, so
  ``except Forbidden`` works the same whether the refusal came from a remote
  server or from the in-process API.
- :class:`FlushTimeout`: not durable in time. The same type on every path
  (``BridgeClient``, ``LocalDoc``, the pytest plugin); it is a
  ``TimeoutError`` too.
- :class:`ConnectionRejected` / :class:`ConnectionClosed`: a client gave up
  for good (HTTP error on the upgrade, or a fatal close code).
"""

from __future__ import annotations


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001  # reconnect
    TOO_BIG = 1009
    INTERNAL = 1011  # a bug in the bridge, never a peer's fault
    PROTOCOL = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    HANDSHAKE_TIMEOUT = 4408
    TOO_SLOW = 4409  # reconnect and resync
    RATE_LIMITED = 4429  # reconnect after the delay in the reason

    # What a client must not retry: the same connection would fail the same way.
    FATAL = frozenset({PROTOCOL, UNAUTHORIZED, FORBIDDEN, TOO_BIG})


class ErrorCode:
    """Codes carried by non-fatal ``error`` frames and HTTP error answers."""

    BAD_DOC_ID = "bad_doc_id"
    NOT_OPEN = "not_open"
    BAD_SYNC = "bad_sync"
    FLUSH_TIMEOUT = "flush_timeout"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    READ_ONLY = "read_only"
    TOO_MANY_DOCS = "too_many_docs"
    QUOTA = "quota"
    UNAVAILABLE = "unavailable"  # stored state does not load; reported to the operator


# HTTP status for each code, for the HTTP routes.
HTTP_STATUS = {
    ErrorCode.BAD_DOC_ID: 400,
    ErrorCode.BAD_SYNC: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.READ_ONLY: 403,
    ErrorCode.QUOTA: 429,
    ErrorCode.FLUSH_TIMEOUT: 503,
    ErrorCode.UNAVAILABLE: 503,
}


class BridgeError(Exception):
    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ProtocolError(BridgeError):
    """A fatal protocol violation: the connection closes with ``close_code``."""

    code = "protocol"

    def __init__(self, message: str, close_code: int = CloseCode.PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


class DocError(BridgeError):
    """A refusal scoped to one document or request; the connection stays up."""

    _by_code: dict[str, type["DocError"]] = {}

    def __init__(self, message: str = "", *, code: str | None = None, doc: str | None = None, request: int | None = None) -> None:
        super().__init__(message, code=code)
        self.doc = doc
        self.request = request

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            DocError._by_code[cls.code] = cls

    @classmethod
    def of(cls, code: str, message: str, doc: str | None = None, request: int | None = None) -> "DocError":
        """The exception for an ``error`` frame: the subclass for ``code``, or
        a plain DocError carrying an unknown code (forward compatible)."""
        kind = cls._by_code.get(code, DocError)
        return kind(message, code=code, doc=doc, request=request)


class BadDocId(DocError):
    code = ErrorCode.BAD_DOC_ID


class NotOpen(DocError):
    code = ErrorCode.NOT_OPEN


class BadSync(DocError):
    code = ErrorCode.BAD_SYNC


class NotFound(DocError):
    code = ErrorCode.NOT_FOUND


class Forbidden(DocError):
    code = ErrorCode.FORBIDDEN


class ReadOnly(DocError):
    code = ErrorCode.READ_ONLY


class TooManyDocs(DocError):
    code = ErrorCode.TOO_MANY_DOCS


class QuotaExceeded(DocError):
    code = ErrorCode.QUOTA


class Unavailable(DocError):
    code = ErrorCode.UNAVAILABLE


class FlushTimeout(DocError, TimeoutError):
    """Not durable within the time allowed, on every path."""

    code = ErrorCode.FLUSH_TIMEOUT


class ConnectionRejected(BridgeError):
    """The server answered the WebSocket upgrade with a final HTTP error
    (wrong path, 403, 404...): retrying would get the same answer."""

    code = "rejected"

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"the server refused the WebSocket upgrade with HTTP {status}")
        self.status = status

    @staticmethod
    def is_final(status: int) -> bool:
        """Every 3xx and 4xx answer to the upgrade is final, except 408 and
        429 (come back later); a 5xx is a server or proxy in trouble (a
        restart, a deploy: uvicorn answers 500 to an upgrade while it shuts
        down, a proxy 502): retried. The JS client has the same rule."""
        return 300 <= status < 500 and status not in (408, 429)


class ConnectionClosed(BridgeError):
    """The server closed the connection with a fatal close code."""

    code = "closed"

    def __init__(self, close_code: int, reason: str = "") -> None:
        super().__init__(f"closed by the server with {close_code}: {reason or 'no reason given'}")
        self.close_code = close_code
