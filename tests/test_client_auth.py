"""The Python client's side of per-document authorization (issue 10): token
providers, refresh before expiry (``auth``), the one retry after 4401,
``opened`` and read-only documents, access errors.

First against :class:`AuthFake`, a scripted protocol v1 server whose tokens
and answers each test chooses (what the client does, frame by frame), then
against the real bridge with token auth on (``TokenAuth`` and ``mint``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import anyio
import msgspec
import pytest
from automerge import core
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.sync.server import ServerConnection

from bridge import create_app
from bridge.client import BridgeClient, refresh_delay
from bridge.core.chunks import Bounds, parse_sync_message
from bridge.core.sync import DocSync
from bridge.errors import ConnectionClosed, Forbidden, NotFound, QuotaExceeded, ReadOnly
from bridge.testing import serve_in_thread

from .test_client_connection import FakeBridge, encode, seeded
from .waiting import eventually, nothing_happens_for

pytestmark = pytest.mark.anyio


class AuthFake(FakeBridge):
    """A :class:`FakeBridge` that checks tokens as the contract says.

    ``accept(token)`` judges the hello's and each ``auth``'s token (refused:
    close 4401). With ``expires_in`` the welcome says so and the connection
    closes 4401 that long after the latest accepted token unless an ``auth``
    came. ``access[doc]`` is what ``opened`` says and the fake enforces
    ("write" if absent; None: no ``opened`` at all, as older servers): a sync
    carrying changes to a "read" document gets ``error read_only`` and nothing
    of it is applied, a flush of "read" documents is answered at once.
    ``downgrade_on_flush``: documents whose access becomes "read" (a new
    ``opened``) when a flush for them arrives, as an ``auth`` refresh could do
    while changes are on their way (once); ``grant_on_auth``: documents whose
    access becomes "write" at the next accepted ``auth``. ``refuse[doc]``
    answers an open with that error code."""

    def __init__(
        self,
        *,
        accept: Callable[[str | None], bool] = lambda token: True,
        expires_in: float | None = None,
        access: dict[str, str | None] | None = None,
        downgrade_on_flush: set[str] = frozenset(),
        grant_on_auth: set[str] = frozenset(),
        refuse: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.accept = accept
        self.expires_in = expires_in
        self.access = access or {}
        self.downgrade_on_flush = set(downgrade_on_flush)
        self.grant_on_auth = set(grant_on_auth)
        self.refuse = refuse or {}
        self.hello_tokens: list[str | None] = []
        self.auths: list[tuple[float, str]] = []  # (monotonic time, token)
        self.welcomed_at: list[float] = []
        self.closes: list[tuple[int, str]] = []  # what the fake closed with
        self.errors_sent: list[str] = []  # codes of the error frames sent

    def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        ws.close(code, reason)

    def _handler(self, ws: ServerConnection) -> None:
        n = self._count_connection()
        try:
            hello = self._read_hello(ws)
            token = hello.get("token")
            self.hello_tokens.append(token)
            if not self.accept(token):
                self._close(ws, 4401, "unauthorized")
                return
            welcome = {"t": "welcome", "v": 1, "peer": hello["peer"], "session": f"s{n}", "caps": [], "limits": {}}
            welcome |= {"identity": f"id-{token}", "expires_in": self.expires_in}
            ws.send(encode(welcome))
            self.welcomed_at.append(time.monotonic())
            expires = None if self.expires_in is None else time.monotonic() + self.expires_in
            self.after_welcome(n, ws)
            syncs: dict[str, DocSync] = {}
            while True:
                try:
                    raw = ws.recv(timeout=None if expires is None else max(0.0, expires - time.monotonic()))
                except TimeoutError:
                    self._close(ws, 4401, "token expired")
                    return
                frame = msgspec.msgpack.decode(raw)
                if frame["t"] == "auth":
                    self.auths.append((time.monotonic(), frame["token"]))
                    if not self.accept(frame["token"]):
                        self._close(ws, 4401, "refused token")
                        return
                    if self.expires_in is not None:
                        expires = time.monotonic() + self.expires_in
                    with self._lock:
                        for doc_id in sorted(self.grant_on_auth):
                            self.access[doc_id] = "write"
                            ws.send(encode({"t": "opened", "doc": doc_id, "access": "write"}))
                        self.grant_on_auth.clear()
                    continue
                with self._lock:
                    self._answer(ws, frame, syncs)
        except WsClosed:
            pass

    def _answer(self, ws: ServerConnection, frame: dict, syncs: dict[str, DocSync]) -> None:
        kind, doc_id = frame["t"], frame.get("doc")
        if kind == "open" and doc_id in self.refuse:
            ws.send(encode({"t": "error", "code": self.refuse[doc_id], "msg": "refused by the fake", "doc": doc_id}))
            return
        if kind == "open" and (access := self.access.get(doc_id, "write")) is not None:
            ws.send(encode({"t": "opened", "doc": doc_id, "access": access}))
        if kind == "flush":
            for doc_id in set(frame["docs"]) & self.downgrade_on_flush:
                self.downgrade_on_flush.discard(doc_id)
                self.access[doc_id] = "read"
                ws.send(encode({"t": "opened", "doc": doc_id, "access": "read"}))
        if kind == "sync" and self._enforced(doc_id) == "read" and parse_sync_message(frame["data"], Bounds()).chunks:
            self.errors_sent.append("read_only")
            ws.send(encode({"t": "error", "code": "read_only", "msg": "read-only", "doc": doc_id}))
            return
        if kind == "flush" and all(self._enforced(d) == "read" for d in frame["docs"]):
            # A reader's flush is answered at once with what is durable.
            ws.send(encode({"t": "flushed", "id": frame["id"], "docs": {d: self.doc(d).get_heads() for d in frame["docs"]}}))
            return
        super()._answer(ws, frame, syncs)

    def _enforced(self, doc_id: str) -> str | None:
        return self.access.get(doc_id, "write")


class Provider:
    """A token provider handing out ``tokens`` in turn (the last one again
    when they run out), sync or async."""

    def __init__(self, *tokens: str, is_async: bool = False) -> None:
        self.tokens = list(tokens)
        self.calls = 0
        self.is_async = is_async

    def _next(self) -> str:
        self.calls += 1
        return self.tokens[min(self.calls, len(self.tokens)) - 1]

    def __call__(self):
        if not self.is_async:
            return self._next()

        async def later() -> str:
            await anyio.sleep(0)
            return self._next()

        return later()


# --- token providers ----------------------------------------------------------


@pytest.mark.both_backends
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_provider_is_asked_at_each_connect(is_async):
    fake = AuthFake(after_welcome=lambda n, ws: ws.close(1001, "restarting") if n == 1 else None)
    provider = Provider("t1", "t2", is_async=is_async)
    with fake.running() as url:
        async with BridgeClient(url, token=provider, backoff_initial=0.01) as client:
            await eventually(lambda: client.connections == 2 and client.online, timeout=5)
            assert client.session == "s2" and client.identity == "id-t2"
    assert fake.hello_tokens == ["t1", "t2"]
    assert provider.calls == 2
    assert not fake.auths  # no expiry announced: nothing to refresh


@pytest.mark.both_backends
async def test_a_static_token_goes_in_the_hello():
    fake = AuthFake(accept=lambda token: token == "sesame")
    with fake.running() as url:
        async with BridgeClient(url, token="sesame") as client:
            await client.wait_online(timeout=5)
            assert client.token == "sesame"
    assert fake.hello_tokens == ["sesame"]


@pytest.mark.both_backends
async def test_4401_with_a_provider_reconnects_once_with_a_fresh_token():
    fake = AuthFake(accept=lambda token: token == "good")
    provider = Provider("stale", "good")
    with fake.running() as url:
        async with BridgeClient(url, token=provider, backoff_initial=0.01) as client:
            await client.wait_online(timeout=5)
            doc = await client.open("after-retry")
            assert doc.synced and client.failure is None
    assert fake.hello_tokens == ["stale", "good"]


@pytest.mark.both_backends
async def test_4401_again_with_the_fresh_token_is_fatal():
    fake = AuthFake(accept=lambda token: False)
    provider = Provider("bad-1", "bad-2", "bad-3")
    with fake.running() as url:
        async with BridgeClient(url, token=provider, backoff_initial=0.01) as client:
            with pytest.raises(ConnectionClosed) as info:
                await client.wait_online(timeout=5)
            assert info.value.close_code == 4401
            assert client.status == "failed" and client.failure is info.value
            with pytest.raises(ConnectionClosed):
                await client.open("x")
            await nothing_happens_for(0.3)
    assert fake.hello_tokens == ["bad-1", "bad-2"]  # one retry, no loop
    assert provider.calls == 2


@pytest.mark.both_backends
async def test_4401_with_a_static_token_is_fatal_at_once():
    fake = AuthFake(accept=lambda token: False)
    with fake.running() as url:
        async with BridgeClient(url, token="nope", backoff_initial=0.01) as client:
            with pytest.raises(ConnectionClosed) as info:
                await client.wait_online(timeout=5)
            assert info.value.close_code == 4401
            await nothing_happens_for(0.3)
    assert fake.hello_tokens == ["nope"]


@pytest.mark.both_backends
async def test_a_failing_provider_is_asked_again_later():
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("identity provider unreachable")
        return "ok"

    fake = AuthFake(accept=lambda token: token == "ok")
    with fake.running() as url:
        async with BridgeClient(url, token=flaky, backoff_initial=0.01) as client:
            await client.wait_online(timeout=5)
    assert len(calls) == 2 and fake.hello_tokens == ["ok"]


# --- refresh before expiry -------------------------------------------------------


def test_refresh_delay():
    assert refresh_delay(3600) == 3570
    assert refresh_delay(100) == 80
    assert refresh_delay(2.5) == 2.0
    assert refresh_delay(0) == 0 and refresh_delay(-5) == 0


@pytest.mark.both_backends
async def test_an_expiring_token_is_refreshed_on_the_live_connection():
    fake = AuthFake(expires_in=1.0)
    provider = Provider("t1", "t2", "t3")
    with fake.running() as url:
        async with BridgeClient(url, token=provider) as client:
            doc = await client.open("long-lived")
            # Two refreshes: the connection outlives two token lifetimes.
            await eventually(lambda: len(fake.auths) >= 2, timeout=5)
            assert [token for _, token in fake.auths[:2]] == ["t2", "t3"]
            first_refresh = fake.auths[0][0] - fake.welcomed_at[0]
            assert 0.7 <= first_refresh < 1.0, first_refresh  # at 80 % of the lifetime
            assert client.connections == 1 and client.session == "s1" and client.failure is None
            with doc.change() as d:
                d["still"] = "here"
            await doc.flush()
    assert not any(code == 4401 for code, _ in fake.closes)
    assert fake.connections == 1


@pytest.mark.both_backends
async def test_a_refused_refresh_reconnects_with_a_fresh_token():
    # The refresh token is refused (4401 on the live connection): one
    # reconnect with the provider's next token, which is fine.
    fake = AuthFake(expires_in=1.0, accept=lambda token: token != "refused")
    provider = Provider("t1", "refused", "t3")
    with fake.running() as url:
        async with BridgeClient(url, token=provider, backoff_initial=0.01) as client:
            await eventually(lambda: client.connections == 2 and client.online, timeout=5)
            assert client.failure is None
    assert fake.hello_tokens == ["t1", "t3"]


@pytest.mark.both_backends
async def test_a_static_token_that_expires_is_fatal():
    fake = AuthFake(expires_in=0.5)
    with fake.running() as url:
        async with BridgeClient(url, token="short", backoff_initial=0.01) as client:
            await client.wait_online(timeout=5)
            await eventually(lambda: client.failure is not None, timeout=5)
            assert isinstance(client.failure, ConnectionClosed) and client.failure.close_code == 4401
            assert client.status == "failed"
            with pytest.raises(ConnectionClosed):
                await client.wait_online()
    assert not fake.auths and fake.connections == 1


# --- opened, read-only documents --------------------------------------------------


@pytest.mark.both_backends
async def test_a_read_only_document_refuses_changes_before_touching_them():
    fake = AuthFake(access={"ro": "read"})
    fake.docs["ro"] = seeded({"n": 1})
    with fake.running() as url:
        async with BridgeClient(url) as client:
            doc = await client.open("ro")
            assert doc.read_only and doc.access == "read" and doc.to_py() == {"n": 1}
            heads = doc.heads
            with pytest.raises(ReadOnly) as info:
                with doc.change() as d:
                    d["n"] = 2
            assert info.value.doc == "ro" and info.value.code == "read_only"
            assert doc.heads == heads and doc.to_py() == {"n": 1} and not doc.unsaved
            with anyio.fail_after(2):
                assert await doc.flush() == heads
            writable = await client.open("rw")
            assert not writable.read_only and writable.access == "write"
            with writable.change() as d:
                d["x"] = 1
            await writable.flush()


@pytest.mark.both_backends
async def test_without_opened_a_document_is_writable():
    fake = AuthFake(access={"legacy": None})
    with fake.running() as url:
        async with BridgeClient(url) as client:
            doc = await client.open("legacy")
            assert doc.synced and doc.access is None and not doc.read_only
            with doc.change() as d:
                d["x"] = 1
            await doc.flush()


@pytest.mark.both_backends
async def test_changes_refused_as_read_only_fail_the_flush():
    # Changes on their way when write access went away (an `auth` refresh):
    # the refusal reaches flush() and raise_if_failed(), not a timeout.
    fake = AuthFake(downgrade_on_flush={"d"})
    with fake.running() as url:
        async with BridgeClient(url) as client:
            doc = await client.open("d")
            with doc.change() as d:
                d["x"] = 1
            with anyio.fail_after(5):
                with pytest.raises(ReadOnly) as info:
                    await doc.flush()
            assert info.value.doc == "d"
            with pytest.raises(ReadOnly):
                doc.raise_if_failed()
            with anyio.fail_after(1):
                with pytest.raises(ReadOnly):
                    await doc.flush()  # the next one too, at once
            assert doc.read_only
            with pytest.raises(ReadOnly):
                with doc.change() as d:
                    d["y"] = 2
            # The changes reached the fake afterwards, and were refused there too.
            await eventually(lambda: "read_only" in fake.errors_sent, timeout=5)
            await eventually(lambda: str(doc.error) == "read-only", timeout=5)
            client.abandon()
    assert core.extract(fake.doc("d")) == {}


@pytest.mark.both_backends
async def test_refused_changes_are_sent_again_when_write_access_comes_back():
    fake = AuthFake(expires_in=1.0, downgrade_on_flush={"d"}, grant_on_auth={"d"})
    with fake.running() as url:
        async with BridgeClient(url, token=Provider("t1", "t2")) as client:
            doc = await client.open("d")
            with doc.change() as d:
                d["x"] = 1
            with pytest.raises(ReadOnly):
                await doc.flush()
            # The refresh brings write access back (`opened write`): the
            # refusal is forgotten and the changes reach the server.
            await eventually(lambda: doc.access == "write" and doc.error is None, timeout=5)
            # (The fake answers flushes at once: wait for the content itself.)
            await eventually(lambda: core.extract(fake.doc("d")) == {"x": 1}, timeout=5)
            await eventually(lambda: not doc.unsaved, timeout=5)
            assert client.connections == 1 and client.failure is None


@pytest.mark.both_backends
@pytest.mark.parametrize("code, error", [("forbidden", Forbidden), ("not_found", NotFound), ("quota", QuotaExceeded)])
async def test_refused_opens_raise_and_the_client_stays_usable(code, error):
    fake = AuthFake(refuse={"closed-doc": code})
    with fake.running() as url:
        async with BridgeClient(url) as client:
            with pytest.raises(error) as info:
                await client.open("closed-doc")
            assert info.value.doc == "closed-doc" and "closed-doc" not in client.docs
            doc = await client.open("open-doc")
            assert doc.synced and client.connections == 1


# --- the token is not logged -------------------------------------------------------


async def test_tokens_are_never_logged(caplog):
    # The client's own log lines (httpx logs the URL it connects to: a token
    # belongs in the hello, not on the URL).
    caplog.set_level(logging.DEBUG, logger="bridge")
    fake = AuthFake(expires_in=0.6, accept=lambda token: token.startswith("SECRET-OK"))
    provider = Provider("SECRET-BAD-1", "SECRET-OK-2", "SECRET-OK-3", "SECRET-BAD-4", "SECRET-BAD-5")
    with fake.running() as url:
        async with BridgeClient(url + "?token=SECRET-IN-URL", token=provider, backoff_initial=0.01) as client:
            await eventually(lambda: client.failure is not None, timeout=10)
    assert fake.hello_tokens[:2] == ["SECRET-BAD-1", "SECRET-OK-2"]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bridge"))
    assert "4401" in logged and "refresh" in logged
    assert "SECRET" not in logged


# --- against the real bridge with token auth ----------------------------------------

SECRET = "test-secret-of-at-least-32-bytes-for-hs256"


@pytest.fixture
def tokens():
    return pytest.importorskip("bridge.tokens", reason="the server side of issue 10 has not landed")


@pytest.fixture
def auth_bridge(tmp_path, tokens):
    app = create_app(data_dir=tmp_path, authenticate=tokens.TokenAuth(secret=SECRET), web_dir=None)
    with serve_in_thread(app) as running:
        yield running


def mint(tokens, **claims) -> str:
    return tokens.mint(SECRET, **claims)


async def test_writer_and_reader_on_one_document(auth_bridge, tokens):
    writer_token = mint(tokens, sub="wendy", write=["shared-*"])
    reader_token = mint(tokens, sub="rick", read=["shared-*"])
    async with BridgeClient(auth_bridge.ws_url, token=writer_token) as writer, BridgeClient(
        auth_bridge.ws_url, token=reader_token
    ) as reader:
        wdoc = await writer.open("shared-1")
        assert wdoc.access == "write" and not wdoc.read_only
        with wdoc.change() as d:
            d["n"] = 1
        await wdoc.flush()
        rdoc = await reader.open("shared-1")
        assert rdoc.read_only and rdoc.to_py() == {"n": 1}
        assert reader.identity == "rick" and writer.identity == "wendy"

        # Live edits reach the reader.
        with wdoc.change() as d:
            d["n"] = 2
        await rdoc.wait_for(wdoc.heads, timeout=10)
        assert rdoc.to_py() == {"n": 2}

        # The reader cannot write, and its copy does not diverge.
        heads = rdoc.heads
        with pytest.raises(ReadOnly) as info:
            with rdoc.change() as d:
                d["n"] = 99
        assert info.value.doc == "shared-1"
        assert rdoc.heads == heads and rdoc.to_py() == {"n": 2}
        await wdoc.flush()
        with anyio.fail_after(5):
            flushed = await rdoc.flush()
        assert sorted(flushed) == sorted(wdoc.heads)  # the durable heads
        assert reader.status == "saved" and reader.failure is None
    assert writer.failure is None and reader.failure is None


async def test_a_forbidden_open_leaves_the_client_usable(auth_bridge, tokens):
    token = mint(tokens, sub="fran", write=["mine-*"])
    async with BridgeClient(auth_bridge.ws_url, token=token) as client:
        with pytest.raises(Forbidden) as info:
            await client.open("theirs-1")
        assert info.value.doc == "theirs-1" and "theirs-1" not in client.docs
        doc = await client.open("mine-1")
        with doc.change() as d:
            d["ok"] = True
        await doc.flush()
        assert client.connections == 1 and client.failure is None


async def test_reading_an_unknown_document_without_write_is_not_found(auth_bridge, tokens):
    token = mint(tokens, sub="rita", read=["*"])
    async with BridgeClient(auth_bridge.ws_url, token=token) as client:
        with pytest.raises(NotFound):
            await client.open("nobody-made-this")
        assert client.failure is None and client.online


@pytest.mark.parametrize("token", [None, "not-a-jwt", "wrong-secret"])
async def test_no_token_or_a_bad_token_is_fatal_4401(auth_bridge, tokens, token):
    if token == "wrong-secret":
        token = tokens.mint("another-secret-of-at-least-32-bytes!", sub="eve", write=["*"])
    async with BridgeClient(auth_bridge.ws_url, token=token, backoff_initial=0.01) as client:
        with pytest.raises(ConnectionClosed) as info:
            await client.wait_online(timeout=10)
        assert info.value.close_code == 4401
        await nothing_happens_for(0.3)
        assert client.connections == 0 and client.status == "failed"


async def test_a_provider_with_only_bad_tokens_fails_after_one_retry(auth_bridge, tokens):
    provider = Provider("bad-1", "bad-2", "bad-3")
    async with BridgeClient(auth_bridge.ws_url, token=provider, backoff_initial=0.01) as client:
        with pytest.raises(ConnectionClosed) as info:
            await client.wait_online(timeout=10)
        assert info.value.close_code == 4401
        await nothing_happens_for(0.3)
    assert provider.calls == 2 and client.connections == 0


async def test_a_provider_gets_a_fresh_token_after_a_refusal(auth_bridge, tokens):
    provider = Provider("stale", mint(tokens, sub="pat", write=["*"]))
    async with BridgeClient(auth_bridge.ws_url, token=provider, backoff_initial=0.01) as client:
        await client.wait_online(timeout=10)
        assert client.identity == "pat" and provider.calls == 2


async def test_an_expiring_token_is_refreshed_and_the_connection_survives(auth_bridge, tokens):
    calls = []

    def provider() -> str:
        calls.append(time.monotonic())
        return mint(tokens, sub="sam", write=["*"], ttl=3)

    async with BridgeClient(auth_bridge.ws_url, token=provider) as client:
        doc = await client.open("refreshed")
        await client.wait_online()
        session, started = client.session, time.monotonic()
        assert session is not None
        # Past the first token's expiry (3 s), and past the second's.
        await eventually(lambda: time.monotonic() - started > 5 and len(calls) >= 3, timeout=15)
        assert client.session == session and client.connections == 1 and client.failure is None
        with doc.change() as d:
            d["alive"] = True
        with anyio.fail_after(5):
            await doc.flush()
        assert client.session == session and client.connections == 1


async def test_a_static_token_that_expires_fails_with_4401(auth_bridge, tokens):
    token = mint(tokens, sub="tim", write=["*"], ttl=2)
    async with BridgeClient(auth_bridge.ws_url, token=token, backoff_initial=0.01) as client:
        doc = await client.open("short-lived")
        assert client.online
        await eventually(lambda: client.failure is not None, timeout=10)
        assert isinstance(client.failure, ConnectionClosed) and client.failure.close_code == 4401
        with pytest.raises(ConnectionClosed):
            await doc.flush()
        assert client.connections == 1


async def test_a_provider_whose_refresh_is_refused_fails_when_the_retry_is_refused_too(auth_bridge, tokens):
    tokens_out = [mint(tokens, sub="una", write=["*"], ttl=2), "bad-refresh", "bad-retry", "bad-again"]
    provider = Provider(*tokens_out)
    async with BridgeClient(auth_bridge.ws_url, token=provider, backoff_initial=0.01) as client:
        await client.wait_online(timeout=10)
        await eventually(lambda: client.failure is not None, timeout=10)
        assert isinstance(client.failure, ConnectionClosed) and client.failure.close_code == 4401
        await nothing_happens_for(0.3)
    assert provider.calls == 3 and client.connections == 1


async def test_a_refresh_that_changes_access_is_seen_on_the_open_documents(auth_bridge, tokens):
    seed = mint(tokens, sub="owner", write=["*"])
    async with BridgeClient(auth_bridge.ws_url, token=seed) as owner:
        for doc_id in ("kept", "lost"):
            doc = await owner.open(doc_id)
            with doc.change() as d:
                d["doc"] = doc_id
            await doc.flush()

    first = mint(tokens, sub="val", write=["kept", "lost"], ttl=2)
    provider = Provider(first, mint(tokens, sub="val", read=["kept"], ttl=3600))
    async with BridgeClient(auth_bridge.ws_url, token=provider) as client:
        kept, lost = await client.open("kept"), await client.open("lost")
        assert kept.access == "write" and lost.access == "write"
        # The refresh (at 80 % of the first token's life) grants less.
        await eventually(lambda: kept.read_only and lost.error is not None, timeout=10)
        assert isinstance(lost.error, Forbidden) and lost.error.doc == "lost"
        with pytest.raises(ReadOnly):
            with kept.change() as d:
                d["doc"] = "changed"
        with pytest.raises(Forbidden):
            await lost.flush()
        with pytest.raises(Forbidden):
            lost.raise_if_failed()
        with anyio.fail_after(5):
            await kept.flush()
        assert kept.to_py() == {"doc": "kept"}
        await nothing_happens_for(0.3)
        assert isinstance(lost.error, Forbidden)  # not replaced by the echo of later frames
        assert client.connections == 1 and client.failure is None and provider.calls == 2
