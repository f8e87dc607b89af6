"""The attacks of the limits issue, against one real server process.

Each attack asserts what the offender gets (the documented error or close
code), that bystanders on the attacked document and on another one keep
converging with their flushes answered, and, at the end, that the server's
memory is back near where it started once the offenders are gone.
"""

from __future__ import annotations

import time

import anyio
import psutil
import pytest
import websockets
from automerge import core

from bridge.core.sync import DocSync
from bridge.testing import serve_in_subprocess

from . import crafting
from .rawpeer import RawPeer, text_doc
from .test_integrity import attacker_on, bystanders_converge, send_changes
from .waiting import eventually

pytestmark = pytest.mark.anyio

LIMITS = [
    "--max-doc-ops", "20000", "--docs-created-per-hour", "50",
    "--max-frames-per-second", "100", "--frame-burst", "200",
    "--max-flushes-in-flight", "8", "--flush-timeout", "2",
]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with serve_in_subprocess(tmp_path_factory.mktemp("attacks"), extra_args=LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def baseline(bridge):
    anyio.run(bystanders_converge, bridge, ["warm-a", "warm-b"], "warmup")
    return psutil.Process(bridge.process.pid).memory_info().rss


async def converge(bridge, doc_id: str) -> None:
    with anyio.fail_after(30):
        await bystanders_converge(bridge, [doc_id, "elsewhere"], f"after-{doc_id}")


async def test_amplifying_changes_are_refused_before_they_cost_anything(bridge, baseline):
    mallory, _ = await attacker_on(bridge, "amp")
    bomb = crafting.change(actor=b"\x01" * 16, columns=crafting.null_puts(4_000_000))
    error = await send_changes(mallory, "amp", [bomb], [crafting.change_hash(bomb)])
    assert error["code"] == "bad_sync"
    inflating = crafting.compressed(body=b"\x00" * (64 * 1024 * 1024))
    error = await send_changes(mallory, "amp", [inflating], [b"\x02" * 32])
    assert error["code"] == "bad_sync"
    await converge(bridge, "amp")


async def test_a_document_cannot_grow_past_max_doc_ops(bridge, baseline):
    writer = await RawPeer.connect(bridge.ws_url, peer="writer")
    doc = text_doc("x" * 15_000)
    await writer.sync_doc("grows", doc)
    with doc.transaction() as tx:
        tx.splice_text(doc.get(core.ROOT, "text")[1], 0, 0, "y" * 10_000)
    sync = DocSync(doc)
    sync.state = core.SyncState()
    await writer.send({"t": "open", "doc": "grows"})
    error = None
    with anyio.fail_after(20):
        while error is None:
            for data in sync.generate():
                await writer.send({"t": "sync", "doc": "grows", "data": data})
            frame = await writer.recv()
            if frame["t"] == "sync":
                sync.receive(frame["data"])
            elif frame["t"] == "error":
                error = frame
    assert error["code"] == "quota" and "document is full" in error["msg"]
    await converge(bridge, "grows")


async def test_a_huge_peer_name_is_refused_at_the_first_frame(bridge, baseline):
    mallory = await RawPeer.connect(bridge.ws_url, hello=False)
    await mallory.send({"t": "hello", "v": [1], "peer": "m" * 1_000_000})
    assert await mallory.closed_with() == 1009
    await converge(bridge, "names")


async def test_flooders_are_closed_4429_and_bystanders_never(bridge, baseline):
    bystander = await RawPeer.connect(bridge.ws_url, peer="bystander")
    await bystander.sync_doc("flood", text_doc("watching"))
    codes = []
    for n, kind in enumerate(("eph", "sync", "flush")):
        flooder = await RawPeer.connect(bridge.ws_url, peer=f"{kind}-flooder", address=f"127.0.0.{10 + n}")
        await flooder.sync_doc("flood", core.Document())
        frame = {
            "eph": {"t": "eph", "doc": "flood", "data": b"cursor"},
            "sync": {"t": "sync", "doc": "flood", "data": DocSync(core.Document()).generate()[0]},
            "flush": {"t": "flush", "id": 1, "docs": {"flood": [b"\x07" * 32]}},
        }[kind]
        # Past the burst (200 frames) at once, then stop and read the close.
        with anyio.fail_after(20):
            try:
                for _ in range(400):
                    await flooder.send(frame)
            except websockets.ConnectionClosed:
                pass
        codes.append(await flooder.closed_with())
    assert codes == [4429, 4429, 4429]
    await converge(bridge, "flood")
    await bystander.send({"t": "flush", "id": 7, "docs": {"flood": []}})
    assert (await bystander.recv_until(lambda f: f["t"] == "flushed"))["id"] == 7


async def test_a_flooder_that_reconnects_at_once_is_held_until_its_delay_is_over(bridge, baseline):
    """Reconnecting does not refill the buckets: they belong to the client,
    and a client that comes back before its delay waits it out."""
    address = "127.0.0.20"
    flooder = await RawPeer.connect(bridge.ws_url, peer="reconnecter", address=address)
    with anyio.fail_after(20):
        try:
            for _ in range(400):
                await flooder.send({"t": "eph", "doc": "nowhere", "data": b"."})
        except websockets.ConnectionClosed:
            pass
    assert await flooder.closed_with() == 4429
    retry = float(flooder.ws.close_reason.split()[2])
    # Reconnecting at once: held before the handshake until the delay is over,
    # then served with the buckets as the last connection left them.
    started = time.monotonic()
    reconnected: list[RawPeer] = []

    async def reconnect() -> None:
        reconnected.append(await RawPeer.connect(bridge.ws_url, peer="reconnecter", address=address))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reconnect)
        await converge(bridge, "flood")  # bystanders are served meanwhile
    assert time.monotonic() - started >= retry - 1, "held until its retry delay was over"
    [back] = reconnected
    await back.send({"t": "bye"})
    assert await back.closed_with() == 1000


