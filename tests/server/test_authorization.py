"""Per-document authorization against a real server: raw frames and HTTP.

Each rule of the authorization issue, with the token where a client puts it
(hello, ?token=, Bearer, cookie) and the peer lying where it can: no token,
a forged or expired one, another identity at refresh, changes from a
read-only principal, presence under a borrowed name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import anyio
import httpx
import jwt
import pytest
import websockets
from automerge import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bridge import Limits, create_app
from bridge.auth import AuthRequest
from bridge.testing import serve_in_subprocess, serve_in_thread
from bridge.tokens import TokenAuth, TokenRefused, mint

from .. import crafting
from ..rawpeer import RawPeer, text_doc
from ..waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "test-secret-" + "x" * 28


def token(sub: str = "alice", **grants) -> str:
    return mint(SECRET, sub=sub, **grants)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    limits = Limits(docs_created_per_hour=3, flush_timeout=2.0)
    app = create_app(data_dir=tmp_path_factory.mktemp("auth"), authenticate=TokenAuth(secret=SECRET),
                     limits=limits, web_dir=None)
    with serve_in_thread(app) as running:
        yield running


async def hello(url: str, tok: str | None, *, peer: str = "p", **connect) -> RawPeer:
    """Connect and send a hello (with ``tok`` in it, if any); the welcome is not read."""
    peer_ = RawPeer(await websockets.connect(url, max_size=None, max_queue=None, **connect))
    frame = {"t": "hello", "v": [1], "peer": peer, "caps": []}
    if tok is not None:
        frame["token"] = tok
    await peer_.send(frame)
    return peer_


async def welcomed(url: str, tok: str | None, **kwargs) -> RawPeer:
    peer = await hello(url, tok, **kwargs)
    welcome = await peer.recv()
    assert welcome["t"] == "welcome", welcome
    peer.welcome = welcome
    return peer


async def edit(peer: RawPeer, doc_id: str, doc: core.Document, key: str, value: int):
    """Put ``key`` in ``doc`` and sync it (``peer`` has synced ``doc_id`` already)."""
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, value)
    await peer.send({"t": "sync", "doc": doc_id,
                     "data": crafting.sync_message([doc.get_last_local_change().bytes], heads=doc.get_heads())})


def frames_about(frames: list[dict], doc_id: str) -> list[dict]:
    return [f for f in frames if f.get("doc") == doc_id or doc_id in f.get("docs", {})]


async def drain(peer: RawPeer, seconds: float = 0.3) -> list[dict]:
    """What the server sends within ``seconds`` (a bounded wait for silence)."""
    got = []
    with anyio.move_on_after(seconds):
        while True:
            got.append(await peer.recv())
    return got


# --- who may connect --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["none", "forged", "expired", "garbage", "alg-none"])
async def test_no_token_a_forged_or_an_expired_one_is_closed_4401_and_http_401(bridge, bad):
    tok = {
        "none": None,
        "forged": mint("another-secret-" + "y" * 30, sub="alice", write=["*"]),
        "expired": mint(SECRET, sub="alice", write=["*"], ttl=10, now=time.time() - 60),
        "garbage": "not.a.token",
        "alg-none": jwt.encode({"sub": "alice", "exp": time.time() + 60, "docs": {"*": "write"}}, None, algorithm="none"),
    }[bad]
    peer = await hello(bridge.ws_url, tok)
    assert await peer.closed_with() == 4401
    params = {"token": tok} if tok else {}
    assert httpx.get(f"{bridge.http_url}/docs/anything", params=params).status_code == 401
    assert httpx.post(f"{bridge.http_url}/docs/anything/changes", params=params, content=b"x").status_code == 401


async def test_the_token_may_come_in_the_hello_the_query_a_bearer_header_or_a_cookie(bridge):
    tok = token("carol", write=["c-*"])
    by_hello = await welcomed(bridge.ws_url, tok)
    by_query = await welcomed(f"{bridge.ws_url}?token={tok}", None)
    by_header = await welcomed(bridge.ws_url, None, additional_headers={"Authorization": f"Bearer {tok}"})
    by_cookie = await welcomed(bridge.ws_url, None, additional_headers={"Cookie": f"bridge_token={tok}"})
    for peer in (by_hello, by_query, by_header, by_cookie):
        assert peer.welcome["identity"] == "carol"
        assert 3500 < peer.welcome["expires_in"] <= 3601
    assert httpx.get(f"{bridge.http_url}/docs/c-1", headers={"Authorization": f"Bearer {tok}"}).status_code == 404


# --- reading --------------------------------------------------------------------------


async def test_a_document_one_may_not_read_is_forbidden_and_nothing_of_it_is_sent(bridge):
    owner = await welcomed(bridge.ws_url, token("owner", write=["secret-*", "public"]))
    await owner.sync_doc("secret-1", text_doc("the plan"))
    await owner.sync_doc("public", text_doc("hello"))
    nosy = await welcomed(bridge.ws_url, token("nosy", read=["public"]))
    await nosy.send({"t": "open", "doc": "secret-1"})
    await nosy.send({"t": "sync", "doc": "secret-1", "data": crafting.sync_message([])})
    await nosy.send({"t": "flush", "id": 1, "docs": {"secret-1": []}})
    got = await drain(nosy)
    assert [(f["t"], f.get("code")) for f in got] == [("error", "forbidden"), ("error", "not_open"), ("error", "not_open")]
    assert not [f for f in got if f["t"] in ("sync", "saved", "opened", "flushed")]
    # Still connected, and served for what it may read.
    await nosy.send({"t": "open", "doc": "public"})
    opened = await nosy.recv_until(lambda f: f["t"] in ("opened", "error"))
    assert opened == {"t": "opened", "doc": "public", "access": "read"}
    headers = {"Authorization": f"Bearer {token('nosy', read=['public'])}"}
    assert httpx.get(f"{bridge.http_url}/docs/secret-1", headers=headers).status_code == 403
    assert httpx.get(f"{bridge.http_url}/docs/secret-1/durable", headers=headers).status_code == 403


# --- read-only ------------------------------------------------------------------------


async def test_a_reader_gets_live_changes_but_its_own_never_reach_the_document(bridge):
    writer_token, reader_token = token("wanda", write=["board"]), token("rita", read=["board"])
    writer = await welcomed(bridge.ws_url, writer_token)
    board = text_doc("v1")
    writer_sync = await writer.sync_doc("board", board)
    reader = await welcomed(bridge.ws_url, reader_token)
    await reader.send({"t": "open", "doc": "board"})
    assert await reader.recv_until(lambda f: f["t"] == "opened") == {"t": "opened", "doc": "board", "access": "read"}
    view = core.Document()
    reader_sync = await reader.sync_doc("board", view)
    assert core.extract(view) == {"text": "v1"}

    # The reader edits and syncs like a writer would: refused, unapplied.
    await edit(reader, "board", view, "evil", 1)
    refused = await reader.recv_until(lambda f: f["t"] == "error")
    assert refused["code"] == "read_only" and refused["doc"] == "board"
    for data in reader_sync.generate():  # and through Automerge's own sync
        await reader.send({"t": "sync", "doc": "board", "data": data})
    # Its flush is answered at once, with the durable heads (not its own).
    await reader.send({"t": "flush", "id": 9, "docs": {"board": view.get_heads()}})
    flushed = await reader.recv_until(lambda f: f["t"] == "flushed")
    assert flushed["docs"]["board"] == board.get_heads()

    # Nothing reached the document, the store, or the writer.
    assert httpx.get(f"{bridge.http_url}/docs/board", params={"token": writer_token}).json() == {"text": "v1"}
    await writer.send({"t": "flush", "id": 1, "docs": {"board": board.get_heads()}})
    for frame in frames_about(await drain(writer), "board"):
        if frame["t"] == "sync":
            writer_sync.receive(frame["data"])
    assert "evil" not in core.extract(board)

    # A writer's next edit reaches the reader live.
    await edit(writer, "board", board, "news", 2)
    with anyio.fail_after(10):
        while core.extract(view).get("news") != 2:
            frame = await reader.recv()
            if frame["t"] == "sync":
                reader_sync.receive(frame["data"])
                for data in reader_sync.generate():
                    await reader.send({"t": "sync", "doc": "board", "data": data})

    # HTTP: a read-only token may read, not post.
    before = httpx.get(f"{bridge.http_url}/docs/board", params={"token": reader_token}).json()
    answer = httpx.post(f"{bridge.http_url}/docs/board/changes", params={"token": reader_token}, content=view.save())
    assert answer.status_code == 403 and answer.json()["error"] == "read_only"
    assert httpx.get(f"{bridge.http_url}/docs/board", params={"token": reader_token}).json() == before


async def test_creating_a_document_needs_write_and_counts_against_the_principal(bridge):
    reader = await welcomed(bridge.ws_url, token("reed", read=["fresh-*"]))
    await reader.send({"t": "open", "doc": "fresh-1"})
    assert (await reader.recv_until(lambda f: f["t"] == "error"))["code"] == "not_found"
    # Two principals on one address: each has its own allowance (3 per hour here).
    for who in ("maker-a", "maker-b"):
        maker = await welcomed(bridge.ws_url, token(who, write=[f"{who}-*"]))
        for n in range(4):
            await maker.send({"t": "open", "doc": f"{who}-{n}"})
        got = await drain(maker, 0.5)
        assert [f["doc"] for f in got if f["t"] == "opened"] == [f"{who}-0", f"{who}-1", f"{who}-2"]
        assert [(f["code"], f["doc"]) for f in got if f["t"] == "error"] == [("quota", f"{who}-3")]
    # HTTP creation needs write as well.
    refused = httpx.post(f"{bridge.http_url}/docs/fresh-2/changes", params={"token": token("reed", read=["fresh-*"])},
                         content=text_doc("x").save())
    assert refused.status_code == 403
    assert httpx.get(f"{bridge.http_url}/docs/fresh-2", params={"token": token("reed", read=["fresh-*"])}).status_code == 404


# --- presence ------------------------------------------------------------------------------


async def test_eph_is_relayed_from_the_authenticated_identity_never_the_claimed_name(bridge):
    a = await welcomed(bridge.ws_url, token("amy", write=["room"]), peer="the-admin")
    b = await welcomed(bridge.ws_url, token("bob", read=["room"]), peer="bob-laptop")
    for peer in (a, b):
        await peer.sync_doc("room", core.Document())
    await a.send({"t": "eph", "doc": "room", "data": b"cursor 3"})
    assert await b.recv_until(lambda f: f["t"] == "eph") == {"t": "eph", "doc": "room", "from": "amy", "data": b"cursor 3"}
    await b.send({"t": "eph", "doc": "room", "data": b"viewing"})  # a reader's presence: relayed by default
    assert (await a.recv_until(lambda f: f["t"] == "eph"))["from"] == "bob"


async def test_reader_presence_can_be_switched_off(tmp_path):
    app = create_app(data_dir=tmp_path, authenticate=TokenAuth(secret=SECRET), reader_presence=False, web_dir=None)
    with serve_in_thread(app) as running:
        a = await welcomed(running.ws_url, token("amy", write=["room"]))
        b = await welcomed(running.ws_url, token("bob", read=["room"]))
        for peer in (a, b):
            await peer.sync_doc("room", core.Document())
        await b.send({"t": "eph", "doc": "room", "data": b"viewing"})
        await a.send({"t": "eph", "doc": "room", "data": b"typing"})
        assert (await b.recv_until(lambda f: f["t"] == "eph"))["from"] == "amy"
        assert not [f for f in await drain(a) if f["t"] == "eph"]


# --- expiry and refresh -----------------------------------------------------------------------


async def test_a_token_that_expires_closes_the_connection_4401_at_expiry(bridge):
    peer = await welcomed(bridge.ws_url, mint(SECRET, sub="brief", write=["*"], ttl=2))
    assert 0 < peer.welcome["expires_in"] <= 3
    started = time.monotonic()
    assert await peer.closed_with(timeout=10) == 4401
    assert time.monotonic() - started < 5
    assert "expired" in peer.ws.close_reason


async def test_auth_refreshes_the_token_and_may_change_access_but_not_identity(bridge):
    first = mint(SECRET, sub="ida", write=["keep", "lose"], ttl=2)
    first_expiry = TokenAuth(secret=SECRET).verify(first).expires_at
    peer = await welcomed(bridge.ws_url, first)
    for doc_id in ("keep", "lose"):
        await peer.sync_doc(doc_id, core.Document())
    await peer.send({"t": "auth", "token": mint(SECRET, sub="ida", read=["keep"], ttl=3600)})
    got = await drain(peer, 0.5)
    assert {"t": "opened", "doc": "keep", "access": "read"} in got
    assert [(f["code"], f["doc"]) for f in got if f["t"] == "error"] == [("forbidden", "lose")]
    await eventually(lambda: time.time() > first_expiry + 0.5, timeout=10)  # past the first token's expiry
    await peer.send({"t": "flush", "id": 1, "docs": {"keep": []}})
    assert (await peer.recv_until(lambda f: f["t"] in ("flushed", "error")))["t"] == "flushed"
    await peer.send({"t": "sync", "doc": "lose", "data": crafting.sync_message([])})
    assert (await peer.recv_until(lambda f: f["t"] == "error"))["code"] == "not_open"
    # A token for someone else is refused, and so is a bad one.
    await peer.send({"t": "auth", "token": token("mallory", write=["*"])})
    assert await peer.closed_with() == 4401
    other = await welcomed(bridge.ws_url, token("ida", write=["*"]))
    await other.send({"t": "auth", "token": "forged"})
    assert await other.closed_with() == 4401


# --- keys signed elsewhere ----------------------------------------------------------------------


def _pem(private) -> tuple[bytes, bytes]:
    return (
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def _hs256_by_hand(claims: dict, key: bytes) -> str:
    """An HS256 JWT signed with ``key`` (PyJWT refuses a PEM as an HMAC key)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(claims).encode())}"
    return f"{signing}.{part(hmac.new(key, signing.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("algorithm, key", [
    ("EdDSA", lambda: ed25519.Ed25519PrivateKey.generate()),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
])
def test_public_key_tokens_and_no_algorithm_confusion(algorithm, key):
    private, public = _pem(key())
    auth = TokenAuth(public_key=public)
    assert auth.algorithm == algorithm
    good = mint(private, sub="svc", write=["x"], algorithm=algorithm)
    assert auth.verify(good).may_write("x")
    # HS256 "signed" with the public key (the classic confusion attack) and alg none are refused.
    confused = _hs256_by_hand({"sub": "svc", "exp": time.time() + 60, "docs": {"*": "write"}}, public)
    for forged in (confused, jwt.encode({"sub": "svc", "exp": time.time() + 60}, None, algorithm="none")):
        with pytest.raises(TokenRefused):
            auth.verify(forged)
    assert auth(AuthRequest(peer="p", token=confused)) is None


