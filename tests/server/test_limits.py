"""Per-connection rate limits (4429) and latest-state `eph` relays.

The peer that breaks a bound is the one closed, never a bystander: a flooder
runs into its own token bucket, and what it relays to others is coalesced to
the latest `eph` per (document, sender), so it cannot fill their outboxes.
"""

from __future__ import annotations

import re

import anyio
import pytest
import websockets
from automerge import core

from bridge import Limits, create_app
from bridge.auth import Principal
from bridge.core.sync import DocSync
from bridge.hub import Hub
from bridge.core.ratelimit import ClientLedger, TokenBucket
from bridge.server.peer import EPH, Authenticated, Close, Connected, Pause, PeerSession, Poll, Send, StartTimer, TimerFired
from bridge.testing import serve_in_thread

from .. import crafting
from ..rawpeer import RawPeer, text_doc
from bridge.core.chunks import Bounds
from bridge.server.peer import WaitDurable

from .test_peer import answer_flush, drain, frame, open_doc, perform, running_hub, sync_until_quiet

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session_on(hub: Hub, clock: FakeClock, peer: str = "alice", **limits) -> PeerSession:
    """A session past its handshake (the hello is its first frame, and counts)."""
    session = PeerSession(hub, server_peer="bridge-test", limits=Limits(**limits), session_id=f"s-{peer}", clock=clock)
    session.handle(Connected())
    session.handle(frame(t="hello", v=[1], peer=peer))
    [welcome] = session.handle(Authenticated(Principal(peer)))
    assert isinstance(welcome, Send)
    return session


def retry_seconds(reason: str) -> float:
    """What the Python client reads from a 4429 reason (bridge/client.py)."""
    found = re.search(r"\d+(?:\.\d+)?", reason)
    assert found, reason
    return float(found.group())


# --- the bucket -----------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    bucket = TokenBucket(rate=2, burst=4)
    assert all(bucket.take(1, 0.0) for _ in range(4))
    assert not bucket.take(1, 0.0)
    assert not bucket.take(1, 0.4)  # 0.8 tokens
    assert bucket.take(1, 0.5)
    assert all(bucket.take(1, 100.0) for _ in range(4)), "never more than the burst saved up"
    assert not bucket.take(1, 100.0)
    assert not bucket.take(1, 99.0), "a clock going backwards refills nothing"
    assert TokenBucket(rate=4, burst=16).take(1_000_000, 0.0), "a cost above the burst costs the burst"
    assert TokenBucket(rate=200, burst=400).refill_seconds == 2
    assert TokenBucket(rate=1000, burst=10).refill_seconds == 1


def test_defaults_are_generous_and_documented():
    limits = Limits()
    assert limits.max_frames_per_second == 200 and limits.frame_burst == 400
    assert limits.max_bytes_per_second == 4 * 1024 * 1024 and limits.byte_burst == 16 * 1024 * 1024
    assert limits.byte_burst >= limits.max_frame_bytes, "one frame of the maximum size always fits a full bucket"
    assert "4429" in (Limits.__doc__ or "")


# --- sans-IO: the session ----------------------------------------------------------


async def test_frames_over_the_bucket_close_4429_with_the_retry_delay_and_nothing_more_is_handled():
    async with running_hub() as hub:
        clock = FakeClock()
        session = session_on(hub, clock, max_frames_per_second=10, frame_burst=5)
        for _ in range(4):  # the hello was the first of the burst of 5
            assert session.handle(frame(t="close", doc="x")) == []
        effects = session.handle(frame(t="close", doc="y"))
        assert effects == [Close(4429, "retry after 1 s: over 10 frames/s")]
        assert session.closed_with == effects[0]
        assert retry_seconds(effects[0].reason) == 1
        assert session.open_docs == [], "a rate-limited peer lets go of its documents"
        clock.now += 60
        assert session.handle(frame(t="open", doc="z")) == []
        assert session.handle(Poll()) == []
        assert "z" not in hub.loaded


