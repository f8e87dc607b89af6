"""Real PostgreSQL and Redis for the tests that need them (never mocks).

PostgreSQL: the machine's server on 127.0.0.1:5432 (user ``postgres``, trust
auth), started if it is down; each test gets a database of its own, dropped
afterwards (:func:`fresh_database`).

Redis: a private ``redis-server`` per test on a free port
(:class:`RedisServer`), so that a test may stop and restart it, and so that
pub/sub channels (which Redis does not scope by database number) never cross
between tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from bridge.testing import free_port

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(host: str, port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _reachable(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up on {host}:{port}")
        time.sleep(0.1)


def postgres_cluster() -> str:
    """The version of the machine's PostgreSQL cluster (``ls /etc/postgresql``)."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        pytest.skip("PostgreSQL is not installed on this machine")
    return versions[-1]


def ensure_postgres() -> None:
    """Start the machine's PostgreSQL if it is not answering."""
    if _reachable(PG_HOST, PG_PORT):
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", postgres_cluster(), "main", "start"],
        check=False, capture_output=True,
    )
    _wait_for(PG_HOST, PG_PORT, "PostgreSQL")


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL (every connection to it drops)."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", postgres_cluster(), "main", "restart", "-m", "fast"],
        check=True, capture_output=True,
    )
    _wait_for(PG_HOST, PG_PORT, "PostgreSQL")


def stop_postgres() -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", postgres_cluster(), "main", "stop", "-m", "fast"],
        check=True, capture_output=True,
    )


def start_postgres() -> None:
    ensure_postgres()


def _admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database; yields its URL and drops it afterwards."""
    ensure_postgres()
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        ensure_postgres()  # a test may have stopped it
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


class RedisServer:
    """A private redis-server (no persistence) that a test may stop and restart."""

    def __init__(self, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed on this machine")
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for("127.0.0.1", self.port, "redis-server")

    def stop(self) -> None:
        """Kill it at once (as a crash would)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def data_dir_for(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return path
