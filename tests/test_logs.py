"""Log lines are bounded in length and in rate (bridge/logs.py), on a real
server too: a flood of refused frames costs the log a bounded number of lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import anyio
import httpx
import pytest

from bridge.logs import BoundedLines, ConnectionFields, QuietProbes, TextFormatter, logging_config
from bridge.tokens import mint
from bridge.testing import RunningBridge, free_port, stop_process, wait_healthy

from .rawpeer import RawPeer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("bridge.test", logging.WARNING, __file__, 1, msg, args, None)


def test_a_line_is_cut_at_max_line_whatever_its_arguments():
    lines = BoundedLines(max_line=100)
    record = _record("peer %s: %s", "p" * 10_000, "why")
    assert lines.filter(record)
    assert len(record.getMessage()) < 140 and record.getMessage().endswith(" more characters)")


def test_repeated_lines_are_rate_limited_per_template_and_the_next_one_counts_the_rest():
    clock = Clock()
    lines = BoundedLines(rate=1.0, burst=3, clock=clock)
    passed = [lines.filter(_record("peer %s: refused", n)) for n in range(100)]
    assert passed.count(True) == 3
    assert lines.filter(_record("another kind of line %s", 1)), "each template has its own allowance"
    clock.now += 1.0
    record = _record("peer %s: refused", "late")
    assert lines.filter(record)
    assert record.getMessage() == "peer late: refused [97 similar lines suppressed]"


@pytest.mark.anyio
async def test_a_flood_of_refused_frames_writes_a_bounded_log(tmp_path):
    port = free_port()
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
             "--log-level", "info", "--max-frames-per-second", "off", "--max-bytes-per-second", "off"],
            stderr=stderr, stdout=subprocess.DEVNULL,
        )
    bridge = RunningBridge("127.0.0.1", port, process=process)
    try:
        wait_healthy(bridge)
        peer = await RawPeer.connect(bridge.ws_url, peer="x" * 256)
        await peer.send({"t": "open", "doc": "d"})
        for n in range(2000):
            await peer.send({"t": "sync", "doc": "d", "data": b"not automerge %d" % n})
        with anyio.fail_after(30):
            refused = 0
            while refused < 2000:
                frame = await peer.recv()
                refused += frame["t"] == "error" and frame["code"] == "bad_sync"
    finally:
        stop_process(process)
    lines = [line for line in log_path.read_text().splitlines() if "refused sync message" in line]
    # 2000 refusals; the burst and a few seconds' worth get through.
    assert 10 <= len(lines) <= 200, len(lines)
    assert all(len(line) < 2600 for line in log_path.read_text().splitlines())


@pytest.mark.anyio
async def test_json_lines_name_the_connection_and_the_document_never_a_token_nor_a_probe(tmp_path):
    """`serve --log-format json`: uvicorn's lines and the bridge's are one JSON
    object each; a warning about a peer's document carries its session, peer,
    identity, client address and document; no token appears anywhere, though
    one came in a query string; health probes are not access-logged."""
    secret = "s" * 40
    (tmp_path / "secret").write_text(secret)
    token = mint(secret, sub="alice", write=["*"], ttl=600)
    port = free_port()
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
             "--log-format", "json", "--auth-secret-file", str(tmp_path / "secret")],
            stderr=stderr, stdout=subprocess.DEVNULL,
        )
    bridge = RunningBridge("127.0.0.1", port, process=process)
    try:
        wait_healthy(bridge)
        async with httpx.AsyncClient(base_url=bridge.http_url) as http:
            for path in ("/healthz", "/readyz", f"/docs/logged?token={token}"):
                await http.get(path)
        peer = await RawPeer.connect(f"{bridge.ws_url}?token={token}", peer="tab-1")
        await peer.send({"t": "open", "doc": "invoice-7"})
        await peer.send({"t": "sync", "doc": "invoice-7", "data": b"not automerge"})
        await peer.recv_until(lambda f: f["t"] == "error")
        session = peer.welcome["session"]
        await peer.close()
    finally:
        stop_process(process)
    text = log_path.read_text()
    assert token not in text and token.split(".")[2] not in text
    entries = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert {"uvicorn.error", "uvicorn.access"} <= {e["logger"] for e in entries}
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert not [e for e in access if e["path"].startswith(("/healthz", "/readyz"))]
    [docs_line] = [e for e in access if e["path"].startswith("/docs/logged")]
    assert docs_line["path"] == "/docs/logged?token=[redacted]" and docs_line["status"] == 404
    about_doc = [e for e in entries if e["logger"].startswith("bridge") and e.get("doc") == "invoice-7"]
    assert {e["level"] for e in about_doc} == {"warning", "info"}  # the refusal, and the error frame sent
    for entry in about_doc:
        assert (entry["session"], entry["peer"], entry["identity"], entry["client"]) == (
            session, "tab-1", "alice", "127.0.0.1")


def test_text_lines_carry_the_same_fields_and_probes_can_be_logged_on_request():
    config = logging_config("info", "text", log_probes=True)
    assert "quiet_probes" not in config["handlers"]["access"]["filters"]
    record = _record("peer %s doc %s: refused", "tab-1", "d")
    record.doc = "d"
    ConnectionFields().filter(record)
    assert TextFormatter().format(record).endswith("bridge.test: peer tab-1 doc d: refused [doc=d]")
    probe = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                              ("1.2.3.4:5", "GET", "/healthz?x=1", "1.1", 200), None)
    assert not QuietProbes().filter(probe)
