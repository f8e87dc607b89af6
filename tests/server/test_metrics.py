"""/metrics: real servers on 127.0.0.1, real clients and raw frames, scraped
over HTTP and read with prometheus-client's own parser; the series must move
with the traffic."""

from __future__ import annotations

import signal
from dataclasses import dataclass

import anyio
import httpx
import msgspec
import pytest
import websockets
from automerge import core
from prometheus_client.parser import text_string_to_metric_families

from bridge import Limits, create_app
from bridge.client import BridgeClient
from bridge.testing import RunningBridge, free_port, serve_in_thread, stop_process, wait_healthy
from bridge.tokens import TokenAuth, mint

from .. import crafting
from ..rawpeer import RawPeer
from ..test_cli import run_cli, start_cli
from ..waiting import eventually

pytestmark = pytest.mark.anyio

NS = "automerge_bridge"
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@dataclass
class Scrape:
    """One scrape: every sample by (name, labels)."""

    samples: dict[tuple[str, frozenset], float]
    text: str

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(f"{NS}_{name}", frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(url: str) -> Scrape:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return Scrape(samples, answer.text)


def metrics_of(bridge: RunningBridge) -> Scrape:
    return scrape(f"{bridge.http_url}/metrics")


def honest_change(doc: core.Document, key: str) -> core.Change:
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, 1)
    return doc.get_last_local_change()


def sync_carrying(doc_id: str, change: bytes) -> dict:
    return {"t": "sync", "doc": doc_id, "data": crafting.sync_message([change], heads=[crafting.change_hash(change)])}


# --- the series move with traffic ----------------------------------------------------


async def test_series_move_with_a_clients_traffic(tmp_path):
    app = create_app(data_dir=tmp_path / "a", web_dir=None)
    other = create_app(data_dir=tmp_path / "b", web_dir=None)  # its own registry: nothing of app's shows there
    with serve_in_thread(app) as bridge, serve_in_thread(other) as bystander:
        before = metrics_of(bridge)
        assert before("connections", dialect="native", state="open") == 0
        assert before("frames_total", dialect="native", direction="in") == 0
        assert before("documents_loaded") == 0

        async with BridgeClient(bridge.ws_url, peer="alice") as client:
            doc = await client.open("metered")
            for i in range(3):
                with doc.change() as d:
                    d[f"k{i}"] = i
            await doc.flush()
            during = metrics_of(bridge)
            assert during("connections", dialect="native", state="open") == 1
            assert during("connections", dialect="native", state="handshake") == 0
            assert during("documents_loaded") == 1
            assert during("documents_open") == 1
            assert during("subscriptions") == 1

        # The client said bye; the server closes 1000 once it has read it.
        await eventually(lambda: metrics_of(bridge)("closes_total", dialect="native", code="1000") == 1)
        after = metrics_of(bridge)
        assert after("connections", dialect="native", state="open") == 0
        assert after("documents_open") == 0
        for direction in ("in", "out"):
            # hello, open, sync, flush, bye... in; welcome, opened, saved, sync, flushed out
            assert after("frames_total", dialect="native", direction=direction) >= 4
            assert after("frame_bytes_total", dialect="native", direction=direction) > 100
        assert after("changes_accepted_total") == 3
        assert after("commit_batch_writes_count") >= 1
        assert after("commit_batch_writes_sum") >= after("commit_batch_writes_count")
        assert after("commit_seconds_count") >= 1
        assert after("flush_seconds_count") >= 1
        assert after("flush_timeouts_total") == 0
        assert after("document_load_seconds_count") == 1
        assert after("commits_failing") == 0
        assert after("closes_total", dialect="native", code="peer") == 0

        untouched = metrics_of(bystander)
        assert untouched("frames_total", dialect="native", direction="in") == 0
        assert untouched("changes_accepted_total") == 0
        # Not clustered: no bus series at all.
        assert not any(name.startswith(f"{NS}_bus_") for name in untouched.names())


async def test_refusals_bad_frames_and_rate_limits_are_counted_by_reason_and_code():
    limits = Limits(max_frames_per_second=5, frame_burst=20, max_connections_per_address=2)
    app = create_app("memory:", web_dir=None, limits=limits)
    with serve_in_thread(app) as bridge:
        # A change refused by the checks (a seq gap): error bad_sync, the connection stays.
        mallory = await RawPeer.connect(bridge.ws_url, peer="mallory", address="127.0.0.66")
        theirs = core.Document()
        await mallory.sync_doc("shared", theirs)
        gap = crafting.rewrite(honest_change(theirs, "gap").bytes, seq=2)
        await mallory.send(sync_carrying("shared", gap))
        error = await mallory.recv_until(lambda f: f["t"] == "error")
        assert error["code"] == "bad_sync"
        await mallory.close()

        # A text frame: close 4400.
        async with websockets.connect(bridge.ws_url, local_addr=("127.0.0.67", 0)) as ws:
            await ws.send("not msgpack")
            with anyio.fail_after(10), pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4400

        # Over its frame rate: close 4429.
        flooder = await RawPeer.connect(bridge.ws_url, peer="flooder", address="127.0.0.68")
        for _ in range(40):
            await flooder.send({"t": "close", "doc": "nothing"})
        assert await flooder.closed_with() == 4429

        # A third connection from one address: refused with 4429 before its handshake.
        held = [await RawPeer.connect(bridge.ws_url, peer=f"held-{i}", address="127.0.0.69") for i in range(2)]
        refused = await RawPeer.connect(bridge.ws_url, hello=False, address="127.0.0.69")
        assert await refused.closed_with() == 4429
        for peer in held:
            await peer.close()

        def counted() -> bool:
            seen = metrics_of(bridge)
            return seen("closes_total", dialect="native", code="peer") >= 3  # mallory and the two held
        await eventually(counted)
        seen = metrics_of(bridge)
        assert seen("changes_rejected_total", reason="bad_sync") == 1
        assert seen("changes_rejected_total", reason="read_only") == 0
        assert seen("errors_sent_total", dialect="native", code="bad_sync") == 1
        assert seen("closes_total", dialect="native", code="4400") == 1
        assert seen("closes_total", dialect="native", code="4429") == 2
        assert seen("rate_limit_closes_total", limit="frames") == 1
        assert seen("rate_limit_closes_total", limit="per_address") == 1
        assert seen("rate_limit_closes_total", limit="bytes") == 0
        assert seen("connections", dialect="native", state="open") == 0


