"""``automerge-bridge serve``: run the bridge under uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import anyio
import uvicorn

from .config import Limits
from .server.app import create_app
from .storage import StoreCorrupt, StoreLocked, open_store
from .storage.sqlite import SchemaTooNew, SQLiteStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="automerge-bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sync server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    serve.add_argument("--data-dir", default="data", help="SQLite lives at DATA_DIR/bridge.sqlite3")
    serve.add_argument("--store", default=None, help="store URL instead of --data-dir (memory:, sqlite:///path)")
    serve.add_argument("--max-frame-bytes", type=int, default=Limits.max_frame_bytes)
    serve.add_argument("--flush-timeout", type=float, default=Limits.flush_timeout)
    serve.add_argument("--idle-unload-after", type=float, default=30.0, help="seconds before an unused document is unloaded")
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits(max_frame_bytes=args.max_frame_bytes, flush_timeout=args.flush_timeout)
    store = open_store(args.store or f"sqlite:///{Path(args.data_dir) / 'bridge.sqlite3'}")
    if isinstance(store, SQLiteStore):
        # Open (lock, integrity check, migration) before uvicorn starts, so
        # that a data directory another bridge serves, or a damaged database,
        # ends in one clear line instead of a failed lifespan's traceback.
        # The app's lifespan finds it open and closes it at shutdown.
        try:
            anyio.run(store.open)
        except StoreLocked as exc:
            used = f"data directory {args.data_dir}" if args.store is None else f"store {exc.path}"
            parser.exit(2, f"automerge-bridge: {used} is in use by another bridge process (lock file {exc.lock_path})\n")
        except (StoreCorrupt, SchemaTooNew) as exc:
            parser.exit(2, f"automerge-bridge: {exc}\n")
    app = create_app(store, limits=limits, idle_unload_after=args.idle_unload_after)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Let frames up to our own limit through, so that *we* answer a larger
        # one with close 1009 and a log line (uvicorn would close silently).
        ws_max_size=args.max_frame_bytes * 2 + 1024,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )


if __name__ == "__main__":
    main()
