"""Start and stop the servers under test as real processes on 127.0.0.1, and
measure them the same way (psutil on the server's pid).

- the bridge: ``python -m bridge.cli serve`` (what a user runs), SQLite in a
  fresh temporary data dir, optionally under ``py-spy record``;
- the reference: ``node bench/node/repo_server.mjs``, the stock automerge-repo
  sync server setup (Repo + NodeWSServerAdapter + NodeFSStorageAdapter).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from bridge.testing import RunningBridge, free_port, wait_healthy

BENCH = Path(__file__).resolve().parent
NODE_DIR = BENCH / "node"


@dataclass
class Server:
    kind: str  # "bridge" | "repo"
    port: int
    pid: int
    data_dir: Path
    profile_path: Path | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync" if self.kind == "bridge" else f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def data_dir(prefix: str, existing: Path | None = None) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards; or ``existing``, kept."""
    if existing is not None:
        yield existing
        return
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT if process.args[0].endswith("py-spy") else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _server_pid(process: subprocess.Popen, deadline: float) -> int:
    """The pid doing the serving (the child when wrapped by py-spy)."""
    if not process.args[0].endswith("py-spy"):
        return process.pid
    while time.monotonic() < deadline:
        children = psutil.Process(process.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.05)
    raise TimeoutError("py-spy did not start the bridge")


@contextlib.contextmanager
def bridge(directory: Path | None = None, *, profile: Path | None = None, extra_args: list[str] = ()) -> Iterator[Server]:
    """``automerge-bridge serve`` with SQLite (synchronous=FULL) in ``directory``
    or a temporary one."""
    with data_dir("bridge", directory) as directory:
        port = free_port()
        command = [sys.executable, "-m", "bridge.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--data-dir", str(directory), "--log-level", "warning", *extra_args]
        if profile is not None:
            pyspy = str(Path(sys.executable).parent / "py-spy")
            command = [pyspy, "record", "--format", "raw", "-o", str(profile), "--rate", "200", "--", *command]
        process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   stdout=subprocess.DEVNULL if profile else None,
                                   stderr=subprocess.DEVNULL if profile else None)
        try:
            wait_healthy(RunningBridge("127.0.0.1", port, process=process))
            pid = _server_pid(process, time.monotonic() + 10)
            yield Server("bridge", port, pid, directory, profile)
        finally:
            if profile is not None and process.poll() is None:
                # Stop the bridge itself: py-spy then writes its profile and exits.
                with contextlib.suppress(psutil.Error):
                    os.kill(_server_pid(process, time.monotonic() + 1), signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            _stop(process)


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR.parent / "node_modules" / "@automerge" / "automerge-repo").is_dir()


@contextlib.contextmanager
def repo_server(directory: Path | None = None) -> Iterator[Server]:
    """The stock automerge-repo sync server (NodeFS storage in ``directory`` or a
    temporary one)."""
    with data_dir("repo", directory) as directory:
        port = free_port()
        process = subprocess.Popen(["node", str(NODE_DIR / "repo_server.mjs"), str(port), str(directory)],
                                   stdout=subprocess.PIPE, text=True, cwd=BENCH)
        try:
            line = process.stdout.readline()  # {"event":"ready"} once listening
            if not line or json.loads(line).get("event") != "ready":
                raise RuntimeError(f"repo server did not start: {line!r}")
            yield Server("repo", port, process.pid, directory)
        finally:
            _stop(process)


def _each(processes: list[psutil.Process], read) -> list:
    """``read(p)`` for each process still there (one may exit between listing and reading)."""
    values = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            values.append(read(process))
    return values


@dataclass
class Usage:
    cpu_percent: float = 0.0  # of one core, averaged over the window
    rss_mb_peak: float = 0.0
    rss_mb_end: float = 0.0
    samples: list[float] = field(default_factory=list)


class Sampler:
    """Samples a process's RSS every ``interval`` s on a thread; CPU is the
    cpu_times delta over the window (user + system). With ``tree``, its
    children count too: ``serve --workers N`` is a supervisor whose workers
    do the serving."""

    def __init__(self, pid: int, interval: float = 0.25, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.tree = tree
        self.interval = interval
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        return [self.process, *(self.process.children(recursive=True) if self.tree else ())]

    def _cpu(self) -> float:
        return sum(t.user + t.system for t in _each(self._tree(), psutil.Process.cpu_times))

    def _rss(self) -> float:
        return sum(m.rss for m in _each(self._tree(), psutil.Process.memory_info)) / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.usage.samples.append(self._rss())

    def __enter__(self) -> Sampler:
        self._t0, self._cpu0 = time.monotonic(), self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            elapsed = time.monotonic() - self._t0
            self.usage.cpu_percent = 100 * (self._cpu() - self._cpu0) / elapsed if elapsed else 0.0
            self.usage.rss_mb_end = self._rss()
            self.usage.samples.append(self.usage.rss_mb_end)
        self.usage.rss_mb_peak = max(self.usage.samples, default=0.0)