async def test_opens_are_gated_but_every_frame_received_is_counted():
    async with running_hub() as hub:
        clock = FakeClock()
        session = session_on(hub, clock, max_frames_per_second=1, frame_burst=3)
        [subscribe] = session.handle(frame(t="open", doc="g"))  # gates: what follows is held
        assert session.handle(frame(t="eph", doc="g", data=b".")) == []
        [close] = session.handle(frame(t="eph", doc="g", data=b"."))
        assert close == Close(4429, "retry after 3 s: over 1 frames/s")


async def test_bytes_over_the_bucket_close_4429():
    async with running_hub() as hub:
        clock = FakeClock()
        session = session_on(hub, clock, max_bytes_per_second=1000, byte_burst=3000)
        assert session.handle(frame(t="close", doc="x", pad=b"." * 1500)) == []  # unknown fields are ignored
        clock.now += 0.5  # +500 bytes
        assert session.handle(frame(t="close", doc="x", pad=b"." * 1500)) == []
        [close] = session.handle(frame(t="close", doc="x", pad=b"." * 1500))
        assert close == Close(4429, "retry after 3 s: over 1000 bytes/s")
        assert retry_seconds(close.reason) == 3


async def test_under_the_rate_a_peer_is_never_closed():
    async with running_hub() as hub:
        clock = FakeClock()
        session = session_on(hub, clock, max_frames_per_second=10, frame_burst=2, max_bytes_per_second=10_000, byte_burst=1000)
        start = clock.now
        for i in range(1, 2001):  # 9 frames/s of ~800 bytes, for 222 s
            clock.now = start + i / 9
            assert session.handle(frame(t="close", doc="x", pad=b"." * 780)) == []
        assert session.closed_with is None and session.state == session.OPEN


async def test_rate_limits_can_be_switched_off():
    async with running_hub() as hub:
        session = session_on(hub, FakeClock(), max_frames_per_second=None, max_bytes_per_second=None)
        for _ in range(5000):
            assert session.handle(frame(t="close", doc="x")) == []


async def test_eph_flood_keeps_one_latest_eph_per_sender_and_never_closes_the_bystander():
    async with running_hub() as hub:
        clock = FakeClock()
        bystander = session_on(hub, clock, "bystander", max_outbox=3)
        alice = session_on(hub, clock, "alice", max_frames_per_second=None)
        carol = session_on(hub, clock, "carol", max_frames_per_second=None)
        for s in (bystander, alice, carol):
            await open_doc(s, hub, "room")
        for i in range(100):
            for sender, name in ((alice, b"a"), (carol, b"c")):
                effects = sender.handle(frame(t="eph", doc="room", data=name + b"%d" % i))
                assert all(isinstance(e, StartTimer) for e in effects), effects  # windows of their own
        # The first presence of the window went at once; the rest waits for its end.
        assert bystander.handle(Poll()) == [StartTimer(EPH, Limits().eph_interval)]
        assert [f["data"] for f in await drain(bystander) if f["t"] == "eph"] == [b"a0"]
        # At the end of the window: the latest of each sender, nothing in between.
        [again] = bystander.handle(TimerFired(EPH))
        assert again == StartTimer(EPH, Limits().eph_interval)
        assert not bystander.outbox.overflowed
        ephs = sorted((f for f in await drain(bystander) if f["t"] == "eph"), key=lambda f: f["from"])
        assert ephs == [
            {"t": "eph", "doc": "room", "from": "alice", "data": b"a99"},
            {"t": "eph", "doc": "room", "from": "carol", "data": b"c99"},
        ]
        # A quiet window ends the windows: the next presence goes at once.
        assert bystander.handle(TimerFired(EPH)) == []
        alice.handle(frame(t="eph", doc="room", data=b"now"))
        assert [f["data"] for f in await drain(bystander) if f["t"] == "eph"] == [b"now"]
        assert bystander.closed_with is None

        # A closed document's pending presence is dropped with it.
        alice.handle(frame(t="eph", doc="room", data=b"late"))
        bystander.handle(frame(t="close", doc="room"))
        bystander.handle(TimerFired(EPH))
        assert not any(f["t"] == "eph" for f in await drain(bystander))