def test_claims_are_checked_and_scopes_add_up():
    auth = TokenAuth(secret=SECRET)
    principal = auth.verify(mint(SECRET, sub="a", read=["inv-*", "catalog"], write=["inv-7"], admin=True))
    assert [principal.access(d) for d in ("inv-7", "inv-8", "catalog", "other")] == ["write", "read", "read", None]
    assert principal.may_administer()
    assert not auth.verify(mint(SECRET, sub="b", write=["*"])).may_administer()
    for claims in ({"exp": time.time() + 60}, {"sub": "", "exp": time.time() + 60},
                   {"sub": "a", "exp": time.time() + 60, "docs": {"x": "admin"}},
                   {"sub": "a", "exp": time.time() + 60, "docs": ["x"]}, {"sub": "a"}):
        with pytest.raises(TokenRefused):
            auth.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert TokenAuth(secret=SECRET, require_exp=False).verify(mint(SECRET, sub="a", ttl=None)).expires_at is None
    with pytest.raises(ValueError, match="at least 32"):
        TokenAuth(secret="short")


# --- the command line ------------------------------------------------------------------------------


def test_serve_with_auth_and_the_token_command_and_no_token_in_any_log_line(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    printed = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "token", "--secret-file", str(secret_file), "--sub", "ops",
         "--write", "ops-*", "--read", "catalog", "--ttl", "15m"],
        capture_output=True, text=True, check=True).stdout.strip()
    principal = TokenAuth(secret=SECRET).verify(printed)
    assert principal.identity == "ops" and principal.access("ops-1") == "write" and principal.access("catalog") == "read"
    assert 890 < principal.expires_at - time.time() <= 901

    log = tmp_path / "server.log"
    with serve_in_subprocess(tmp_path / "data", log=log,
                             extra_args=["--auth-secret-file", str(secret_file), "--log-level", "debug"]) as running:

        async def use() -> None:
            peer = await welcomed(f"{running.ws_url}?token={printed}", None)
            await peer.sync_doc("ops-1", text_doc("hi"))
            refused = await hello(running.ws_url, printed + "x")
            assert await refused.closed_with() == 4401

        anyio.run(use)
        assert httpx.get(f"{running.http_url}/docs/ops-1", params={"token": printed}).status_code == 200
        assert httpx.get(f"{running.http_url}/docs/ops-1", headers={"Authorization": f"Bearer {printed}"}).status_code == 200
    text = log.read_text()
    assert "GET /docs/ops-1?token=[redacted]" in text, "the access log is there, without the token"
    signature = printed.rsplit(".", 1)[1]
    assert printed not in text and signature not in text and SECRET not in text


def test_serving_beyond_loopback_without_auth_warns_loudly(tmp_path):
    log = tmp_path / "server.log"
    with serve_in_subprocess(tmp_path / "data", log=log, extra_args=["--host", "0.0.0.0"]):
        pass
    assert "AUTH IS OFF" in log.read_text()
    log.write_text("")
    with serve_in_subprocess(tmp_path / "data", log=log):
        pass
    assert "AUTH IS OFF" not in log.read_text()
