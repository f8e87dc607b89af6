"""SIGTERM and SIGINT: the bridge commits what its peers sent, tells them to
come back (close 1001), and exits; clients reconnect to the restarted server
by themselves and nothing they wrote is lost."""

from __future__ import annotations

import contextlib
import signal

import anyio
import httpx
import pytest
from automerge import core

from bridge.client import BridgeClient
from bridge.testing import free_port, serve_in_subprocess

from .rawpeer import RawPeer
from .waiting import eventually

pytestmark = pytest.mark.anyio

WRITERS = 3


async def _wait_exit(process, timeout: float = 30.0) -> int:
    with anyio.fail_after(timeout):
        while process.poll() is None:
            await anyio.sleep(0.05)
    return process.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_commits_what_peers_sent_closes_them_with_1001_and_they_come_back(tmp_path, sig):
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "bridge.log"
    written = [0] * WRITERS
    clients = [BridgeClient(f"ws://127.0.0.1:{port}/sync", peer=f"writer-{i}", backoff_max=0.5) for i in range(WRITERS)]

    async def write(i: int, doc) -> None:
        while True:  # changes always in flight (and within the 200 frames/s a connection may send)
            with doc.change() as d:
                d[f"w{i}"] = written[i] + 1
            written[i] += 1
            await anyio.sleep(0.01)

    with contextlib.ExitStack() as stack:
        bridge = stack.enter_context(serve_in_subprocess(data_dir, port=port, log=log, extra_args=["--log-level", "info"]))
        # A raw peer whose change the server has handled when the signal comes,
        # with its flush outstanding.
        raw = await RawPeer.connect(bridge.ws_url, peer="raw")
        mine = core.Document()
        with mine.transaction() as tx:
            tx.put(core.ROOT, "raw", core.ScalarType.Str, "first")
        sync = await raw.sync_doc("shared", mine)  # durable, in step with the server
        with mine.transaction() as tx:
            tx.put(core.ROOT, "raw", core.ScalarType.Str, "sent before the signal")
        for data in sync.generate():
            await raw.send({"t": "sync", "doc": "shared", "data": data})
        await raw.send({"t": "flush", "id": 7, "docs": {"shared": mine.get_heads()}})
        await raw.recv_until(lambda f: f["t"] == "sync")  # the server has handled the change

        async with anyio.create_task_group() as running:
            for client in clients:
                await running.start(_run_client, client)
            docs = [await client.open("shared") for client in clients]
            async with anyio.create_task_group() as writers:
                for i, doc in enumerate(docs):
                    writers.start_soon(write, i, doc)
                await eventually(lambda: min(written) >= 10, timeout=10)

                bridge.process.send_signal(sig)
                # The raw peer hears its flush answered, then 1001: come back.
                flushed = await raw.recv_until(lambda f: f["t"] == "flushed", timeout=20)
                assert flushed["id"] == 7
                assert await raw.closed_with(timeout=20) == 1001
                # uvicorn re-raises the signal once shut down: dying of it is the clean exit.
                assert await _wait_exit(bridge.process) in (0, -sig)
                await eventually(lambda: all(not c.online for c in clients), timeout=10)
                assert all(c.connections == 1 for c in clients)

                # Restarted on the same port and data: the clients come back by themselves.
                again = stack.enter_context(serve_in_subprocess(data_dir, port=port, log=log))
                try:
                    await eventually(lambda: all(c.connections == 2 and c.online for c in clients), timeout=20)
                except TimeoutError:
                    raise AssertionError([(c.connections, c.online, c.status, c.failure) for c in clients]) from None
                writers.cancel_scope.cancel()
            for doc in docs:
                await doc.flush(timeout=20)  # everything the writers wrote is durable
            async with httpx.AsyncClient() as http:
                stored = (await http.get(f"{again.http_url}/docs/shared")).json()
            running.cancel_scope.cancel()

    assert stored["raw"] == "sent before the signal"  # committed before the exit, never re-sent
    assert [stored[f"w{i}"] for i in range(WRITERS)] == written
    text = log.read_text()
    assert "shutting down: committing what" in text and "not done within" not in text


async def _run_client(client: BridgeClient, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    async with client:
        await client.wait_online(timeout=10)
        task_status.started()
        await anyio.sleep_forever()


async def test_new_connections_during_shutdown_are_told_to_go_away_and_readyz_says_no(tmp_path):
    """Between the signal and the exit, a load balancer's probe and a new
    client both learn that this node is leaving."""
    with serve_in_subprocess(tmp_path / "data", log=tmp_path / "bridge.log",
                             extra_args=["--shutdown-grace", "5"]) as bridge:
        # A peer that never reads keeps the go-away busy for send-timeout seconds
        # at most; meanwhile the node is observably leaving.
        stuck = await RawPeer.connect(bridge.ws_url, peer="stuck")
        await stuck.send({"t": "open", "doc": "d"})
        await stuck.recv_until(lambda f: f["t"] in ("sync", "saved"))
        bridge.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient() as http:
            async def not_ready() -> bool:
                try:
                    answer = await http.get(f"{bridge.http_url}/readyz")
                except httpx.TransportError:
                    return True  # already gone: also fine for a load balancer
                return answer.status_code == 503 and "shutting down" in answer.json()["problems"]

            with anyio.fail_after(10):
                while not await not_ready():
                    await anyio.sleep(0.01)
        assert await stuck.closed_with(timeout=20) == 1001
        assert await _wait_exit(bridge.process) in (0, -signal.SIGTERM)
