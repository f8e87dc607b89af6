"""The Redis bus against a real, private redis-server that the tests kill,
restart and freeze: delivery byte for byte, following and unfollowing,
reconnecting by itself, never blocking or raising in publish, and closing
what it opened."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import warnings
from contextlib import asynccontextmanager

import anyio
import pytest
import redis.asyncio as aioredis

from bridge.cluster import open_bus
from bridge.cluster.redis import RedisBus
from tests.services import redis_server  # noqa: F401 (fixture)
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PREFIX = b"automerge-bridge:doc:"


class Recorder:
    """A BusHandler that remembers what it heard."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connects = 0
        self.fail_on = fail_on

    def bus_message(self, doc_id: str, payload: bytes) -> None:
        if payload == self.fail_on:
            raise RuntimeError("a handler bug")
        self.messages.append((doc_id, payload))

    def bus_connected(self) -> None:
        self.connects += 1

    def payloads(self, doc_id: str) -> list[bytes]:
        return [payload for doc, payload in self.messages if doc == doc_id]


@asynccontextmanager
async def running(*buses: RedisBus):
    """Run the buses (one Recorder each) until the block ends, connected at its start."""
    handlers = [Recorder() for _ in buses]
    async with anyio.create_task_group() as tg:
        for bus, handler in zip(buses, handlers):
            await tg.start(bus.run, handler)
        await eventually(lambda: all(bus.connected for bus in buses), timeout=5)
        yield handlers
        tg.cancel_scope.cancel()


@asynccontextmanager
async def admin(server):
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def subscribers(client: aioredis.Redis, channel: bytes) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return count


async def wait_subscribers(client: aioredis.Redis, channel: bytes, count: int) -> None:
    with anyio.fail_after(5):
        while await subscribers(client, channel) != count:
            await anyio.sleep(0.01)


async def test_payloads_reach_every_follower_byte_identical_and_in_order(redis_server):  # noqa: F811
    a, b = RedisBus(redis_server.url), RedisBus(redis_server.url)
    async with admin(redis_server) as client, running(a, b) as (heard_a, heard_b):
        a.follow("doc")
        b.follow("doc")
        await wait_subscribers(client, PREFIX + b"doc", 2)

        big = os.urandom(2 * MiB)
        sent = [b"hello", b"\x00", b"\x00zero\x00bytes\x00", big, b""] + [i.to_bytes(4, "big") for i in range(200)]
        for payload in sent:
            a.publish("doc", payload)
        b.publish("doc", b"from b")

        # The other bridge hears every payload, and so does the publisher itself.
        await eventually(lambda: len(heard_b.messages) == len(sent) + 1 and len(heard_a.messages) == len(sent) + 1,
                         timeout=5)
        for heard in (heard_a, heard_b):
            from_a = [p for p in heard.payloads("doc") if p != b"from b"]
            assert from_a == sent  # byte-identical, in the publisher's order
            assert b"from b" in heard.payloads("doc")
        assert a.published == len(sent) and b.published == 1
        assert a.received == b.received == len(sent) + 1
        assert a.dropped == b.dropped == 0


async def test_unfollow_stops_delivery_and_a_document_nobody_follows_delivers_nothing(redis_server):  # noqa: F811
    a, b = RedisBus(redis_server.url), RedisBus(redis_server.url)
    async with admin(redis_server) as client, running(a, b) as (heard_a, heard_b):
        for doc in ("x", "marker"):
            a.follow(doc)
            b.follow(doc)
        await wait_subscribers(client, PREFIX + b"marker", 2)
        await wait_subscribers(client, PREFIX + b"x", 2)

        b.unfollow("x")  # takes effect at once on delivery, soon on the subscription
        for doc in ("x", "nobody", "marker"):
            a.publish(doc, doc.encode())
        # One publisher's PUBLISHes reach a subscriber in order: once the
        # marker is here, anything else would have been too.
        await eventually(lambda: heard_b.payloads("marker") and heard_a.payloads("marker"))
        assert heard_b.messages == [("marker", b"marker")]
        assert heard_a.messages == [("x", b"x"), ("marker", b"marker")]
        await wait_subscribers(client, PREFIX + b"x", 1)  # the UNSUBSCRIBE was applied
        assert await subscribers(client, PREFIX + b"nobody") == 0


