"""`automerge-bridge serve`: run the bridge under uvicorn.

Every option of ``serve`` can also come from an environment variable,
``AUTOMERGE_BRIDGE_`` plus the flag's name in capitals (``--data-dir`` ->
``AUTOMERGE_BRIDGE_DATA_DIR``); a flag on the command line wins. Bad input
(a flag, a variable, a store URL, a data directory, a locked or damaged
database) ends in one line on stderr and exit status 2, before uvicorn starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import anyio

from .config import Limits, knobs
from .logs import LOG_FORMATS, configure_logging, logging_config, redact_tokens_everywhere
from .core.chunks import Bounds

PROG = "automerge-bridge"
ENV_PREFIX = "AUTOMERGE_BRIDGE_"
# Used when the package metadata is not there (running from a bare checkout).
FALLBACK_VERSION = "0.1.0"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

DESCRIPTION = (
    "A sync server for Automerge documents. It stores every accepted change in "
    "SQLite (fsync'd) before acknowledging it, relays it to the other peers of the "
    "document, and serves the demo page and the browser client at /."
)
SERVE_DESCRIPTION = (
    "Run the bridge: WebSocket sync at /sync, GET /healthz, Prometheus GET /metrics, HTTP routes under /docs/, "
    "the demo page at / and the browser client at /client.js."
)
ENV_EPILOG = (
    f"Every option can also be set with an environment variable: {ENV_PREFIX} plus the "
    f"option's name in capitals, dashes as underscores (--port: {ENV_PREFIX}PORT, "
    f"--data-dir: {ENV_PREFIX}DATA_DIR). An option given on the command line wins over "
    "its variable. Invalid input exits with status 2 and one line on stderr."
)
EPILOG = (
    f"Example: {PROG} serve --port 8080 --data-dir data, then open http://127.0.0.1:8080/. "
    f"Run '{PROG} serve --help' for the server's options."
)


def version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version("automerge-bridge")
    except PackageNotFoundError:
        return FALLBACK_VERSION


# --- values of flags and variables -------------------------------------------------


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("on", "off"):
        raise ValueError(text)
    return value == "on"


def _duration(text: str) -> float:
    """Seconds: ``3600``, ``90s``, ``15m``, ``1h``, ``7d``."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(value[-1:], None)
    seconds = float(value[:-1] if scale else value) * (scale or 1)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(text)
    return seconds


def _listen_address(text: str) -> tuple[str | None, int]:
    """``PORT`` or ``HOST:PORT`` (``[::1]:9100`` for IPv6); host None: --host's."""
    host, sep, port = text.strip().rpartition(":")
    number = _port(port)
    if sep and not host.strip("[]"):
        raise ValueError(text)
    return (host.strip("[]") if sep else None), number


def _log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(text)
    return value


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(text)
    return value


# argparse names the expected kind in its error message from the function's name.
_port.__name__ = "port number (0-65535)"
_positive_int.__name__ = "positive integer"
_positive_float.__name__ = "positive number"
_non_negative_float.__name__ = "number >= 0"
_on_off.__name__ = "on or off"
_duration.__name__ = "duration (3600, 90s, 15m, 1h, 7d)"
_listen_address.__name__ = "port number or HOST:PORT"
_log_level.__name__ = f"log level ({', '.join(LOG_LEVELS)})"
_log_format.__name__ = f"log format ({', '.join(LOG_FORMATS)})"


@dataclass(frozen=True)
class Option:
    flag: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def _limit_option(name: str, default: Any, help: str, unit: str) -> Option:
    """A flag for a field of Limits or Bounds: positive numbers, and ``off``
    for the limits that can be switched off (default None or declared so)."""
    convert = _positive_float if unit in ("SECONDS", "RATE", "FRACTION") else _positive_int
    switchable = name in SWITCHABLE
    if switchable:
        convert = _or_off(convert)
    return Option("--" + name.replace("_", "-"), convert, default, help + ("; off: no limit" if switchable else ""),
                  unit or None)


