"""PeerSession without sockets, the way h11 tests its Connection.

A real Hub on a MemoryStore (its group commit running), a real Automerge peer
(``DocSync`` on the other side), and the test as the pump: it feeds events,
performs the effects the session returns, and drains the session's outbox.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import anyio
import msgspec
import pytest
from automerge import core

from bridge.auth import Principal
from bridge.config import Limits
from bridge.core.binding import CoreFailure
from bridge.core.outbox import OutboxOverflow
from bridge.core.sync import DocSync
from bridge.hub import DocNotFound, DocUnavailable, Hub
from bridge.errors import QuotaExceeded
from bridge.server import peer as p
from bridge.server.peer import (
    HANDSHAKE,
    SAVED,
    Authenticate,
    Authenticated,
    CancelTimer,
    Close,
    Connected,
    Disconnected,
    DocOpened,
    DocOpenFailed,
    FlushDurable,
    FlushTimedOut,
    FrameReceived,
    OutboxOverflowed,
    PeerSession,
    Poll,
    RecoveryFinished,
    Send,
    StartTimer,
    Subscribe,
    TimerFired,
    WaitDurable,
    WaitForRecovery,
)

from ..rawpeer import text_doc
from bridge.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio

_enc = msgspec.msgpack.encode
_dec = msgspec.msgpack.decode


@contextlib.asynccontextmanager
async def running_hub(**kwargs) -> AsyncIterator[Hub]:
    hub = Hub(MemoryStore(), idle_unload_after=60, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        yield hub
        tg.cancel_scope.cancel()


def frame(**fields) -> FrameReceived:
    return FrameReceived(_enc(fields))


def new_session(hub: Hub, **limits) -> PeerSession:
    return PeerSession(hub, server_peer="bridge-test", limits=Limits(**limits), session_id="s-1")


def connected(hub: Hub, peer: str = "alice", **limits) -> PeerSession:
    """A session past its handshake."""
    session = new_session(hub, **limits)
    session.handle(Connected())
    session.handle(frame(t="hello", v=[1], peer=peer))
    [welcome] = session.handle(Authenticated(Principal(peer)))
    assert isinstance(welcome, Send)
    return session


async def drain(session: PeerSession) -> list[dict]:
    """Everything the writer would send now, decoded (sync messages pulled)."""
    sent: list[dict] = []
    if session.outbox.idle:
        return sent
    with anyio.fail_after(5), anyio.CancelScope() as scope:

        async def send(data: bytes) -> None:
            sent.append(_dec(data))
            if session.outbox.idle:
                scope.cancel()

        def generate(doc_id: str) -> list[bytes]:
            frames = session.sync_frames(doc_id)
            if not frames and session.outbox.idle:
                scope.cancel()
            return frames

        await session.outbox.pump(send, generate)
    return sent


async def perform(session: PeerSession, hub: Hub, effects: list) -> list:
    """Perform the gating effects the way the pump does; return the others."""
    rest = []
    for effect in effects:
        if isinstance(effect, Subscribe):
            try:
                live = await hub.subscribe(effect.doc_id, session, creator=effect.creator)
            except (DocNotFound, DocUnavailable, QuotaExceeded) as exc:
                rest += await perform(session, hub, session.handle(DocOpenFailed(effect.doc_id, exc)))
            else:
                rest += await perform(session, hub, session.handle(DocOpened(effect.doc_id, live)))
        elif isinstance(effect, WaitForRecovery):
            await effect.done.wait()
            rest += await perform(session, hub, session.handle(RecoveryFinished(effect)))
        else:
            rest.append(effect)
    return rest


async def open_doc(session: PeerSession, hub: Hub, doc_id: str) -> list[dict]:
    assert await perform(session, hub, session.handle(frame(t="open", doc=doc_id))) == []
    return await drain(session)


async def sync_until_quiet(session: PeerSession, hub: Hub, doc_id: str, remote: DocSync) -> list[dict]:
    """Exchange sync messages until neither side has anything to say; return
    the other frames sent meanwhile."""
    others: list[dict] = []
    with anyio.fail_after(5):
        while True:
            quiet = True
            for data in remote.generate():
                quiet = False
                assert await perform(session, hub, session.handle(frame(t="sync", doc=doc_id, data=data))) == []
            for sent in await drain(session):
                if sent["t"] == "sync":
                    quiet = False
                    remote.receive(sent["data"])
                else:
                    others.append(sent)
            if quiet:
                return others


async def answer_flush(session: PeerSession, wait: WaitDurable) -> list:
    """What the pump does with a WaitDurable."""
    with anyio.move_on_after(wait.timeout):
        for doc_id, heads in wait.heads.items():
            await wait.docs[doc_id].wait_durable(heads)
        return session.handle(FlushDurable(wait))
    return session.handle(FlushTimedOut(wait))




# --- handshake ------------------------------------------------------------------


async def test_handshake_ok():
    async with running_hub() as hub:
        session = new_session(hub, handshake_timeout=3.0)
        assert session.handle(Connected()) == [StartTimer(HANDSHAKE, 3.0)]
        effects = session.handle(frame(t="hello", v=[1, 2], peer="alice", token="t0k", caps=[], shiny=True))
        # The handshake deadline keeps running through authentication.
        [auth] = effects
        assert isinstance(auth, Authenticate) and auth.hello.token == "t0k"
        assert session.state == PeerSession.AUTHENTICATING

        [send] = session.handle(Authenticated(Principal("alice@example")))
        welcome = _dec(send.frame)
        assert welcome == {
            "t": "welcome", "v": 1, "peer": "bridge-test", "session": "s-1", "caps": [],
            "limits": {"max_frame_bytes": Limits().max_frame_bytes, "max_docs": Limits().max_docs_per_connection},
            "identity": "alice@example", "expires_in": None,
        }
        assert session.state == PeerSession.OPEN
        assert session.principal == Principal("alice@example") and session.peer == "alice"
        assert session.handle(TimerFired(HANDSHAKE)) == [], "a late handshake timer is ignored"
        assert session.outbox.idle


@pytest.mark.parametrize(
    "first, reason",
    [
        (_enc({"t": "open", "doc": "x"}), "first frame must be hello"),
        (_enc({"t": "hello", "v": [99], "peer": "future"}), "no common protocol version"),
        (b"\xc1\xc1", "malformed MessagePack"),
        (_enc([1, 2, 3]), "invalid frame"),
    ],
    ids=["open-first", "future-version", "malformed", "not-a-map"],
)
async def test_handshake_bad_first_frame_closes_4400(first, reason):
    async with running_hub() as hub:
        session = new_session(hub)
        session.handle(Connected())
        [close] = session.handle(FrameReceived(first))
        assert close.code == 4400 and reason in close.reason
        assert session.closed_with == close
        assert session.handle(frame(t="hello", v=[1], peer="late")) == [], "nothing after the close"


async def test_handshake_refused_by_authentication_closes_4401():
    async with running_hub() as hub:
        session = new_session(hub)
        session.handle(Connected())
        session.handle(frame(t="hello", v=[1], peer="p", token="wrong"))
        assert session.handle(Authenticated(None)) == [Close(4401, "unauthorized")]


async def test_handshake_timeout_closes_4408():
    async with running_hub() as hub:
        session = new_session(hub)
        session.handle(Connected())
        assert session.handle(TimerFired(HANDSHAKE)) == [Close(4408, "no handshake in time")]


async def test_the_handshake_deadline_covers_authentication_and_traffic_does_not_extend_it():
    async with running_hub() as hub:
        session = new_session(hub)
        session.handle(Connected())
        session.handle(frame(t="hello", v=[1], peer="slow-auth"))  # the hook has not answered yet
        assert session.handle(TimerFired(HANDSHAKE)) == [Close(4408, "no handshake in time")]


async def test_a_first_frame_over_max_hello_bytes_closes_1009():
    async with running_hub() as hub:
        session = new_session(hub, max_hello_bytes=100)
        session.handle(Connected())
        [close] = session.handle(frame(t="hello", v=[1], peer="x" * 200))
        assert close.code == 1009 and "exceeds 100" in close.reason


async def test_frames_sent_during_authentication_wait_for_it():
    async with running_hub() as hub:
        session = new_session(hub)
        session.handle(Connected())
        session.handle(frame(t="hello", v=[1], peer="eager"))
        assert session.handle(frame(t="open", doc="pipelined")) == [], "held while authenticating"
        effects = session.handle(Authenticated(Principal("eager")))
        assert isinstance(effects[0], Send) and effects[1:] == [Subscribe("pipelined", "address:?")]


async def test_second_hello_closes_4400():
    async with running_hub() as hub:
        session = connected(hub)
        [close] = session.handle(frame(t="hello", v=[1], peer="again"))
        assert close == Close(4400, "hello after the handshake")


# --- documents ------------------------------------------------------------------


async def test_open_subscribes_then_announces_durable_heads_and_syncs():
    async with running_hub() as hub:
        session = connected(hub)
        assert session.handle(frame(t="open", doc="fresh")) == [Subscribe("fresh", "address:?")]
        live = await hub.subscribe("fresh", session)
        assert session.handle(DocOpened("fresh", live)) == []
        assert session in live.subscribers and session.open_docs == ["fresh"]
        sent = await drain(session)
        assert {"t": "saved", "doc": "fresh", "heads": []} in sent
        assert [f["t"] for f in sent].count("sync") == 1, "the first sync message, pulled from the dirty document"


async def test_open_errors_are_doc_scoped():
    async with running_hub(create_on_open=False) as hub:
        session = connected(hub, max_docs_per_connection=1)
        assert session.handle(frame(t="open", doc="bad id")) == []
        assert session.handle(frame(t="open", doc="")) == []
        assert session.handle(frame(t="open", doc="missing")) == [Subscribe("missing", "address:?")]
        assert session.handle(DocOpenFailed("missing", DocNotFound("missing"))) == []
        assert session.handle(frame(t="open", doc="broken")) == [Subscribe("broken", "address:?")]
        assert session.handle(DocOpenFailed("broken", DocUnavailable("broken"))) == []
        codes = [(f["code"], f.get("doc")) for f in await drain(session)]
        assert codes == [("bad_doc_id", "bad id"), ("bad_doc_id", ""), ("not_found", "missing"), ("unavailable", "broken")]

        live = await hub.subscribe("exists", session, create=True)
        session.handle(frame(t="open", doc="exists"))
        session.handle(DocOpened("exists", live))
        assert session.handle(frame(t="open", doc="one-too-many")) == []
        assert [f["code"] for f in await drain(session) if f["t"] == "error"] == ["too_many_docs"]


async def test_sync_from_a_real_peer_then_flush_is_answered_once_durable():
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "shared")
        mine = text_doc("hello")
        sent = await sync_until_quiet(session, hub, "shared", DocSync(mine))
        live = hub.loaded["shared"]
        assert live.doc.get_heads() == mine.get_heads() and core.extract(live.doc) == {"text": "hello"}

        [wait] = session.handle(frame(t="flush", id=7, docs={"shared": mine.get_heads()}))
        assert isinstance(wait, WaitDurable) and wait.request_id == 7 and wait.docs == {"shared": live}
        assert await answer_flush(session, wait) == []
        sent += await drain(session)
        assert {"t": "flushed", "id": 7, "docs": {"shared": mine.get_heads()}} in sent
        # The origin's acknowledgement came at once, not coalesced.
        assert {"t": "saved", "doc": "shared", "heads": mine.get_heads()} in sent


async def test_saved_is_immediate_for_the_origin_and_coalesced_for_others():
    async with running_hub() as hub:
        alice, bob = connected(hub, "alice", saved_interval=0.25), connected(hub, "bob", saved_interval=0.25)
        wakeups = []
        bob.wakeup = lambda: wakeups.append(1)
        await open_doc(alice, hub, "hot")
        await open_doc(bob, hub, "hot")
        doc = text_doc("x")
        alice_got = await sync_until_quiet(alice, hub, "hot", DocSync(doc))
        await hub.loaded["hot"].wait_durable(doc.get_heads())

        alice_got += await drain(alice)
        assert {"t": "saved", "doc": "hot", "heads": doc.get_heads()} in alice_got
        assert wakeups == [1], "bob's session asked the pump for a timer"
        assert bob.handle(Poll()) == [StartTimer(SAVED, 0.25)]
        assert not any(f["t"] == "saved" for f in await drain(bob)), "not before the interval"
        assert bob.handle(TimerFired(SAVED)) == []
        assert {"t": "saved", "doc": "hot", "heads": doc.get_heads()} in await drain(bob)


async def test_flush_answers_the_documents_captured_when_it_was_read():
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "a")
        await open_doc(session, hub, "b")
        live_b = hub.loaded["b"]
        [wait] = session.handle(frame(t="flush", id=5, docs={"a": [], "b": []}))
        session.handle(frame(t="close", doc="b"))
        assert session not in live_b.subscribers and session.open_docs == ["a"]
        await answer_flush(session, wait)
        assert {"t": "flushed", "id": 5, "docs": {"a": [], "b": []}} in await drain(session)


async def test_flush_errors_not_open_and_timeout():
    async with running_hub() as hub:
        session = connected(hub, flush_timeout=0.05)
        assert session.handle(frame(t="flush", id=3, docs={"never-opened": []})) == []
        errors = [(f["code"], f["id"]) for f in await drain(session)]
        await open_doc(session, hub, "ft")
        [wait] = session.handle(frame(t="flush", id=4, docs={"ft": [b"\x07" * 32]}))
        assert await answer_flush(session, wait) == []
        errors += [(f["code"], f["id"]) for f in await drain(session) if f["t"] == "error"]
        assert errors == [("not_open", 3), ("flush_timeout", 4)]


async def test_bad_sync_is_an_error_frame_and_the_session_lives():
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "garbage")
        assert session.handle(frame(t="sync", doc="garbage", data=b"definitely not automerge")) == []
        assert session.handle(frame(t="sync", doc="never-opened", data=b"x")) == []
        errors = [(f["code"], f["doc"]) for f in await drain(session) if f["t"] == "error"]
        assert errors == [("bad_sync", "garbage"), ("not_open", "never-opened")]
        assert hub.loaded["garbage"].doc.get_heads() == []
        await sync_until_quiet(session, hub, "garbage", DocSync(text_doc("fine after all")))
        assert core.extract(hub.loaded["garbage"].doc) == {"text": "fine after all"}


async def test_close_of_an_unopened_doc_is_quiet_and_close_of_an_open_one_unsubscribes():
    async with running_hub() as hub:
        session = connected(hub)
        assert session.handle(frame(t="close", doc="never-opened")) == []
        assert await drain(session) == []
        await open_doc(session, hub, "c")
        live = hub.loaded["c"]
        assert session.handle(frame(t="close", doc="c")) == []
        assert session not in live.subscribers and session.outbox.idle
        assert session.handle(frame(t="eph", doc="c", data=b"x")) == []
        assert [f["code"] for f in await drain(session)] == ["not_open"]


async def test_bye_closes_1000_and_lets_go_of_every_document():
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "x")
        await open_doc(session, hub, "y")
        assert session.handle(frame(t="bye")) == [Close(1000, "bye")]
        assert session.open_docs == [] and not hub.loaded["x"].subscribers and not hub.loaded["y"].subscribers
        assert session.handle(Disconnected()) == []


async def test_ephemeral_is_relayed_with_the_peer_name():
    async with running_hub() as hub:
        alice, bob = connected(hub, "alice"), connected(hub, "bob")
        await open_doc(alice, hub, "eph")
        await open_doc(bob, hub, "eph")
        assert alice.handle(frame(t="eph", doc="eph", data=b"cursor:3")) == []
        assert {"t": "eph", "doc": "eph", "from": "alice", "data": b"cursor:3"} in await drain(bob)
        assert not any(f["t"] == "eph" for f in await drain(alice))


async def test_outbox_overflow_closes_4409():
    async with running_hub() as hub:
        session = connected(hub, max_outbox=3)
        for _ in range(3):
            assert session.handle(frame(t="sync", doc="nope", data=b"x")) == []
        assert session.handle(frame(t="sync", doc="nope", data=b"x")) == [Close(4409, "too slow to keep up; reconnect and resync")]


async def test_a_peer_whose_own_backlog_overflows_is_closed_4409_through_the_writer():
    # Its own answers pile up (one error per bad request); others' presence
    # never does (the latest per sender only: tests/server/test_limits.py).
    async with running_hub() as hub:
        slow = connected(hub, "slow", max_outbox=2)
        await open_doc(slow, hub, "room")
        effects = [slow.handle(frame(t="open", doc="bad id!")) for _ in range(3)]
        assert effects[:2] == [[], []]
        assert effects[2] == [Close(4409, "too slow to keep up; reconnect and resync")], "the session sees it first"
        assert slow not in hub.loaded["room"].subscribers


async def test_overflow_the_writer_notices_closes_4409():
    async with running_hub() as hub:
        slow = connected(hub, "slow", max_outbox=2)
        for _ in range(3):
            slow.outbox.push(b"x")  # queued outside handle, as a pump could
        with pytest.raises(OutboxOverflow):
            await drain(slow)
        assert slow.handle(OutboxOverflowed()) == [Close(4409, "too slow to keep up; reconnect and resync")]


# --- recovery -----------------------------------------------------------------------


async def test_sync_during_a_reload_waits_for_it_and_frames_behind_it_too():
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "r")
        live = hub.loaded["r"]
        remote = DocSync(text_doc("after the reload"))
        [data] = remote.generate()

        live.recovering = reloading = anyio.Event()  # as Hub.damaged does
        [wait] = session.handle(frame(t="sync", doc="r", data=data))
        assert isinstance(wait, WaitForRecovery) and wait.retry is not None and wait.done is reloading
        assert session.handle(frame(t="flush", id=1, docs={"r": []})) == [], "held behind the reload"

        live.recovering = None
        reloading.set()
        [flush] = session.handle(RecoveryFinished(wait))
        assert isinstance(flush, WaitDurable) and flush.request_id == 1
        await sync_until_quiet(session, hub, "r", remote)
        assert core.extract(live.doc) == {"text": "after the reload"}


async def test_core_failure_reloads_the_document_and_costs_the_sender_a_bad_sync(monkeypatch):
    async with running_hub() as hub:
        session = connected(hub)
        await open_doc(session, hub, "fragile")

        def explode(self, data, **kwargs):
            raise CoreFailure("panic")

        monkeypatch.setattr(DocSync, "receive", explode)
        effects = session.handle(frame(t="sync", doc="fragile", data=b"whatever"))
        monkeypatch.undo()
        [wait] = effects
        assert isinstance(wait, WaitForRecovery) and wait.retry is None
        assert await perform(session, hub, [wait]) == []
        assert hub.recoveries == 1 and hub.loaded["fragile"].recovering is None
        sent = await drain(session)
        assert {"t": "error", "code": "bad_sync", "msg": "the sync message could not be applied", "doc": "fragile"} in sent
        await sync_until_quiet(session, hub, "fragile", DocSync(text_doc("resynced")))


async def test_an_answer_nobody_asked_for_is_a_bug():
    async with running_hub() as hub:
        session = connected(hub)
        live = await hub.subscribe("x", session)
        with pytest.raises(RuntimeError):
            session.handle(DocOpened("x", live))


async def test_every_event_and_effect_is_exported():
    assert {"Connected", "FrameReceived", "TimerFired", "Authenticated", "DocOpened", "DocOpenFailed", "FlushDurable",
            "FlushTimedOut", "RecoveryFinished", "OutboxOverflowed", "Poll", "Disconnected"} <= set(dir(p))