async def test_restart_reconnects_by_itself_and_resubscribes(redis_server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="bridge.cluster.redis")
    buses = a, b = RedisBus(redis_server.url), RedisBus(redis_server.url)
    async with running(a, b) as (heard_a, heard_b):
        a.follow("doc")
        b.follow("doc")
        async with admin(redis_server) as client:
            await wait_subscribers(client, PREFIX + b"doc", 2)
        assert heard_a.connects == heard_b.connects == 1
        assert a.reconnects == b.reconnects == 0

        seen_down: set[int] = set()

        def both_seen_down() -> bool:
            seen_down.update(i for i, bus in enumerate(buses) if not bus.connected)
            return len(seen_down) == 2

        await anyio.to_thread.run_sync(redis_server.restart)  # kill, then start on the same port
        await eventually(both_seen_down, timeout=5, interval=0.005)
        await eventually(lambda: a.connected and b.connected, timeout=10)
        assert heard_a.connects == heard_b.connects == 2  # told to heal
        assert a.reconnects == b.reconnects == 1

        # Nobody followed again: the subscriptions came back by themselves.
        async with admin(redis_server) as client:
            assert await subscribers(client, PREFIX + b"doc") == 2
        a.publish("doc", b"after the restart")
        b.publish("doc", b"from b too")
        await eventually(lambda: {b"after the restart", b"from b too"} <= set(heard_a.payloads("doc"))
                         and {b"after the restart", b"from b too"} <= set(heard_b.payloads("doc")))

    # One warning per bus for the outage, without a traceback, not one per retry.
    warnings_ = [r for r in caplog.records if r.name == "bridge.cluster.redis" and r.levelno >= logging.WARNING]
    assert len(warnings_) == 2, [r.getMessage() for r in warnings_]
    assert all(r.exc_info is None for r in warnings_)


async def test_publish_while_down_returns_at_once_and_counts_drops(redis_server):  # noqa: F811
    bus = RedisBus(redis_server.url)
    async with running(bus) as (heard,):
        bus.follow("doc")
        redis_server.stop()
        await eventually(lambda: not bus.connected, timeout=5)

        payload = b"\x01" * 64 * 1024
        started = time.perf_counter()
        for _ in range(1000):
            bus.publish("doc", payload)  # neither blocks nor raises
        assert time.perf_counter() - started < 0.5
        assert bus.dropped == 1000 and bus.published == 0
        assert bus.snapshot()["dropped"] == 1000

        redis_server.start()
        await eventually(lambda: bus.connected, timeout=10)
        bus.publish("doc", b"back")
        await eventually(lambda: heard.payloads("doc") == [b"back"])
        assert bus.published == 1 and bus.dropped == 1000


async def test_a_full_queue_drops_the_oldest(redis_server):  # noqa: F811
    by_count = RedisBus(redis_server.url, max_queued=3)
    by_bytes = RedisBus(redis_server.url, channel_prefix="bytes:", max_queued_bytes=10)
    async with admin(redis_server) as client, running(by_count, by_bytes) as (heard_count, heard_bytes):
        by_count.follow("doc")
        by_bytes.follow("doc")
        await wait_subscribers(client, PREFIX + b"doc", 1)
        await wait_subscribers(client, b"bytes:doc", 1)

        # No await in between: the sender cannot drain, the queue overflows.
        for i in range(10):
            by_count.publish("doc", b"%d" % i)
        for i in range(5):
            by_bytes.publish("doc", b"%04d" % i)  # 4 bytes each: two fit in 10
        by_bytes.publish("doc", b"x" * 11)  # can never fit: dropped itself

        await eventually(lambda: len(heard_count.messages) == 3 and len(heard_bytes.messages) == 2)
        assert heard_count.payloads("doc") == [b"7", b"8", b"9"]
        assert heard_bytes.payloads("doc") == [b"0003", b"0004"]
        assert by_count.dropped == 7 and by_count.published == 3
        assert by_bytes.dropped == 4 and by_bytes.published == 2


async def test_a_thousand_followed_documents_are_all_subscribed_again_after_a_restart(redis_server):  # noqa: F811
    follower, publisher = RedisBus(redis_server.url), RedisBus(redis_server.url)
    docs = [f"doc-{i}" for i in range(1000)]
    async with running(follower, publisher) as (heard, _):
        for doc in docs:
            follower.follow(doc)
        async with admin(redis_server) as client:
            with anyio.fail_after(5):
                while len(await client.pubsub_channels(PREFIX + b"*")) != 1000:
                    await anyio.sleep(0.01)

        await anyio.to_thread.run_sync(redis_server.restart)
        await eventually(lambda: heard.connects == 2 and follower.connected and publisher.connected, timeout=10)
        async with admin(redis_server) as client:
            # `connected` means every SUBSCRIBE took effect: nothing to wait for.
            assert len(await client.pubsub_channels(PREFIX + b"*")) == 1000
        for doc in ("doc-0", "doc-500", "doc-999"):
            publisher.publish(doc, doc.encode())
        await eventually(lambda: len(heard.messages) == 3)
        assert sorted(heard.messages) == [("doc-0", b"doc-0"), ("doc-500", b"doc-500"), ("doc-999", b"doc-999")]


async def test_check_passes_while_up_and_raises_while_down(redis_server):  # noqa: F811
    bus = RedisBus(redis_server.url)
    await bus.check()  # needs no run()
    redis_server.stop()
    with anyio.fail_after(3), pytest.raises(Exception):
        await bus.check()
    redis_server.start()
    await bus.check()