async def test_an_eph_flooder_is_closed_4429_and_the_bystander_is_not():
    async with running_hub() as hub:
        clock = FakeClock()
        bystander = session_on(hub, clock, "bystander", max_outbox=5)
        flooder = session_on(hub, clock, "flooder", max_frames_per_second=50, frame_burst=100)
        await open_doc(bystander, hub, "room")
        await open_doc(flooder, hub, "room")
        closes = []
        for i in range(1000):
            closes += flooder.handle(frame(t="eph", doc="room", data=b"%d" % i))
            if closes:
                break
        assert closes == [Close(4429, "retry after 2 s: over 50 frames/s")]
        assert flooder not in hub.loaded["room"].subscribers
        assert bystander.handle(Poll()) == [StartTimer(EPH, Limits().eph_interval)]
        bystander.handle(TimerFired(EPH))  # the window's end: the flooder's latest
        assert not bystander.outbox.overflowed
        ephs = [f for f in await drain(bystander) if f["t"] == "eph"]
        assert len(ephs) == 1 and ephs[0]["from"] == "flooder"
        assert bystander.closed_with is None


# --- a client's allowance outlives its connections --------------------------------


def test_a_new_connection_of_a_client_starts_where_its_last_one_left_off():
    ledger = ClientLedger(frames=(10, 20))
    first = ledger.join("address:10.0.0.66", 0.0)
    assert all(first.frames.take(1, 0.0) for _ in range(20)) and not first.frames.take(1, 0.0)
    ledger.leave("address:10.0.0.66", first, 0.0)
    again = ledger.join("address:10.0.0.66", 0.5)
    assert again.frames.tokens == 5, "refilled for the time since, not reset"
    assert ledger.join("address:10.0.0.1", 0.5).frames.full(0.5), "another client is not charged"
    ledger.leave("address:10.0.0.66", again, 0.5)
    assert ledger.join("address:10.0.0.66", 2.5).frames.full(2.5), "after the retry delay: full again"
    assert ledger.snapshot()["owing"] == 1
    # Connections that owe nothing leave nothing behind.
    quiet = ClientLedger(frames=(10, 20))
    quiet.leave("k", quiet.join("k", 0.0), 0.0)
    assert quiet.snapshot() == {"clients": 0, "owing": 0, "pauses": 0, "paused_seconds": 0.0}


def test_a_connection_opened_while_another_floods_starts_as_empty_as_it():
    ledger = ClientLedger(frames=(10, 20))
    flooding = ledger.join("k", 0.0)
    assert all(flooding.frames.take(1, 0.0) for _ in range(20))
    second = ledger.join("k", 0.0)
    assert not second.frames.take(1, 0.0), "no fresh bucket for a second socket"
    assert ledger.join("other", 0.0).frames.full(0.0)


def test_parallel_connections_hand_on_the_emptiest_bucket():
    ledger = ClientLedger(frames=(1, 10), bytes_=(100, 1000))
    a, b = ledger.join("k", 0.0), ledger.join("k", 0.0)
    a.frames.take(8, 0.0)
    b.bytes.take(900, 0.0)
    ledger.leave("k", a, 0.0)
    ledger.leave("k", b, 0.0)
    c = ledger.join("k", 0.0)
    assert (c.frames.tokens, c.bytes.tokens) == (2, 100)


def test_the_loop_share_applies_only_while_another_client_is_connected():
    ledger = ClientLedger(loop=(0.5, 0.1))
    ledger.join("busy", 0.0)
    assert ledger.charge_loop("busy", 1.0, 0.0) == 0, "alone, a client may have the whole loop"
    ledger.join("bystander", 0.0)
    assert ledger.charge_loop("busy", 0.1, 0.0) == pytest.approx(0.2), "time nobody else wanted is not owed"
    assert ledger.charge_loop("busy", 0.9, 0.0) == pytest.approx(2.0), "1 s over at 0.5 s/s: 2 s of pause"
    assert ledger.charge_loop("bystander", 0.05, 0.0) == 0
    assert ledger.charge_loop("busy", 0.0, 1.0) == pytest.approx(1.0)
    ledger.leave("bystander", ledger.join("bystander", 1.0), 1.0)  # a second connection comes and goes
    assert ledger.contended
    assert ClientLedger().charge_loop("k", 10.0, 0.0) == 0, "no share: never paused"


