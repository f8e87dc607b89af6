"""kill -9 at any moment loses nothing that `saved` or `flushed` acknowledged."""

from __future__ import annotations

import os
import signal

import anyio
import httpx
import pytest
from automerge import core

from bridge.client import BridgeClient
from bridge.core.sync import HashIndex
from bridge.testing import serve_in_subprocess


async def write_until_killed(bridge, kill_after_flushes: int) -> tuple[set[int], list[list[bytes]]]:
    """Write keys k0, k1, ... flushing every 3rd; SIGKILL the server while
    writes and flushes are in flight. Returns what was acknowledged."""
    flushed: set[int] = set()
    saved_heads: list[list[bytes]] = []
    async with BridgeClient(bridge.ws_url, backoff_initial=0.05) as client, anyio.create_task_group() as tg:
        doc = await client.open("crash")
        written = []
        in_flight = [0]
        progress = [anyio.Event()]

        async def flush_and_record(keys):
            try:
                await doc.flush(timeout=60)
                flushed.update(keys)
            finally:
                in_flight[0] -= 1
                progress[0].set()
                progress[0] = anyio.Event()

        for i in range(10_000):
            with doc.change() as d:
                d[f"k{i}"] = i
            written.append(i)
            if doc.server_durable_heads:
                saved_heads.append(list(doc.server_durable_heads))
            if i % 3 == 2:
                in_flight[0] += 1
                tg.start_soon(flush_and_record, list(written))
                # Keep a couple of flushes in flight (so the kill lands among
                # them) without letting the writer run arbitrarily far ahead.
                with anyio.fail_after(30):
                    while in_flight[0] >= 2:
                        await progress[0].wait()
            if len(flushed) >= kill_after_flushes * 3:
                print(f"killed with {in_flight[0]} flushes in flight after {i + 1} changes")
                os.kill(bridge.process.pid, signal.SIGKILL)
                break
        bridge.process.wait(10)  # raises if the loop ended without a kill
        tg.cancel_scope.cancel()
        client.abandon()
    return flushed, saved_heads


@pytest.mark.parametrize("kill_after_flushes", [1, 25, 80])
def test_kill_9_then_restart_keeps_every_acknowledged_change(tmp_path, kill_after_flushes):
    with serve_in_subprocess(tmp_path) as bridge:
        flushed, saved_heads = anyio.run(write_until_killed, bridge, kill_after_flushes)
    assert flushed, "the test must acknowledge something before the kill"

    with serve_in_subprocess(tmp_path) as restarted:
        view = httpx.get(f"{restarted.http_url}/docs/crash").json()
        binary = httpx.get(f"{restarted.http_url}/docs/crash", params={"format": "automerge"}).content
    missing = sorted(i for i in flushed if view.get(f"k{i}") != i)
    assert not missing, f"flushed but lost after kill -9: {missing[:10]}"
    index = HashIndex(core.Document.load(binary))
    for heads in saved_heads:
        assert index.contains_all(heads), "heads announced in `saved` were lost"
