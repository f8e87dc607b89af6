"""Launch Node drivers (bench/node/*.mjs) and read their JSON lines.

A driver prints one JSON object per line. ``{"event": "ready"}`` says it is
set up; once every driver of a run is ready the harness starts sampling the
server and writes ``go`` to each driver's stdin. ``{"event": "stop"}`` ends the
measured window (sampling stops when every driver has stopped),
``{"event": "error", ...}`` reports a problem, and one ``{"event": "result",
...}`` ends the driver's output. Drivers that never say ``ready`` just run.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

from .servers import BENCH, NODE_DIR, Sampler, Usage


class DriverFailed(RuntimeError):
    pass


def _command(script: str, args: dict) -> list[str]:
    command = ["node", str(NODE_DIR / script)]
    for key, value in args.items():
        command += [f"--{key}", str(value)]
    return command


def _pump(index: int, process: subprocess.Popen, events: queue.Queue) -> None:
    for line in process.stdout:
        try:
            events.put((index, json.loads(line)))
        except json.JSONDecodeError:
            if line.strip():
                events.put((index, {"event": "error", "error": f"unparsable output: {line[:200]!r} ({len(line)} chars)"}))
    events.put((index, {"event": "exit"}))


def run_nodes(script: str, args_each: list[dict], *, sample_pid: int | None = None, sample_tree: bool = False,
              timeout: float = 120.0) -> list[dict]:
    """Run one driver per entry of ``args_each`` together; return their results
    in order. ``sample_pid`` (with its children when ``sample_tree``) is the
    server whose CPU and memory are sampled over the measured window."""
    processes = [subprocess.Popen(_command(script, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  cwd=BENCH) for args in args_each]
    events: queue.Queue = queue.Queue()
    for i, process in enumerate(processes):
        threading.Thread(target=_pump, args=(i, process, events), daemon=True).start()
    n = len(processes)
    results: list[dict | None] = [None] * n
    readied, stopped, exited, errors = set(), set(), set(), []
    sampler: Sampler | None = None
    usage = Usage()
    deadline = time.monotonic() + timeout
    try:
        while len(exited) < n:
            try:
                i, event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                errors.append(f"timed out after {timeout:.0f} s")
                break
            kind = event.get("event")
            if kind == "ready":
                readied.add(i)
                if len(readied) == n:
                    if sample_pid is not None:
                        sampler = Sampler(sample_pid, tree=sample_tree).__enter__()
                    for process in processes:
                        process.stdin.write("go\n")
                        process.stdin.flush()
            elif kind == "stop":
                stopped.add(i)
                if len(stopped) == n and sampler is not None:
                    sampler.__exit__(None, None, None)
                    usage, sampler = sampler.usage, None
            elif kind == "result":
                results[i] = event
            elif kind == "error":
                errors.append(event.get("error"))
            elif kind == "exit":
                exited.add(i)
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
            usage = sampler.usage
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    if any(r is None for r in results):
        codes = [p.returncode for p in processes]
        raise DriverFailed(f"{script} exited {codes} without a result; errors: {errors[:3]}")
    server = {"cpu_percent": usage.cpu_percent, "rss_mb_peak": usage.rss_mb_peak, "rss_mb_end": usage.rss_mb_end}
    for r in results:
        r["errors"], r["server"] = errors, server
    return results  # type: ignore[return-value]


def run_node(script: str, args: dict, *, sample_pid: int | None = None, timeout: float = 120.0) -> dict:
    return run_nodes(script, [args], sample_pid=sample_pid, timeout=timeout)[0]


def node_json(script: str, *argv: str, timeout: float = 120.0) -> dict:
    """Run a one-shot helper script with positional arguments; return its result line."""
    done = subprocess.run(["node", str(NODE_DIR / script), *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=BENCH, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