class TickingClock(FakeClock):
    """Every look at the clock costs 1 ms: handling a frame takes time."""

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def session_from(hub: Hub, clock, address: str, ledger: ClientLedger, peer: str = "p", **limits):
    session = PeerSession(hub, server_peer="b", limits=Limits(**limits), clock=clock, address=address, ledger=ledger)
    session.handle(Connected())
    session.handle(frame(t="hello", v=[1], peer=peer))
    return session, session.handle(Authenticated(Principal(peer)))


async def test_a_client_closed_for_flooding_is_closed_again_at_its_next_welcome_until_it_waits():
    async with running_hub() as hub:
        clock = FakeClock()
        limits = dict(max_frames_per_second=10, frame_burst=20)
        ledger = ClientLedger.from_limits(Limits(**limits))
        flooder, [welcome] = session_from(hub, clock, "10.0.0.66", ledger, **limits)
        assert isinstance(welcome, Send)
        closes = []
        while not closes:
            closes = flooder.handle(frame(t="close", doc="x"))
        assert closes == [Close(4429, "retry after 2 s: over 10 frames/s")]
        # Reconnecting at once: closed at the welcome, told how long is left.
        clock.now += 0.5
        again, effects = session_from(hub, clock, "10.0.0.66", ledger, **limits)
        assert effects == [Close(4429, "retry after 2 s: rate limited, and reconnected too soon")]
        assert again.state == PeerSession.CLOSED
        clock.now += 1.0
        assert ledger.blocked_for("address:10.0.0.66", clock.now) == 1
        # A bystander from another address is welcomed meanwhile.
        bystander, [welcome] = session_from(hub, clock, "10.0.0.1", ledger, **limits)
        assert isinstance(welcome, Send)
        # Having waited the retry delay, the flooder is welcomed.
        clock.now += 0.5
        assert ledger.blocked_for("address:10.0.0.66", clock.now) == 0
        back, [welcome] = session_from(hub, clock, "10.0.0.66", ledger, **limits)
        assert isinstance(welcome, Send)


async def test_a_client_over_its_loop_share_is_paused_and_the_bystander_is_not():
    async with running_hub() as hub:
        clock = TickingClock()
        limits = dict(max_frames_per_second=None, max_loop_share=0.1, loop_burst=0.01)
        ledger = ClientLedger.from_limits(Limits(**limits))
        busy, _ = session_from(hub, clock, "10.0.0.66", ledger, **limits)
        # Alone on the server: never paused, however busy.
        assert all(busy.handle(frame(t="close", doc="x")) == [] for _ in range(50))
        bystander, _ = session_from(hub, clock, "10.0.0.1", ledger, **limits)
        effects = busy.handle(frame(t="close", doc="x"))
        [pause] = effects
        assert isinstance(pause, Pause) and 0 < pause.seconds < 0.1, "one frame's time over, not what it used alone"
        assert busy.state == PeerSession.OPEN, "paused, not closed"
        assert bystander.handle(frame(t="close", doc="x")) == []
        # What other tasks feed (a timer, a poll) never pauses: only the reader waits.
        assert busy.handle(Poll()) == []
        assert ledger.snapshot()["pauses"] == 1


# --- over a real socket -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = Limits(max_frames_per_second=20, frame_burst=40, max_outbox=20, flush_timeout=5.0)
    app = create_app(data_dir=tmp_path_factory.mktemp("data"), limits=limits, web_dir=None)
    with serve_in_thread(app) as running:
        yield running


