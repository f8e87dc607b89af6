"""Run a real bridge for tests: in a thread, in the current event loop, or as
a subprocess — and a pytest plugin for your own test suites.

Installed with the package as the pytest plugin ``bridge``, it gives every
test suite two fixtures:

- ``bridge_server``: a bridge on a free 127.0.0.1 port with SQLite in the
  test's ``tmp_path`` (``.http_url``, ``.ws_url``, ``.app``);
- ``wait_durable``: ``wait_durable(bridge_server, doc_id, heads)`` returns
  once the bridge holds ``heads`` (bytes or hex) durably, or fails after a
  bounded timeout. Use it as a deterministic "saved" sync point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette

from .errors import FlushTimeout


@dataclass
class RunningBridge:
    host: str
    port: int
    app: Starlette | None = None
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/sync"


def _config(app: Starlette, port: int = 0, **overrides) -> uvicorn.Config:
    from .server.app import uvicorn_options

    options = {**uvicorn_options(getattr(app.state, "limits", None)), **overrides}
    return uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options)


def _port(server: uvicorn.Server) -> int:
    return server.servers[0].sockets[0].getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(
    app: Starlette, *, port: int = 0, startup_timeout: float = 20.0, **uvicorn_overrides
) -> Iterator[RunningBridge]:
    """Run ``app`` under uvicorn on 127.0.0.1, a free port (unless given), in
    its own thread and event loop (so clients on trio or another loop can use it).
    ``uvicorn_overrides`` replace uvicorn settings (e.g. ``http=``)."""
    server = uvicorn.Server(_config(app, port, **uvicorn_overrides))
    thread = threading.Thread(target=server.run, name="bridge-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("bridge did not start")
        time.sleep(0.01)
    try:
        yield RunningBridge("127.0.0.1", _port(server), app=app)
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.asynccontextmanager
async def serve_in_task(app: Starlette) -> AsyncIterator[RunningBridge]:
    """Run ``app`` under uvicorn in the current (asyncio) event loop, so a test
    can use ``app.state.hub`` directly."""
    server = uvicorn.Server(_config(app))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(20):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield RunningBridge("127.0.0.1", _port(server), app=app)
        finally:
            server.should_exit = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_subprocess(
    data_dir: str | Path, *, port: int | None = None, extra_args: list[str] = (), log: str | Path | None = None
) -> Iterator[RunningBridge]:
    """``automerge-bridge serve`` as a child process (what a user runs);
    ``log``: a file its output goes to (appended), else this process's."""
    port = port or free_port()
    output = open(log, "ab") if log is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning", *extra_args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=output, stderr=output,
    )
    if output is not None:
        output.close()  # the child holds its own copy
    bridge = RunningBridge("127.0.0.1", port, process=process)
    try:
        wait_healthy(bridge)
        yield bridge
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (graceful: the bridge drains its commits), SIGKILL after 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_healthy(bridge: RunningBridge, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if bridge.process is not None and bridge.process.poll() is not None:
            raise RuntimeError(f"bridge exited with {bridge.process.returncode}")
        try:
            if httpx.get(f"{bridge.http_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("bridge did not become healthy")
        time.sleep(0.05)


def wait_until_durable(bridge: RunningBridge, doc_id: str, heads: list[bytes] | list[str], timeout: float = 10.0) -> list[str]:
    """Block until the bridge has ``heads`` of ``doc_id`` durably; return its durable heads."""
    wanted = ",".join(h.hex() if isinstance(h, bytes) else h for h in heads)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=bridge.http_url) as http:
        while True:
            answer = http.get(f"/docs/{doc_id}/durable", params={"heads": wanted}).json()
            if answer["durable"]:
                return answer["heads"]
            if time.monotonic() > deadline:
                raise FlushTimeout(f"{doc_id}: {wanted} not durable after {timeout}s (durable: {answer['heads']})", doc=doc_id)
            time.sleep(0.02)


try:
    import pytest
except ImportError:  # the plugin is only for test suites
    pass
else:

    @pytest.fixture
    def bridge_server(tmp_path) -> Iterator[RunningBridge]:
        """A real bridge on a free port with SQLite under ``tmp_path``."""
        from .server.app import create_app

        with serve_in_thread(create_app(data_dir=tmp_path / "bridge-data")) as running:
            yield running

    @pytest.fixture
    def wait_durable():
        """``wait_durable(bridge_server, doc_id, heads, timeout=10.0)``."""
        return wait_until_durable
