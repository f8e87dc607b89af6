"""Out of file descriptors: one clear warning (rate-limited), and /healthz
shows it afterwards.

The real-server tests run the bridge with RLIMIT_NOFILE at 128 and open raw
TCP connections until it is at its limit, on both event loops the bridge
meets: ``automerge-bridge serve`` (uvicorn picks uvloop when it is installed:
libuv drops the connections it cannot accept and tells Python nothing, so
the monitor's sampler is what sees it) and uvicorn on the stdlib asyncio loop
(which reports each failed accept to the loop's exception handler).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import anyio
import httpx
import pytest

from bridge.server.resources import ACCEPT_FAILURE_MESSAGE, FdMonitor, is_accept_failure, open_fds
from bridge.testing import RunningBridge, free_port, stop_process, wait_healthy
from tests.waiting import eventually, nothing_happens_for

pytestmark = pytest.mark.anyio

FD_LIMIT = 128
WARNING = "out of file descriptors:"

# The bridge on the stdlib asyncio loop, as an embedding app would run it.
ASYNCIO_SERVER = """
import logging, sys, uvicorn
from bridge.server.app import create_app
logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
uvicorn.run(create_app(data_dir=sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]),
            loop="asyncio", log_level="warning")
"""


def _low_fd_limit() -> None:  # runs in the child, before exec
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


def _start(kind: str, tmp_path: Path, port: int, log_file) -> subprocess.Popen:
    data_dir = tmp_path / "data"
    if kind == "cli":
        command = [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
                   "--log-level", "warning"]
    else:
        data_dir.mkdir()
        command = [sys.executable, "-c", ASYNCIO_SERVER, str(port), str(data_dir)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log_file, preexec_fn=_low_fd_limit,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(params=["cli", "asyncio"])
def limited_bridge(request, tmp_path) -> Iterator[tuple[RunningBridge, Path]]:
    """A real bridge process with RLIMIT_NOFILE=128, its stderr in a file."""
    log_path = tmp_path / "server.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        process = _start(request.param, tmp_path, port, log_file)
    bridge = RunningBridge("127.0.0.1", port, process=process)
    try:
        wait_healthy(bridge, timeout=20)
        yield bridge, log_path
    finally:
        stop_process(process)


def _warnings(log_path: Path) -> list[str]:
    return [line for line in log_path.read_text(errors="replace").splitlines() if WARNING in line]


async def test_running_out_of_fds_logs_one_warning_and_healthz_shows_it(limited_bridge) -> None:
    bridge, log_path = limited_bridge
    held: list[socket.socket] = []
    try:
        # More connections than descriptors: the server ends up at its limit.
        for _ in range(FD_LIMIT + 32):
            try:
                held.append(socket.create_connection((bridge.host, bridge.port), timeout=2))
            except OSError:
                break
        await eventually(lambda: _warnings(log_path), timeout=10)
        async with httpx.AsyncClient(timeout=1) as http:
            with pytest.raises(httpx.TransportError):
                await http.get(f"{bridge.http_url}/healthz")
        # While it lasts, failures keep coming (asyncio: every accept retry;
        # uvloop: every sample at the limit); the log does not.
        await nothing_happens_for(2.0)
        warnings = _warnings(log_path)
        assert len(warnings) == 1, warnings
        assert f"of {FD_LIMIT} open; new connections are refused until some close (raise the limit with ulimit -n)" in warnings[0]
        assert "bridge.server.resources" in warnings[0]
    finally:
        for sock in held:
            sock.close()

    async with httpx.AsyncClient(base_url=bridge.http_url, timeout=2) as http:
        answers: list[httpx.Response] = []

        async def recovered() -> bool:
            try:
                answers.append(await http.get("/healthz"))
            except httpx.TransportError:
                return False
            return answers[-1].json()["fds"]["open"] < FD_LIMIT - 10

        with anyio.fail_after(15):
            while not await recovered():
                await anyio.sleep(0.1)
    answer = answers[-1]
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded", body
    fds = body["fds"]
    assert fds["limit"] == FD_LIMIT
    assert set(fds) >= {"open", "limit", "accept_failures", "last_accept_failure_age_s"}
    events = fds["accept_failures"] + fds["limit_reached"]
    assert events > len(_warnings(log_path)), fds  # rate-limited, not one line per failure
    if fds["accept_failures"]:
        assert 0 <= fds["last_accept_failure_age_s"] < 60
    [problem] = [p for p in body["problems"] if "file descriptors" in p]
    assert problem.startswith("out of file descriptors") and "new connections were refused" in problem
    assert "ulimit -n" in problem
    assert 1 <= len(_warnings(log_path)) <= 2  # a second one only if it lasted over 10 s
    assert "Traceback" not in log_path.read_text(errors="replace")


# --- FdMonitor on its own ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _monitor(clock: Clock, open_now: int = 40, limit: int = 1024) -> FdMonitor:
    return FdMonitor(clock=clock, count_open=lambda: open_now, get_limit=lambda: limit)


def _accept_failure(code: int = errno.EMFILE) -> dict:
    return {"message": ACCEPT_FAILURE_MESSAGE, "exception": OSError(code, os.strerror(code))}


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bridge.server.resources"]


async def test_accept_failures_log_one_line_per_ten_seconds(caplog) -> None:
    clock = Clock()
    monitor = _monitor(clock, open_now=1021)
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING)
    assert monitor.install()
    try:
        for _ in range(50):
            loop.call_exception_handler(_accept_failure())
            clock.now += 0.1
        assert _lines(caplog) == [
            "out of file descriptors: 1021 of 1024 open; new connections are refused until some close "
            "(raise the limit with ulimit -n)"
        ]
        clock.now += 5.1  # 10 s after the first
        loop.call_exception_handler(_accept_failure())
    finally:
        monitor.uninstall()
    lines = _lines(caplog)
    assert len(lines) == 2 and lines[1].endswith("(49 more since the previous warning, not logged)"), lines
    assert not [r for r in caplog.records if r.name == "asyncio"]  # asyncio's own report is replaced
    assert monitor.accept_failures == 51
    assert monitor.snapshot() == {
        "open": 1021, "limit": 1024, "accept_failures": 51, "last_accept_failure_age_s": 0.0,
        "limit_reached": 0, "last_limit_reached_age_s": None,
    }


async def test_chains_to_the_previous_handler_and_restores_it() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict] = []

    def previous(loop, context):
        seen.append(context)

    runners = loop.get_exception_handler()
    loop.set_exception_handler(previous)
    monitor = _monitor(Clock())
    try:
        monitor.install()
        other = {"message": "Task exception was never retrieved", "exception": ValueError("boom")}
        not_fds = {"message": "Fatal error on transport", "exception": OSError(errno.ECONNRESET, "reset")}
        loop.call_exception_handler(other)
        loop.call_exception_handler(not_fds)
        loop.call_exception_handler(_accept_failure(errno.ENFILE))
        assert seen == [other, not_fds]
        assert seen[0] is other  # unchanged
        assert monitor.accept_failures == 1
        monitor.uninstall()
        assert loop.get_exception_handler() is previous
    finally:
        loop.set_exception_handler(runners)


async def test_without_a_previous_handler_asyncio_default_reports(caplog) -> None:
    loop = asyncio.get_running_loop()
    runners = loop.get_exception_handler()  # anyio's test runner has one
    loop.set_exception_handler(None)
    try:
        monitor = _monitor(Clock())
        monitor.install()
        try:
            loop.call_exception_handler({"message": "something else broke", "exception": RuntimeError("x")})
        finally:
            monitor.uninstall()
        assert loop.get_exception_handler() is None
    finally:
        loop.set_exception_handler(runners)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["something else broke"]


async def test_uninstalled_under_another_handler_forwards_everything() -> None:
    loop = asyncio.get_running_loop()
    first_seen: list[dict] = []
    runners = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: first_seen.append(context))
    monitor = _monitor(Clock())
    try:
        monitor.install()
        ours = loop.get_exception_handler()
        loop.set_exception_handler(lambda loop, context: ours(loop, context))  # someone chains on top
        monitor.uninstall()  # cannot unhook: must now be transparent
        failure = _accept_failure()
        loop.call_exception_handler(failure)
        assert first_seen == [failure] and monitor.accept_failures == 0
    finally:
        loop.set_exception_handler(runners)


def test_install_is_a_no_op_outside_asyncio() -> None:
    monitor = FdMonitor()
    assert monitor.install() is False  # no running loop
    monitor.uninstall()

    import trio

    async def under_trio() -> bool:
        return monitor.install()

    assert trio.run(under_trio) is False
    monitor.uninstall()


def test_problem_at_high_water_and_after_exhaustion() -> None:
    clock = Clock()
    assert _monitor(clock, open_now=900, limit=1024).problem() is None
    busy = _monitor(clock, open_now=922, limit=1024)
    assert busy.problem() == (
        "922 of 1024 file descriptors open (90%): at the limit new connections are refused "
        "(raise the limit with ulimit -n)"
    )
    monitor = _monitor(clock, open_now=30, limit=1024)
    monitor.record_accept_failure(OSError(errno.EMFILE, "Too many open files"))
    clock.now += 12
    assert monitor.problem() == (
        "out of file descriptors 12 s ago (1 accept failures): new connections were refused; "
        "30 of 1024 file descriptors open now (raise the limit with ulimit -n)"
    )
    clock.now += 48.5
    assert monitor.problem() is None  # over a minute ago
    assert monitor.snapshot()["last_accept_failure_age_s"] == 60.5


def test_a_sample_at_the_limit_counts_and_warns(caplog) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    monitor = _monitor(clock, open_now=128, limit=128)
    for _ in range(3):
        monitor.sample()
        clock.now += 1
    assert monitor.limit_reached == 3
    assert _lines(caplog) == [
        "out of file descriptors: 128 of 128 open; new connections are refused until some close "
        "(raise the limit with ulimit -n)"
    ]
    assert monitor.problem().startswith("out of file descriptors 1 s ago (the process was at its limit)")


def test_open_fds_counts_this_process(monkeypatch) -> None:
    before = open_fds()
    assert before is not None and before >= 3
    with open(os.devnull) as _:
        assert open_fds() == before + 1

    def at_limit(path):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "listdir", at_limit)
    assert open_fds() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_recognises_only_accept_failures() -> None:
    assert is_accept_failure(_accept_failure(errno.ENOBUFS))
    assert not is_accept_failure({"message": ACCEPT_FAILURE_MESSAGE, "exception": OSError(errno.EBADF, "bad")})
    assert not is_accept_failure({"message": "Fatal read error", "exception": OSError(errno.EMFILE, "x")})
    assert not is_accept_failure({"message": ACCEPT_FAILURE_MESSAGE})