async def test_a_flooder_is_closed_4429_while_a_bystander_keeps_syncing(server):
    bystander = await RawPeer.connect(server.ws_url, peer="bystander")
    doc = text_doc("shared")
    await bystander.sync_doc("shared", doc)

    flooder = await RawPeer.connect(server.ws_url, peer="flooder")
    theirs = core.Document()
    await flooder.sync_doc("shared", theirs)
    sync_data = DocSync(theirs).generate()[0]
    closed: list[websockets.ConnectionClosed] = []

    async def flood() -> None:
        with anyio.fail_after(10):
            try:
                for i in range(100_000):
                    if i % 2:
                        await flooder.send({"t": "sync", "doc": "shared", "data": sync_data})
                    else:
                        await flooder.send({"t": "eph", "doc": "shared", "data": b"cursor:%d" % i})
                    if i % 50 == 0:
                        await anyio.lowlevel.checkpoint()
                while True:
                    await flooder.ws.recv()
            except websockets.ConnectionClosed as exc:
                closed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(flood)
        # Meanwhile the bystander edits, syncs and flushes, round after round.
        for n in range(3):
            with doc.transaction() as tx:
                tx.put(core.ROOT, f"edit{n}", core.ScalarType.Int, n)
            await bystander.sync_doc("shared", doc)
            await bystander.send({"t": "flush", "id": n, "docs": {"shared": doc.get_heads()}})
            flushed = await bystander.recv_until(lambda f: f["t"] in ("flushed", "error") and f.get("id") == n)
            assert flushed == {"t": "flushed", "id": n, "docs": {"shared": doc.get_heads()}}

    [exc] = closed
    assert exc.rcvd is not None and exc.rcvd.code == 4429, exc
    assert exc.rcvd.reason.startswith("retry after 2 s: over 20 frames/s"), exc.rcvd.reason

    # The bystander is still connected and served after the flood.
    await bystander.send({"t": "flush", "id": 99, "docs": {"shared": doc.get_heads()}})
    flushed = await bystander.recv_until(lambda f: f["t"] == "flushed" and f["id"] == 99)
    assert flushed["docs"] == {"shared": doc.get_heads()}
    await bystander.send({"t": "bye"})
    assert await bystander.closed_with() == 1000


async def test_a_client_over_its_share_of_the_loop_is_slowed_not_closed_and_bystanders_go_on(tmp_path):
    """A flood of valid changes under the frame rate still costs the loop:
    past its share, the flooder's reads pause (it is not closed, and all it
    sent is accepted); bystanders on another address go on meanwhile."""
    limits = Limits(max_loop_share=0.002, loop_burst=0.002, flush_timeout=10.0)
    app = create_app(data_dir=tmp_path, limits=limits, web_dir=None)
    with serve_in_thread(app) as running:
        bystander = await RawPeer.connect(running.ws_url, peer="bystander")
        theirs = text_doc("bystander")
        await bystander.sync_doc("quiet", theirs)
        mallory = await RawPeer.connect(running.ws_url, peer="mallory", address="127.0.0.30")
        doc = core.Document()
        await mallory.sync_doc("busy", doc)
        ledger = app.state.ledger
        with anyio.fail_after(30):
            sent = 0
            while ledger.snapshot()["pauses"] == 0:
                # One new change per frame (Automerge's own sync would wait
                # for an answer before it sent more).
                with doc.transaction() as tx:
                    tx.put(core.ROOT, f"k{sent % 20}", core.ScalarType.Str, "x" * 500)
                sent += 1
                await mallory.send({"t": "sync", "doc": "busy",
                                    "data": crafting.sync_message([doc.get_last_local_change().bytes], heads=doc.get_heads())})
                if sent % 10 == 0:  # the bystander edits and flushes meanwhile
                    with theirs.transaction() as tx:
                        tx.put(core.ROOT, "n", core.ScalarType.Int, sent)
                    await bystander.sync_doc("quiet", theirs)
                    await bystander.send({"t": "flush", "id": sent, "docs": {"quiet": theirs.get_heads()}})
                    await bystander.recv_until(lambda f: f["t"] == "flushed" and f["id"] == sent)
        await mallory.send({"t": "flush", "id": 1, "docs": {"busy": doc.get_heads()}})
        flushed = await mallory.recv_until(lambda f: f["t"] in ("flushed", "error") and f.get("id") == 1, timeout=30)
        assert flushed == {"t": "flushed", "id": 1, "docs": {"busy": doc.get_heads()}}, "slowed, and all it sent is kept"
        assert ledger.snapshot()["clients"] == 2


