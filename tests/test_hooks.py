"""Application hooks: ``hub.committed()`` and the signed webhook, against a
real bridge with real clients and a real HTTP receiver."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import anyio
import httpx
import pytest
from automerge import core
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.client import BridgeClient
from bridge.hooks import Commit, Missed
from bridge.local import open_local
from bridge.server.app import create_app
from bridge.testing import RunningBridge, free_port, serve_in_task, serve_in_thread, stop_process, wait_healthy
from bridge.tokens import TokenAuth, mint
from bridge.webhook import SIGNATURE_HEADER, Webhook, verify

from .waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "s" * 40
HOOK_SECRET = "webhook-secret-0123456789"


def _change(key: str, value: str) -> bytes:
    doc = core.Document()
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Str, value)
    return doc.save()


async def _next(commits) -> Commit | Missed:
    with anyio.fail_after(10):
        return await commits.next()


async def test_commits_name_the_document_its_durable_heads_and_whose_changes_they_were(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None, authenticate=TokenAuth(secret=SECRET))
    async with serve_in_task(app) as bridge:
        hub = app.state.hub
        async with hub.committed() as commits, hub.committed(doc_ids=["other"]) as only_other:
            alice = mint(SECRET, sub="alice", write=["*"])
            async with BridgeClient(bridge.ws_url, peer="tab", token=alice) as client:
                doc = await client.open("notes")
                with doc.change() as d:
                    d["title"] = "hello"
                heads = await doc.flush(timeout=10)
            commit = await _next(commits)
            assert (commit.doc_id, commit.heads, commit.origin) == ("notes", heads, "alice")

            bob = mint(SECRET, sub="bob", write=["*"])
            async with httpx.AsyncClient() as http:
                answer = await http.post(f"{bridge.http_url}/docs/other/changes", content=_change("k", "v"),
                                         headers={"Authorization": f"Bearer {bob}"})
                assert answer.status_code == 200, answer.text
            commit = await _next(commits)
            assert (commit.doc_id, commit.origin, commit.heads_hex) == ("other", "http:bob", answer.json()["heads"])
            assert (await _next(only_other)).doc_id == "other"  # the filtered view saw only this one

            async with open_local(hub, "notes", peer="indexer") as local:
                with local.change() as d:
                    d["by"] = "a service"
                await local.flush(10)
                local_heads = local.heads
            commit = await _next(commits)
            assert (commit.doc_id, commit.origin, commit.heads) == ("notes", "indexer", local_heads)


async def test_a_consumer_that_does_not_read_costs_one_event_per_document_and_then_a_missed_marker(tmp_path):
    app = create_app(data_dir=tmp_path, web_dir=None)
    async with serve_in_task(app) as bridge:
        hub = app.state.hub
        async with hub.committed(max_docs=2) as commits:
            async with BridgeClient(bridge.ws_url, peer="writer") as client:
                for doc_id, edits in (("a", 5), ("b", 1), ("c", 2)):
                    doc = await client.open(doc_id)
                    for n in range(edits):
                        with doc.change() as d:
                            d["n"] = n
                        last = await doc.flush(timeout=10)  # one commit each
                    if doc_id == "a":
                        heads_a = last
            events = [await _next(commits) for _ in range(3)]
        assert events[0] == Missed(2)  # c's two commits did not fit: rescan
        assert [(e.doc_id, e.coalesced) for e in events[1:]] == [("a", 5), ("b", 1)]
        assert events[1].heads == heads_a  # the newest heads stand for the older ones


class Receiver:
    """A real HTTP endpoint that fails its first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.requests.append((body, request.headers.get(SIGNATURE_HEADER, "")))
                fail = len(self.requests) <= self.failures
            return Response(status_code=503 if fail else 204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def test_the_webhook_retries_until_the_receiver_takes_it_and_signs_every_attempt(tmp_path):
    receiver = Receiver(failures=2)
    with serve_in_thread(receiver.app()) as hook_server:
        webhook = Webhook(f"{hook_server.http_url}/hook", HOOK_SECRET, max_backoff=0.2)
        app = create_app(data_dir=tmp_path, web_dir=None, webhook=webhook)
        async with serve_in_task(app) as bridge:
            async with BridgeClient(bridge.ws_url, peer="writer") as client:
                doc = await client.open("invoice-1")
                with doc.change() as d:
                    d["total"] = 12
                heads = await doc.flush(timeout=10)
            await eventually(lambda: webhook.delivered == 1, timeout=10)
    assert len(receiver.requests) == 3  # two 503s, then taken
    for body, signature in receiver.requests:
        assert verify(HOOK_SECRET, body, signature)
        assert not verify("another secret of some length", body, signature)
        assert not verify(HOOK_SECRET, body + b" ", signature)  # the body is what is signed
    event = json.loads(receiver.requests[-1][0])
    assert event == {"type": "commit", "doc_id": "invoice-1", "heads": [h.hex() for h in heads],
                     "origin": "writer", "at": event["at"], "coalesced": 1}


async def test_a_receiver_that_never_answers_does_not_hold_up_syncing(tmp_path):
    """The receiver accepts the connection and never says a word: peers'
    edits still sync and their flushes are answered."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        webhook = Webhook(url, HOOK_SECRET, timeout=60)
        app = create_app(data_dir=tmp_path, web_dir=None, webhook=webhook)
        async with serve_in_task(app) as bridge:
            async with BridgeClient(bridge.ws_url, peer="a") as a, BridgeClient(bridge.ws_url, peer="b") as b:
                doc_a, doc_b = await a.open("d"), await b.open("d")
                for n in range(20):
                    with doc_a.change() as d:
                        d["n"] = n
                    heads = await doc_a.flush(timeout=5)
                await doc_b.wait_for(heads, timeout=5)
            assert webhook.delivered == 0  # still waiting on the first POST
    finally:
        silent.close()


def test_the_cli_takes_a_webhook_and_never_prints_its_secret(tmp_path):
    (tmp_path / "hook-secret").write_text(HOOK_SECRET)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
         "--log-level", "debug", "--webhook", "http://127.0.0.1:9/hook", "--webhook-secret-file",
         str(tmp_path / "hook-secret")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(RunningBridge("127.0.0.1", port, process=process))
    finally:
        stop_process(process)
    output = process.stdout.read().decode()
    assert HOOK_SECRET not in output

    for args, message in ((["--webhook", "ftp://x"], "http:// or https://"),
                          (["--webhook", "http://x/hook"], "--webhook-secret"),
                          (["--webhook-secret", HOOK_SECRET], "needs --webhook")):
        done = subprocess.run([sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--data-dir",
                               str(tmp_path / "d"), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr and HOOK_SECRET not in done.stderr


async def test_a_webhook_that_cannot_even_send_does_not_take_the_bridge_down(tmp_path):
    # A NUL in the host: httpx raises InvalidURL, which is not one of its HTTP errors.
    webhook = Webhook("http://\x00bad/hook", HOOK_SECRET, max_backoff=0.01, max_attempts=2)
    app = create_app(data_dir=tmp_path, web_dir=None, webhook=webhook)
    async with serve_in_task(app) as bridge:
        async with BridgeClient(bridge.ws_url, peer="writer") as client:
            doc = await client.open("d")
            for n in range(3):
                with doc.change() as d:
                    d["n"] = n
                await doc.flush(timeout=10)
        await eventually(lambda: webhook.failed >= 1, timeout=10)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{bridge.http_url}/docs/d")).json() == {"n": 2}
