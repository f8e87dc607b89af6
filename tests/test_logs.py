"""Log lines are bounded in length and in rate (bridge/logs.py), on a real
server too: a flood of refused frames costs the log a bounded number of lines."""

from __future__ import annotations

import logging
import subprocess
import sys

import anyio
import pytest

from bridge.logs import BoundedLines
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