async def test_a_frozen_server_is_noticed_and_check_is_bounded(redis_server):  # noqa: F811
    """SIGSTOP: the socket stays open and silent, as when a machine vanishes."""
    bus = RedisBus(redis_server.url, dead_after=1.0)
    pid = redis_server.process.pid
    async with running(bus) as (heard,):
        bus.follow("doc")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            await eventually(lambda: not bus.connected, timeout=5)
            assert time.perf_counter() - started < 3
            with anyio.fail_after(4), pytest.raises(Exception):
                await bus.check()  # its own bound: 2 s
        finally:
            os.kill(pid, signal.SIGCONT)
        await eventually(lambda: bus.connected and heard.connects == 2, timeout=10)
        bus.publish("doc", b"thawed")
        await eventually(lambda: heard.payloads("doc") == [b"thawed"])


async def test_a_handler_that_raises_does_not_stop_the_bus(redis_server, caplog):  # noqa: F811
    bus = RedisBus(redis_server.url)
    handler = Recorder(fail_on=b"boom")
    async with admin(redis_server) as client, anyio.create_task_group() as tg:
        await tg.start(bus.run, handler)
        bus.follow("doc")
        await eventually(lambda: bus.connected)
        await wait_subscribers(client, PREFIX + b"doc", 1)
        for payload in (b"boom", b"fine", b"boom", b"still fine"):
            bus.publish("doc", payload)
        await eventually(lambda: handler.payloads("doc") == [b"fine", b"still fine"])
        assert bus.connected and bus.reconnects == 0 and handler.connects == 1
        assert bus.received == 4
        assert any("handler failed" in r.getMessage() and r.exc_info for r in caplog.records)
        tg.cancel_scope.cancel()


async def test_open_bus_url_channel_prefix_and_no_password_shown(redis_server, caplog):  # noqa: F811
    assert isinstance(open_bus(redis_server.url), RedisBus)
    port = redis_server.port
    prod = open_bus(f"redis://127.0.0.1:{port}/0?channel_prefix=prod%3A")
    staging = open_bus(f"redis://127.0.0.1:{port}/0?channel_prefix=staging:")
    prod_too = RedisBus(f"redis://127.0.0.1:{port}/0", channel_prefix="prod:")
    assert (prod.channel_prefix, staging.channel_prefix) == ("prod:", "staging:")
    assert "channel_prefix" not in prod._url  # redis-py never sees it

    async with admin(redis_server) as client, running(prod, staging, prod_too) as (heard_prod, heard_staging, heard_too):
        for bus in (prod, staging, prod_too):
            bus.follow("doc")
        await wait_subscribers(client, b"prod:doc", 2)
        await wait_subscribers(client, b"staging:doc", 1)
        assert await subscribers(client, PREFIX + b"doc") == 0

        prod.publish("doc", b"for prod")
        await eventually(lambda: heard_too.payloads("doc") == [b"for prod"] == heard_prod.payloads("doc"))
        # One connection's PUBLISHes arrive in order: staging, were it
        # subscribed to prod's channel, would hear the first before the second.
        await client.publish(b"prod:doc", b"prod only")
        await client.publish(b"staging:doc", b"staging only")
        await eventually(lambda: heard_staging.messages != [])
        assert heard_staging.messages == [("doc", b"staging only")]

        # A password: never in repr, snapshot or logs, whether it is right or wrong.
        await client.config_set("requirepass", "s3cret-pw")
        try:
            good = open_bus(f"redis://:s3cret-pw@127.0.0.1:{port}/0?channel_prefix=pw:")
            wrong = RedisBus(f"redis://default:wrong-pw@127.0.0.1:{port}/0")
            in_query = RedisBus(f"redis://127.0.0.1:{port}/0?password=s3cret-pw")
            async with anyio.create_task_group() as tg:
                await tg.start(good.run, Recorder())
                await tg.start(wrong.run, Recorder())
                await eventually(lambda: good.connected, timeout=5)
                await eventually(lambda: any("cannot connect" in r.getMessage() for r in caplog.records), timeout=5)
                assert not wrong.connected
                await good.check()
                tg.cancel_scope.cancel()
        finally:
            await client.config_set("requirepass", "")
        for bus in (good, wrong, in_query):
            assert "s3cret-pw" not in repr(bus) and "wrong-pw" not in repr(bus)
            assert "s3cret-pw" not in str(bus.snapshot())
        assert f"127.0.0.1:{port}/0" in repr(good) and f"127.0.0.1:{port}/0" in repr(in_query)  # all but the password
        assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text


async def test_cancelling_run_closes_its_connections(redis_server):  # noqa: F811
    async with admin(redis_server) as client:
        async def clients() -> int:
            return (await client.info("clients"))["connected_clients"]

        assert await clients() == 1  # the admin itself
        tasks_before = asyncio.all_tasks()
        gc.collect()  # what earlier tests left behind warns now, not inside the block below
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bus = RedisBus(redis_server.url)
            async with running(bus) as (heard,):
                bus.follow("doc")
                bus.publish("doc", b"opens the publishing connection")
                await eventually(lambda: bus.published == 1)
                assert await clients() == 3  # subscription + publishing + admin
            assert not bus.connected
            with anyio.fail_after(5):
                while await clients() != 1:
                    await anyio.sleep(0.01)
            assert asyncio.all_tasks() == tasks_before
            del bus
            gc.collect()
        unclosed = [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
        assert unclosed == [], [str(w.message) for w in unclosed]
