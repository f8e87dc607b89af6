"""Log lines a peer cannot blow up.

Peers choose much of what the bridge logs about them (names, document ids,
the reasons their input was refused), and a flooding peer can make the same
warning happen thousands of times a second. Every bridge logger that may
speak about a peer comes from :func:`get_logger`, whose filter

- cuts each line to ``MAX_LINE`` characters (the formatted message, with
  its arguments; a traceback, which is the bridge's own, is left alone);
- lets each kind of line (logger and message template) through at
  ``LINES_PER_SECOND`` with a burst of ``BURST``, and counts the rest: the
  next line of that kind that gets through says how many were suppressed.

Errors go through the same filter: a store that fails on every commit must
not fill the disk either.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone

from .core.ratelimit import KeyedBuckets

MAX_LINE = 2000
LINES_PER_SECOND = 5.0
BURST = 50


class BoundedLines(logging.Filter):
    def __init__(self, *, max_line: int = MAX_LINE, rate: float = LINES_PER_SECOND, burst: int = BURST,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.max_line = max_line
        self._buckets = KeyedBuckets(rate, burst)
        self._suppressed: dict[str, int] = {}
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}\0{record.msg}"
        if not self._buckets.take(key, self._clock()):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        message = record.getMessage()
        if len(message) > self.max_line:
            message = f"{message[: self.max_line]}... ({len(message) - self.max_line} more characters)"
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" [{suppressed} similar lines suppressed]"
        record.msg, record.args = message, None
        return True


_FILTER = BoundedLines()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the shared :class:`BoundedLines` filter."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


# --- tokens never reach a log line ------------------------------------------------

# What a credential looks like in a line: a query parameter, a Bearer header,
# or a bare JWT (three base64url parts, the first a JSON header: "eyJ").
_SECRETS = re.compile(r"(?i)(token=|bearer\s+)[^\s&\"'#]+|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")


def redact(text: str) -> str:
    """``text`` with every token in it replaced by ``[redacted]``."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class RedactTokens(logging.Filter):
    """Strips tokens from a record's message and from each of its string
    arguments (uvicorn's access formatter reads its arguments by position,
    so they stay a tuple). Installed on every handler by
    :func:`redact_tokens_everywhere`, so lines from any logger — uvicorn's
    access log (``GET /docs/x?token=...``) and its WebSocket lines included —
    are covered."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


_REDACT = RedactTokens()


def redact_tokens_everywhere() -> None:
    """Add :class:`RedactTokens` to every handler of the root logger and of
    uvicorn's loggers (call it after logging is configured)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if _REDACT not in handler.filters:
                handler.addFilter(_REDACT)


# --- one format for every line: the bridge's and uvicorn's --------------------------

# Who a line is about. The WebSocket endpoint binds one per connection (its
# task and every task it starts see it); the session inside fills in the peer
# name and identity as the handshake learns them, so the fields are read
# when the line is written, not when the connection was bound.
_connection: ContextVar["ConnectionContext | None"] = ContextVar("bridge_log_connection", default=None)

FIELDS = ("session", "peer", "identity", "client", "doc")


@dataclass
class ConnectionContext:
    client: str | None = None
    # The PeerSession (anything with session_id, peer and principal).
    session: object | None = None

    def fields(self) -> dict[str, str]:
        found = {"client": self.client}
        if self.session is not None:
            found["session"] = getattr(self.session, "session_id", None)
            peer = getattr(self.session, "peer", None)
            found["peer"] = peer if peer != "?" else None  # "?": before its hello
            principal = getattr(self.session, "principal", None)
            found["identity"] = getattr(principal, "identity", None)
        return {k: v for k, v in found.items() if v}


def bind_connection(client: str | None) -> ConnectionContext:
    """Lines logged from now on in this task (and tasks it starts) carry
    ``client``, and the session once :attr:`ConnectionContext.session` is set."""
    context = ConnectionContext(client=client)
    _connection.set(context)
    return context


def doc_extra(doc_id: str | None) -> dict:
    """``extra=`` for a line about one document: its own field in JSON."""
    return {"doc": doc_id}


class ConnectionFields(logging.Filter):
    """Puts the connection's fields on every record (a field the call gave in
    ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _connection.get()
        found = context.fields() if context is not None else {}
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, found.get(name))
        return True


class QuietProbes(logging.Filter):
    """Keeps health checks and scrapes out of the access log: a load
    balancer's probe every few seconds would drown the lines that matter."""

    PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path with query, http version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            return args[2].split("?", 1)[0] not in self.PATHS
        return True


def _access_fields(record: logging.LogRecord) -> dict:
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, _version, status = args
        return {"client": client, "method": method, "path": path, "status": status}
    return {}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [session=... peer=... ...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={value}" for name in FIELDS if (value := getattr(record, name, None))]
        if not fields:
            return line
        head, newline, traceback = line.partition("\n")
        return f"{head} [{' '.join(fields)}]{newline}{traceback}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the connection's
    fields, an access line's method/path/status, and exc (a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        entry.update(_access_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


LOG_FORMATS = ("text", "json")


def logging_config(level: str = "info", fmt: str = "text", *, log_probes: bool = False) -> dict:
    """A ``logging.config.dictConfig`` for the bridge and uvicorn alike (hand
    it to uvicorn as ``log_config``: each ``--workers`` process applies it).
    Every line goes to stderr through one handler that strips tokens and
    adds the connection's fields; ``log_probes`` keeps /healthz, /readyz and
    /metrics in the access log."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    level = 5 if level.lower() == "trace" else level.upper()  # uvicorn's TRACE, registered or not
    access_filters = ["redact", "connection"] + ([] if log_probes else ["quiet_probes"])
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"}},
        "filters": {
            "redact": {"()": f"{__name__}.RedactTokens"},
            "connection": {"()": f"{__name__}.ConnectionFields"},
            "quiet_probes": {"()": f"{__name__}.QuietProbes"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "line",
                       "filters": ["redact", "connection"]},
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "line",
                       "filters": access_filters},
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},  # propagates to "uvicorn"
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }


def configure_logging(level: str = "info", fmt: str = "text", *, log_probes: bool = False) -> dict:
    """Apply :func:`logging_config` in this process; returns it (for uvicorn)."""
    config = logging_config(level, fmt, log_probes=log_probes)
    logging.config.dictConfig(config)
    return config
