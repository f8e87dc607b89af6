"""The pytest plugin users get: bridge_server and wait_durable."""

import anyio
import httpx
import pytest

from bridge.errors import FlushTimeout

from bridge.client import BridgeClient


def test_wait_durable_returns_once_heads_are_on_disk(bridge_server, wait_durable):
    async def write() -> list[bytes]:
        async with BridgeClient(bridge_server.ws_url) as client:
            doc = await client.open("plugin")
            with doc.change() as d:
                d["x"] = 1
            return doc.heads

    heads = anyio.run(write)
    assert wait_durable(bridge_server, "plugin", heads) == [h.hex() for h in heads]
    assert httpx.get(f"{bridge_server.http_url}/docs/plugin").json() == {"x": 1}


def test_wait_durable_times_out_on_heads_that_never_come(bridge_server, wait_durable):
    with pytest.raises(FlushTimeout) as info:  # the same type as every other flush path; a TimeoutError too
        wait_durable(bridge_server, "nothing-here", [b"\x01" * 32], timeout=0.3)
    assert isinstance(info.value, TimeoutError) and info.value.code == "flush_timeout"