# --- flushes in flight, documents created, documents full --------------------------


async def test_flushes_in_flight_are_bounded_per_connection_and_free_again_when_answered():
    async with running_hub() as hub:
        session = session_on(hub, FakeClock(), max_flushes_in_flight=2, flush_timeout=0.05)
        await open_doc(session, hub, "f")
        unknown = {"f": [b"\x07" * 32]}  # heads nobody has: each waits until its timeout
        [first] = session.handle(frame(t="flush", id=1, docs=unknown))
        [second] = session.handle(frame(t="flush", id=2, docs=unknown))
        assert session.handle(frame(t="flush", id=3, docs=unknown)) == []
        [refused] = [f for f in await drain(session) if f["t"] == "error"]
        assert (refused["code"], refused["id"]) == ("quota", 3) and "at most 2 flushes" in refused["msg"]
        await answer_flush(session, first)
        # One answered (timed out): room for one more, and the session lives.
        [again] = session.handle(frame(t="flush", id=4, docs={"f": []}))
        assert isinstance(again, WaitDurable) and session.state == PeerSession.OPEN
        await answer_flush(session, second)
        await answer_flush(session, again)
        codes = [(f.get("code"), f.get("id")) for f in await drain(session) if f["t"] in ("error", "flushed")]
        assert codes == [("flush_timeout", 1), ("flush_timeout", 2), (None, 4)]


async def test_documents_created_per_hour_are_charged_to_the_client_and_the_rest_is_quota():
    async with running_hub(docs_created_per_hour=2) as hub:
        mallory = PeerSession(hub, server_peer="b", limits=Limits(), address="10.0.0.66")
        alice = PeerSession(hub, server_peer="b", limits=Limits(), address="10.0.0.1")
        for session in (mallory, alice):
            session.handle(Connected())
            session.handle(frame(t="hello", v=[1], peer="same-name"))
            session.handle(Authenticated(Principal("same-name")))
        for doc in ("m1", "m2", "m3"):
            await perform(mallory, hub, mallory.handle(frame(t="open", doc=doc)))
        errors = [(f["code"], f["doc"]) for f in await drain(mallory) if f["t"] == "error"]
        assert errors == [("quota", "m3")], "the third new document in the hour is refused"
        assert "m3" not in hub.loaded and mallory.state == PeerSession.OPEN
        # Existing documents cost nothing, and another address has its own allowance.
        await perform(mallory, hub, mallory.handle(frame(t="open", doc="m1")))
        await perform(alice, hub, alice.handle(frame(t="open", doc="a1")))
        await perform(alice, hub, alice.handle(frame(t="open", doc="m2")))
        assert not [f for f in await drain(alice) if f["t"] == "error"]
        assert sorted(alice.open_docs) == ["a1", "m2"]


async def test_a_document_at_max_doc_ops_refuses_more_with_quota_and_keeps_what_it_has():
    async with running_hub(bounds=Bounds(max_doc_ops=50)) as hub:
        session = session_on(hub, FakeClock(), max_frames_per_second=None)
        await open_doc(session, hub, "small")
        writer = text_doc("x" * 40)  # 42 ops: fits
        remote = DocSync(writer)
        others = await sync_until_quiet(session, hub, "small", remote)
        assert not [f for f in others if f["t"] == "error"]
        with writer.transaction() as tx:
            text = writer.get(core.ROOT, "text")[1]
            tx.splice_text(text, 0, 0, "y" * 20)  # would make 62
        others = await sync_until_quiet(session, hub, "small", remote)
        [full] = [f for f in others if f["t"] == "error"]
        assert full["code"] == "quota" and "document is full" in full["msg"]
        assert core.extract(hub.loaded["small"].doc) == {"text": "x" * 40}
        assert session.state == PeerSession.OPEN