async def test_flushes_waiting_at_once_are_bounded_per_connection(bridge, baseline):
    peer = await RawPeer.connect(bridge.ws_url, peer="flusher")
    await peer.sync_doc("flushes", core.Document())
    for n in range(12):
        await peer.send({"t": "flush", "id": n, "docs": {"flushes": [b"\x07" * 32]}})
    answers = {}
    with anyio.fail_after(20):
        while len(answers) < 12:
            frame = await peer.recv()
            if frame["t"] == "error" and frame.get("id") is not None:
                answers[frame["id"]] = frame["code"]
    assert sorted(answers.values()).count("quota") == 4
    assert sorted(answers.values()).count("flush_timeout") == 8


async def test_creating_documents_is_a_quota_per_client(bridge, baseline):
    # From its own address: the quota is per client, and the bystanders
    # (127.0.0.1) keep theirs.
    mallory = RawPeer(await websockets.connect(bridge.ws_url, max_size=None, local_addr=("127.0.0.2", 0)))
    await mallory.send({"t": "hello", "v": [1], "peer": "creator"})
    assert (await mallory.recv())["t"] == "welcome"
    refused = []
    for n in range(60):
        await mallory.send({"t": "open", "doc": f"spam-{n}"})
    with anyio.fail_after(20):
        while len(refused) < 10:
            frame = await mallory.recv()
            if frame["t"] == "error":
                assert frame["code"] == "quota"
                refused.append(frame["doc"])
    await converge(bridge, "created-by-others")


async def test_changes_whose_dependencies_never_arrive_are_dropped_past_the_bound(bridge, baseline):
    mallory, author = await attacker_on(bridge, "orphans")
    with author.transaction() as tx:
        tx.put(core.ROOT, "never-sent", core.ScalarType.Int, 0)
    orphans = []
    for i in range(3):
        with author.transaction() as tx:
            tx.put(core.ROOT, f"k{i}", core.ScalarType.Int, i)
        orphans.append(author.get_last_local_change().bytes)
    # Waiting changes are fine up to the bound (10,000 by default): here
    # the document simply never gets them, and bystanders do not notice.
    for chunk in orphans:
        await mallory.send({"t": "sync", "doc": "orphans", "data": crafting.sync_message([chunk])})
    await converge(bridge, "orphans")


async def test_memory_is_back_near_baseline_after_the_offenders_left(bridge, baseline):
    process = psutil.Process(bridge.process.pid)
    # Offenders are gone (their sockets closed with their tests); what they
    # made the server hold must be let go, give or take allocator slack.
    await eventually(lambda: process.memory_info().rss < baseline + 150 * 1024 * 1024, timeout=30, interval=0.2)
