"""/metrics under `serve --workers 2`: whichever worker a scrape reaches (or
the supervisor, with --metrics-port), it answers for all of them."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import psutil
import pytest

from bridge.client import BridgeClient
from bridge.testing import RunningBridge, free_port, serve_in_subprocess
from tests.server.test_metrics import Scrape, scrape
from tests.services import RedisServer, fresh_database
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS = 4


@contextlib.contextmanager
def two_workers(tmp_path, *extra: str):
    with fresh_database() as store, RedisServer() as redis, serve_in_subprocess(
        tmp_path, log=tmp_path / "bridge.log",
        extra_args=["--workers", "2", "--store", store, "--bus", redis.url, "--heal-interval", "0.5", *extra],
    ) as bridge:
        yield bridge


# Sync fixtures: fresh_database runs its own event loop.
@pytest.fixture
def bridge(tmp_path):
    with two_workers(tmp_path) as bridge:
        yield bridge


@pytest.fixture
def metrics_port():
    return free_port()


@pytest.fixture
def bridge_with_metrics_port(tmp_path, metrics_port):
    with two_workers(tmp_path, "--metrics-port", str(metrics_port)) as bridge:
        yield bridge


async def both_workers_up(bridge: RunningBridge) -> None:
    nodes: set[str] = set()
    with anyio.fail_after(30):
        while len(nodes) < 2:
            with httpx.Client() as http:  # a new connection each time: either worker
                nodes.add(http.get(f"{bridge.http_url}/healthz").json()["cluster"]["node"])
            await anyio.sleep(0.01)


async def traffic(bridge: RunningBridge, check_while_connected) -> None:
    """CLIENTS clients (spread over the workers by the kernel) each write once
    and flush; ``check_while_connected`` runs before they leave."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(BridgeClient(bridge.ws_url, peer=f"c{i}")) for i in range(CLIENTS)]
        for i, client in enumerate(clients):
            doc = await client.open("shared")
            with doc.change() as d:
                d[f"k{i}"] = i
            await doc.flush()
        await check_while_connected()


def settled(url: str, predicate) -> None:
    """Several scrapes in a row, each on a new connection (so either worker
    answers), all satisfy ``predicate``."""
    answers = [scrape(url) for _ in range(6)]
    assert all(predicate(answer) for answer in answers), [a.text for a in answers if not predicate(a)][:1]


async def test_any_worker_answers_for_all_of_them(bridge):
    await both_workers_up(bridge)
    url = f"{bridge.http_url}/metrics"

    async def while_connected() -> None:
        def all_connected(s: Scrape) -> bool:
            # Live values: each worker copies its own every 2 s, summed.
            return s("connections", dialect="native", state="open") == CLIENTS and s("bus_connected") == 2
        await eventually(lambda: all(all_connected(scrape(url)) for _ in range(4)), timeout=20, interval=0.2)

    await traffic(bridge, while_connected)

    def done(s: Scrape) -> bool:
        return (s("changes_accepted_total") == CLIENTS
                and s("closes_total", dialect="native", code="1000") == CLIENTS
                and s("connections", dialect="native", state="open") == 0)
    await eventually(lambda: done(scrape(url)), timeout=20, interval=0.2)
    settled(url, done)
    seen = scrape(url)
    assert seen("commit_batch_writes_count") >= 1 and seen("flush_seconds_count") >= CLIENTS
    assert seen("frames_total", dialect="native", direction="in") >= CLIENTS * 4
    assert seen("bus_messages_total", direction="out") >= 1  # every commit is published
    assert seen("bus_dropped_total") == 0 and seen("cluster_docs_behind") == 0
    assert "process_resident_memory_bytes" not in seen.text  # per process: summed, it would be nonsense

    # A worker killed (and restarted by the supervisor): its live values stop
    # counting, its counters stay.
    victim = workers_of(bridge)[0]
    victim.kill()
    victim.wait(10)
    await eventually(lambda: len(workers_of(bridge)) == 2 and victim.pid not in {w.pid for w in workers_of(bridge)},
                     timeout=30, interval=0.2)
    await both_workers_up(bridge)
    await eventually(lambda: scrape(url)("bus_connected") == 2, timeout=20, interval=0.2)
    settled(url, lambda s: s("bus_connected") == 2 and s("changes_accepted_total") == CLIENTS)


def workers_of(bridge: RunningBridge) -> list[psutil.Process]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(bridge.process.pid).children()
    return [child for child in children if "resource_tracker" not in " ".join(child.cmdline())]


async def test_the_supervisor_serves_metrics_port_for_every_worker(bridge_with_metrics_port, metrics_port):
    bridge = bridge_with_metrics_port
    await both_workers_up(bridge)
    assert httpx.get(f"{bridge.http_url}/metrics").status_code == 404  # on neither worker's port
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def while_connected() -> None:
        await eventually(lambda: scrape(url)("connections", dialect="native", state="open") == CLIENTS,
                         timeout=20, interval=0.2)

    await traffic(bridge, while_connected)
    await eventually(lambda: scrape(url)("changes_accepted_total") == CLIENTS, timeout=20, interval=0.2)
    await eventually(lambda: scrape(url)("connections", dialect="native", state="open") == 0,
                     timeout=20, interval=0.2)