def _or_off(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.strip().lower() == "off" else convert(text)

    parse.__name__ = f"{convert.__name__} or off"
    return parse


# Limits that `off` switches off (their field type admits None).
SWITCHABLE = frozenset(
    name for name, field_type in Limits.__annotations__.items() if "None" in str(field_type)
)
def shown_default(option: Option) -> str:
    """A limit's default as the README's limits table writes it."""
    value, unit = option.default, option.metavar or ""
    if value is None:
        return "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if unit == "BYTES" and value % 1024 == 0:
        return f"{value // (1024 * 1024)} MiB" if value % (1024 * 1024) == 0 else f"{value // 1024} KiB"
    if unit == "SECONDS":
        return f"{value} s"
    return f"{value:,}" if value >= 10_000 else str(value)


LIMIT_OPTIONS = tuple(_limit_option(*knob) for knob in knobs(Limits))
BOUND_OPTIONS = tuple(_limit_option(*knob) for knob in knobs(Bounds))

# Token auth (bridge/tokens.py). Without one of the first three, everyone who
# reaches the bridge reads and writes every document.
AUTH_OPTIONS = (
    Option("--auth-secret", str, None, "turn on token auth: HS256 JWTs signed with this secret (at least 32 "
           "characters; prefer the variable or --auth-secret-file, a flag shows in ps)", "SECRET"),
    Option("--auth-secret-file", str, None, "turn on token auth with the HS256 secret in this file", "FILE"),
    Option("--auth-public-key", str, None, "turn on token auth: JWTs signed elsewhere (EdDSA, ES256 or RS256), "
           "checked with the PEM public key in this file", "FILE"),
    Option("--auth-cookie", str, "bridge_token", "cookie a browser's token may come in on the WebSocket upgrade",
           "NAME"),
    Option("--auth-require-exp", _on_off, True, "tokens must carry exp (off: tokens that never expire are "
           "accepted)", "on|off"),
    Option("--reader-presence", _on_off, True, "relay eph (presence) from read-only principals", "on|off"),
)

SERVE_OPTIONS = (
    Option("--host", str, "127.0.0.1", "interface to listen on (0.0.0.0 for every interface)"),
    Option("--port", _port, 8080, "TCP port to listen on; 0 picks a free one"),
    Option("--data-dir", str, "data", "directory of the SQLite database (DATA_DIR/bridge.sqlite3) and its lock file"),
    Option("--store", str, None, "store URL used instead of --data-dir: memory:, sqlite:///path/to/file, or "
           "postgresql://user@host/db (shared by several bridges; see --bus)", "URL"),
    Option("--bus", str, None, "join the bridges sharing a PostgreSQL --store: redis://host:6379/0 carries each "
           "commit to the others (docs/cluster.md)", "URL"),
    Option("--workers", _positive_int, 1, "bridge processes behind this one port (above 1: needs a PostgreSQL "
           "--store and a --bus)", "N"),
    Option("--heal-interval", _positive_float, 2.0, "with --bus: seconds between two looks at the store for "
           "commits the bus did not bring", "SECONDS"),
    Option("--ssl-certfile", str, None, "serve HTTPS and WSS with this PEM certificate (chain); usually TLS "
           "ends at a proxy instead (docs/operations.md)", "FILE"),
    Option("--ssl-keyfile", str, None, "the private key of --ssl-certfile", "FILE"),
    Option("--webhook", str, None, "POST each commit (document id, heads, origin) to this http(s) URL, signed "
           "with --webhook-secret; retried with backoff (docs/hooks.md)", "URL"),
    Option("--webhook-secret", str, None, "HMAC-SHA256 key of the webhook's X-Bridge-Signature (prefer the "
           "variable or --webhook-secret-file, a flag shows in ps)", "SECRET"),
    Option("--webhook-secret-file", str, None, "read the webhook's HMAC key from this file", "FILE"),
    Option("--shutdown-grace", _positive_float, 10.0, "on SIGTERM or SIGINT: seconds to commit what peers sent and "
           "close them with 1001 before exiting", "SECONDS"),
    Option("--idle-unload-after", _non_negative_float, 30.0,
           "seconds after its last peer left before a document is compacted and unloaded", "SECONDS"),
    Option("--forwarded-allow-ips", str, "127.0.0.1",
           "comma-separated proxy addresses trusted to set X-Forwarded-For (the client address the "
           "per-address limits count); * trusts every sender", "IPS"),
    Option("--log-level", _log_level, "info", f"one of {', '.join(LOG_LEVELS)}", "LEVEL"),
    Option("--log-format", _log_format, "text", "text (for people) or json (one object per line, for machines); "
           "the bridge's and uvicorn's lines alike", "text|json"),
    Option("--log-probes", _on_off, False, "access-log /healthz, /readyz and /metrics too", "on|off"),
    Option("--metrics-port", _listen_address, None, "serve Prometheus /metrics on this port instead of the main "
           "one (HOST:PORT: on that interface, else --host's); under --workers, summed over every worker",
           "[HOST:]PORT"),
    *AUTH_OPTIONS,
    *LIMIT_OPTIONS,
    *BOUND_OPTIONS,
)


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage block) and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except an absent one (None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = _Parser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the sync server",
        description=SERVE_DESCRIPTION,
        epilog=ENV_EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    for option in SERVE_OPTIONS:
        serve.add_argument(
            option.flag,
            type=option.convert,
            default=option.default,
            metavar=option.metavar,
            help=f"{option.help} [env: {option.env}]",
        )
    token = commands.add_parser(
        "token",
        help="print a token (JWT) for the bridge's token auth",
        description="Print a token for --auth-secret (HS256) or, with --private-key, one signed with a private "
        "key whose public half the bridge holds (--auth-public-key). For tests, demos and operators; an app's "
        "backend mints its own with any JWT library (see the README).",
        epilog=f"Example: {PROG} token --secret-file secret.txt --sub alice --write 'invoice-*' --read catalog "
        f"--ttl 1h. The secret may also come from {ENV_PREFIX}AUTH_SECRET or {ENV_PREFIX}AUTH_SECRET_FILE.",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    token.add_argument("--secret", help="the HS256 secret (the bridge's --auth-secret)")
    token.add_argument("--secret-file", metavar="FILE", help="read the HS256 secret from this file")
    token.add_argument("--private-key", metavar="FILE", help="sign with this PEM private key instead "
                       "(Ed25519: EdDSA, P-256: ES256, RSA: RS256)")
    token.add_argument("--sub", required=True, help="the identity")
    token.add_argument("--read", action="append", default=[], metavar="PATTERN",
                       help="document-id glob this token may read (repeatable)")
    token.add_argument("--write", action="append", default=[], metavar="PATTERN",
                       help="document-id glob this token may read and write (repeatable)")
    token.add_argument("--ttl", type=_duration, default=3600.0, metavar="DURATION",
                       help="lifetime: seconds, or 90s, 15m, 1h, 7d")
    token.add_argument("--no-exp", action="store_true",
                       help="no expiry (the bridge must run with --auth-require-exp off)")
    token.add_argument("--admin", action="store_true", help="grant the admin routes")
    _add_store_commands(commands)
    return parser, serve


def _add_store_commands(commands) -> None:
    """backup, restore, export, import (bridge/backup.py; docs/operations-backup.md)."""
    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=description, formatter_class=_HelpFormatter,
                                  allow_abbrev=False)
        sub.add_argument("--data-dir", default="data", help="the data directory (DATA_DIR/bridge.sqlite3)")
        return sub

    backup = command("backup", "copy the SQLite database consistently, even while a bridge serves it",
                     "A consistent online copy of DATA_DIR/bridge.sqlite3 (SQLite's backup API), checked before "
                     "it takes FILE's name. Safe while a bridge serves the directory.")
    backup.add_argument("file", metavar="FILE", help="where the copy goes")
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    restore = command("restore", "put a backup in place of the database (no bridge may be serving it)",
                      "Check FILE, keep the current database aside (bridge.sqlite3.before-restore-TIME), "
                      "and put FILE in its place. Refused while a bridge serves DATA_DIR.")
    restore.add_argument("file", metavar="FILE", help="a file `backup` wrote")
    export = command("export", "write documents as Automerge files",
                     "Each document (all of them unless ids are given) as OUT_DIR/<id>.automerge, the bytes "
                     "Automerge's save() writes. Read-only: works while a bridge serves the store.")
    export.add_argument("--store", metavar="URL", help="a store URL instead of --data-dir (postgresql://...)")
    export.add_argument("out_dir", metavar="OUT_DIR")
    export.add_argument("doc_ids", metavar="DOC_ID", nargs="*")
    import_ = command("import", "merge Automerge files into documents",
                      "Merge each FILE into the document named by its stem (or --doc-id), with the same checks "
                      "as a peer's changes; a file with anything refused is not imported at all. Refused while a "
                      "bridge serves a SQLite DATA_DIR: send the file to POST /docs/{id}/changes instead.")
    import_.add_argument("--store", metavar="URL", help="a store URL instead of --data-dir (postgresql://...)")
    import_.add_argument("--doc-id", help="the document to merge into (one FILE only)")
    import_.add_argument("files", metavar="FILE", nargs="+")


def run_store_command(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> None:
    from .backup import BackupError, backup, export, import_files, open_for_reading, restore
    from .storage import SchemaTooNew, StoreLocked, open_store

    database = Path(args.data_dir) / "bridge.sqlite3"
    url = getattr(args, "store", None) or f"sqlite:///{database}"
    try:
        if args.command == "backup":
            summary = backup(database, Path(args.file), force=args.force)
            print(f"backed up {database} to {args.file}: {summary.documents} documents, {summary.changes} change "
                  f"rows, {summary.snapshots} snapshots (schema {summary.version})")
        elif args.command == "restore":
            kept = restore(database, Path(args.file))
            print(f"restored {args.file} to {database}" + (f"; the previous database is kept as {kept}" if kept else ""))
        elif args.command == "export":
            written = anyio.run(_with_store, open_for_reading(url), lambda store: export(store, Path(args.out_dir),
                                                                                          args.doc_ids))
            print(f"exported {len(written)} documents to {args.out_dir}")
        else:
            if args.doc_id and len(args.files) != 1:
                fail("--doc-id names the document for one FILE only")
            files = []
            for name in args.files:
                try:
                    files.append((args.doc_id or Path(name).name.removesuffix(".automerge"), Path(name).read_bytes()))
                except OSError as exc:
                    fail(f"cannot read {name}: {exc.strerror or exc}")
            imported = anyio.run(_with_store, open_store(url), lambda store: import_files(store, files))
            print(f"imported {', '.join(f'{d} ({n} changes)' for d, n in imported)}")
    except StoreLocked:
        fail(f"a bridge is serving {args.data_dir}: stop it first" + (
            " (or send the file to POST /docs/{id}/changes)" if args.command == "import" else ""))
    except (BackupError, SchemaTooNew, ValueError) as exc:
        fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        fail(f"{args.command} failed: {exc}")


async def _with_store(store, work):
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def _given(flag: str, argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg == flag or arg.startswith(flag + "="):
            return True
    return False


def _apply_environment(args: argparse.Namespace, argv: Sequence[str], fail: Callable[[str], NoReturn]) -> None:
    """Options not on the command line take their environment variable's value."""
    for option in SERVE_OPTIONS:
        raw = os.environ.get(option.env)
        if raw is None or _given(option.flag, argv):
            continue
        try:
            setattr(args, option.dest, option.convert(raw))
        except ValueError:
            fail(f"{option.env}={raw!r} is not a valid {option.convert.__name__} (for {option.flag})")


def _check_data_dir(data_dir: Path, fail: Callable[[str], NoReturn]) -> None:
    """The data directory exists (or can be made) and we may write in it."""
    if data_dir.exists() and not data_dir.is_dir():
        fail(f"data directory {data_dir} is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create data directory {data_dir}: {exc.strerror or exc}")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        fail(f"data directory {data_dir} is not writable")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, serve = _parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> NoReturn:
        serve.exit(2, f"{PROG}: error: {message}\n")

    if args.command == "token":
        run_token(args, fail)
        return
    if args.command in ("backup", "restore", "export", "import"):
        run_store_command(args, fail)
        return
    _apply_environment(args, argv, fail)
    run_serve(args, fail, argv)


def _read_secret_file(path: str, fail: Callable[[str], NoReturn]) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def run_token(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> None:
    from .tokens import HS256, mint

    if args.private_key:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from .tokens import algorithm_for

        try:
            pem = Path(args.private_key).read_bytes()
            key = load_pem_private_key(pem, password=None)
            algorithm = algorithm_for(key.public_key())
        except (OSError, ValueError, TypeError) as exc:
            fail(f"cannot use {args.private_key} as a private key: {exc}")
        secret: str | bytes = pem
    else:
        secret_file = args.secret_file or os.environ.get(ENV_PREFIX + "AUTH_SECRET_FILE")
        secret = args.secret or (_read_secret_file(secret_file, fail) if secret_file else None) \
            or os.environ.get(ENV_PREFIX + "AUTH_SECRET", "")
        algorithm = HS256
        if not secret:
            fail("no secret: give --secret, --secret-file, --private-key, or set " + ENV_PREFIX + "AUTH_SECRET")
    try:
        token = mint(secret, sub=args.sub, read=args.read, write=args.write,
                     ttl=None if args.no_exp else args.ttl, admin=args.admin, algorithm=algorithm)
    except ValueError as exc:
        fail(str(exc))
    print(token)


def _token_auth(args: argparse.Namespace, fail: Callable[[str], NoReturn]):
    """The TokenAuth the flags describe, or None (auth off)."""
    from .tokens import TokenAuth

    given = [flag for flag in ("auth_secret", "auth_secret_file", "auth_public_key") if getattr(args, flag)]
    if not given:
        return None
    if len(given) > 1:
        fail("give one of --auth-secret, --auth-secret-file, --auth-public-key")
    try:
        if args.auth_public_key:
            try:
                pem = Path(args.auth_public_key).read_bytes()
            except OSError as exc:
                fail(f"cannot read {args.auth_public_key}: {exc.strerror or exc}")
            return TokenAuth(public_key=pem, require_exp=args.auth_require_exp, cookie=args.auth_cookie)
        secret = args.auth_secret or _read_secret_file(args.auth_secret_file, fail)
        return TokenAuth(secret=secret, require_exp=args.auth_require_exp, cookie=args.auth_cookie)
    except ValueError as exc:
        fail(str(exc))


def _webhook(args: argparse.Namespace, fail: Callable[[str], NoReturn]):
    """The Webhook the flags describe, or None."""
    if not args.webhook:
        if args.webhook_secret or args.webhook_secret_file:
            fail("--webhook-secret needs --webhook URL")
        return None
    if not args.webhook.lower().startswith(("http://", "https://")):
        fail(f"--webhook must be an http:// or https:// URL, not {args.webhook!r}")
    if bool(args.webhook_secret) == bool(args.webhook_secret_file):
        fail("--webhook needs one of --webhook-secret, --webhook-secret-file (its receiver checks the signature)")
    secret = args.webhook_secret or _read_secret_file(args.webhook_secret_file, fail)
    if len(secret) < 16:
        fail("the webhook secret must be at least 16 characters")
    from .webhook import Webhook

    return Webhook(args.webhook, secret)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace, fail: Callable[[str], NoReturn], argv: Sequence[str] = ()) -> None:
    # Imported here so that --help and --version stay quick.
    import uvicorn

    configure_logging(args.log_level, args.log_format, log_probes=args.log_probes)
    _check_tls(args, fail)
    if args.workers > 1:
        _check_cluster(args, fail)
        _probe_store(_store_url(args, fail), fail)
        from uvicorn.supervisors import Multiprocess

        # Each worker is a fresh process (spawned): it parses the same
        # command line and environment and builds its own app (worker_app).
        os.environ[WORKER_ARGV] = json.dumps(list(argv))
        config = uvicorn.Config(
            "bridge.cli:worker_app", factory=True, workers=args.workers, **_uvicorn_settings(args, picklable=True),
        )
        sock = config.bind_socket()
        from .server.metrics import for_workers

        # prometheus-client's multiprocess mode: the workers inherit the
        # directory; /metrics on any of them (or on --metrics-port, served
        # here) sums them all (docs/metrics.md).
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(for_workers(_metrics_address(args)))
            except OSError as exc:
                fail(str(exc))
            Multiprocess(config, sockets=[sock]).run()
        return
    app, _ = _build_app(args, fail)
    config = uvicorn.Config(app, **_uvicorn_settings(args))
    # uvicorn configured its loggers just now: no token reaches a line
    # (its access log prints ?token= query strings as they came).
    redact_tokens_everywhere()
    uvicorn.Server(config).run()


def _check_tls(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> None:
    """A certificate that cannot be used ends in one line, before serving."""
    if not args.ssl_certfile and not args.ssl_keyfile:
        return
    if not (args.ssl_certfile and args.ssl_keyfile):
        fail("--ssl-certfile and --ssl-keyfile go together")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot serve TLS with {args.ssl_certfile} and {args.ssl_keyfile}: {exc}")


# The command line a `serve --workers N` parent hands to its worker processes.
WORKER_ARGV = "AUTOMERGE_BRIDGE__WORKER_ARGV"


def worker_app():
    """One worker's app, under `serve --workers N` (uvicorn calls this in
    each worker process it spawns)."""
    argv = json.loads(os.environ[WORKER_ARGV])
    parser, serve = _parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> NoReturn:
        serve.exit(2, f"{PROG}: error: {message}\n")

    _apply_environment(args, argv, fail)
    app, limits = _build_app(args, fail)
    from .server.deadlines import HeaderDeadlineHTTP

    HeaderDeadlineHTTP.header_timeout = limits.header_timeout
    redact_tokens_everywhere()
    return app


def _uvicorn_settings(args: argparse.Namespace, *, picklable: bool = False) -> dict:
    """What uvicorn is told. Under --workers the config is pickled to each
    worker, so the HTTP protocol goes as an import string (its deadline is
    set in the worker: worker_app)."""
    from .server.app import uvicorn_options

    limits = Limits(**{option.dest: getattr(args, option.dest) for option in LIMIT_OPTIONS})
    options = uvicorn_options(limits)
    if picklable:
        options["http"] = "bridge.server.deadlines:HeaderDeadlineHTTP"
    return {
        "host": args.host, "port": args.port, "log_level": args.log_level,
        # One format for uvicorn's lines and ours, in every worker process.
        "log_config": logging_config(args.log_level, args.log_format, log_probes=args.log_probes),
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile,
        # Bounds uvicorn's own phase, after ours (the app's go-away, bounded by --shutdown-grace).
        "timeout_graceful_shutdown": args.shutdown_grace, **options,
    }


def _store_url(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> str:
    if args.store is not None:
        return args.store
    data_dir = Path(args.data_dir)
    _check_data_dir(data_dir, fail)
    return f"sqlite:///{data_dir / 'bridge.sqlite3'}"


def _is_shared(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("postgresql", "postgres")


def _check_cluster(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> None:
    """--workers and --bus need a store every process shares."""
    url = args.store or "sqlite:"
    if not _is_shared(url):
        which = "SQLite" if url.startswith("sqlite:") else url.split(":", 1)[0]
        what = f"--workers {args.workers}" if args.workers > 1 else "--bus"
        fail(f"{what} needs a store all the processes share, and {which} is one process's: use --store "
             "postgresql://user@host/db (with --bus redis://host:6379/0)")
    if args.workers > 1 and not args.bus:
        fail(f"--workers {args.workers} needs --bus redis://host:6379/0, so that each worker hears the others' "
             "changes at once")


def _probe_store(url: str, fail: Callable[[str], NoReturn]) -> None:
    """Open and close a shared store once, so that a wrong URL, an unreachable
    server or a schema from a newer bridge ends in one line before serving.
    (The app opens its own: a connection pool belongs to one event loop.)"""
    from .storage import open_store
    from .storage import SchemaTooNew

    try:
        store = open_store(url)
    except ValueError as exc:
        fail(str(exc))

    async def probe() -> None:
        with anyio.fail_after(15):
            await store.open()
        await store.close()

    try:
        anyio.run(probe)
    except SchemaTooNew as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot open store {store!r}: {type(exc).__name__}: {exc}")


def _build_app(args: argparse.Namespace, fail: Callable[[str], NoReturn]):
    """The app the flags describe, and its limits."""
    from .server.app import create_app
    from .storage import StoreCorrupt, StoreLocked, open_store
    from .storage import SchemaTooNew
    from .storage.sqlite import SQLiteStore

    limits = Limits(**{option.dest: getattr(args, option.dest) for option in LIMIT_OPTIONS})
    bounds = Bounds(**{option.dest: getattr(args, option.dest) for option in BOUND_OPTIONS})
    url = _store_url(args, fail)
    if args.bus:
        _check_cluster(args, fail)
    try:
        store = open_store(url)
    except ValueError as exc:
        fail(str(exc))
    if isinstance(store, SQLiteStore):
        # Open (lock, integrity check, migration) before uvicorn starts, so
        # that a data directory another bridge serves, or a damaged database,
        # ends in one clear line instead of a failed lifespan's traceback.
        # The app's lifespan finds it open and closes it at shutdown.
        where = f"data directory {args.data_dir}" if args.store is None else f"store {args.store}"
        try:
            anyio.run(store.open)
        except StoreLocked as exc:
            fail(f"{where} is in use by another bridge process (lock file {exc.lock_path})")
        except (StoreCorrupt, SchemaTooNew) as exc:
            fail(str(exc))
        except (OSError, sqlite3.Error) as exc:
            fail(f"cannot open {where}: {exc}")
    elif _is_shared(url) and args.workers == 1:
        _probe_store(url, fail)
    authenticate = _token_auth(args, fail)
    if authenticate is None and not _loopback(args.host):
        logging.getLogger("bridge").warning(
            "\n%s\nAUTH IS OFF and the bridge listens on %s: anyone who can reach it reads and writes every "
            "document. Turn on token auth (--auth-secret-file, --auth-public-key; see the README), or listen on "
            "127.0.0.1 behind something that authenticates.\n%s", "!" * 78, args.host, "!" * 78)
    try:
        app = create_app(store, limits=limits, bounds=bounds, idle_unload_after=args.idle_unload_after,
                         authenticate=authenticate, reader_presence=args.reader_presence, bus=args.bus,
                         heal_interval=args.heal_interval, shutdown_grace=args.shutdown_grace, handle_signals=True,
                         webhook=_webhook(args, fail),
                         **_metrics_options(args))
    except ValueError as exc:
        fail(str(exc))
    return app, limits


def _metrics_address(args: argparse.Namespace) -> tuple[str, int] | None:
    if args.metrics_port is None:
        return None
    host, port = args.metrics_port
    return host or args.host, port


def _metrics_options(args: argparse.Namespace) -> dict:
    """create_app's metrics options. Under --workers a separate port is the
    supervisor's (run_serve): a worker serves /metrics on neither port."""
    address = _metrics_address(args)
    if address is None:
        return {}
    if args.workers > 1:
        return {"metrics_route": False}
    return {"metrics_host": address[0], "metrics_port": address[1]}


if __name__ == "__main__":
    main()