async def test_metrics_need_no_token_when_auth_is_on_and_read_only_refusals_count():
    app = create_app("memory:", web_dir=None, authenticate=TokenAuth(secret=SECRET))
    with serve_in_thread(app) as bridge:
        assert httpx.get(f"{bridge.http_url}/docs/catalog").status_code == 401  # the documents do need one
        writer = mint(SECRET, sub="editor", write=["catalog"], ttl=600)
        async with BridgeClient(bridge.ws_url, peer="editor", token=writer) as client:
            doc = await client.open("catalog")
            with doc.change() as d:
                d["title"] = "spring"
            await doc.flush()

        reader = await RawPeer.connect(bridge.ws_url, hello=False)
        await reader.send({"t": "hello", "v": [1], "peer": "viewer", "caps": [],
                           "token": mint(SECRET, sub="viewer", read=["catalog"], ttl=600)})
        assert (await reader.recv())["t"] == "welcome"
        await reader.send({"t": "open", "doc": "catalog"})
        await reader.recv_until(lambda f: f["t"] == "opened")
        await reader.send(sync_carrying("catalog", honest_change(core.Document(), "mine").bytes))
        assert (await reader.recv_until(lambda f: f["t"] == "error"))["code"] == "read_only"
        await reader.close()

        seen = metrics_of(bridge)  # no token
        assert seen("changes_rejected_total", reason="read_only") == 1
        assert seen("errors_sent_total", dialect="native", code="read_only") == 1
        assert seen("changes_accepted_total") == 1
        assert "catalog" not in seen.text and "editor" not in seen.text and "viewer" not in seen.text


async def test_openmetrics_when_the_scraper_asks():
    app = create_app("memory:", web_dir=None)
    with serve_in_thread(app) as bridge:
        answer = httpx.get(f"{bridge.http_url}/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        assert answer.text.rstrip().endswith("# EOF")


# --- a port of its own ------------------------------------------------------------------


async def test_a_port_of_its_own_serves_metrics_and_the_main_port_does_not():
    app = create_app("memory:", web_dir=None, metrics_port=0)
    with serve_in_thread(app) as bridge:
        port = app.state.metrics.port
        assert port and port != bridge.port
        assert httpx.get(f"{bridge.http_url}/metrics").status_code == 404
        async with BridgeClient(bridge.ws_url, peer="alice") as client:
            doc = await client.open("elsewhere")
            with doc.change() as d:
                d["x"] = 1
            await doc.flush()
        seen = scrape(f"http://127.0.0.1:{port}/metrics")
        assert seen("changes_accepted_total") == 1
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 404  # metrics only
    with pytest.raises(httpx.ConnectError):  # gone with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics")


def test_serve_metrics_port_through_the_cli(tmp_path):
    port, metrics_port = free_port(), free_port()
    process = start_cli("serve", "--port", str(port), "--store", "memory:", "--log-level", "warning", cwd=tmp_path,
                        METRICS_PORT=f"127.0.0.1:{metrics_port}")
    try:
        bridge = RunningBridge("127.0.0.1", port, process=process)
        wait_healthy(bridge)
        assert httpx.get(f"{bridge.http_url}/metrics").status_code == 404
        seen = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert seen("connections", dialect="native", state="open") == 0
        assert seen("documents_loaded") == 0
    finally:
        stop_process(process)
    assert process.returncode in (0, -signal.SIGTERM)


@pytest.mark.parametrize("value", ["abc", "70000", ":9100", "host:"])
def test_a_bad_metrics_port_is_one_line_and_exit_2(tmp_path, value):
    result = run_cli("serve", "--metrics-port", value, "--store", "memory:", cwd=tmp_path)
    assert result.returncode == 2
    assert "--metrics-port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_frames_are_counted_on_the_socket_not_guessed():
    """A frame's bytes are what went over the wire (msgpack), not a model."""
    app = create_app("memory:", web_dir=None)
    with serve_in_thread(app) as bridge:
        hello = msgspec.msgpack.encode({"t": "hello", "v": [1], "peer": "p", "caps": []})

        async def say_hello() -> int:
            async with websockets.connect(bridge.ws_url) as ws:
                await ws.send(hello)
                return len(await ws.recv())

        welcome = anyio.run(say_hello)
        seen = metrics_of(bridge)
        assert seen("frame_bytes_total", dialect="native", direction="in") == len(hello)
        assert seen("frame_bytes_total", dialect="native", direction="out") == welcome
