"""Summarise ``py-spy record --format raw`` output (collapsed stacks: one
``frame;frame;... count`` line per distinct stack, idle threads excluded).

Native Automerge work shows up on the Python line that calls into the
binding, so the leaf line is the useful unit: "self" time of that line.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .report import Table

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path}:{match['line']})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def leaf_costs(stacks: list[tuple[list[str], int]]) -> tuple[Counter, int]:
    costs: Counter = Counter()
    total = 0
    for frames, count in stacks:
        costs[_short(frames[-1])] += count
        total += count
    return costs, total


def inclusive(stacks: list[tuple[list[str], int]], needle: str) -> int:
    """Samples with a frame whose function name or file contains ``needle``."""
    return sum(count for frames, count in stacks if any(needle in f for f in frames))


# A sample's category is decided by the frame nearest the leaf that matches a rule.
RULES = [
    ("Condition.wait (threading", None),  # a worker thread waiting for work: idle
    ("DocSync.receive", "Automerge receive_sync_message (apply a peer's changes)"),
    ("DocSync.generate", "Automerge generate_sync_message (one per peer per change)"),
    ("DocSync._since", "Automerge get_heads/get_changes (what a message added)"),
    ("HashIndex", "Automerge get_heads/get_changes (what a message added)"),
    ("get_heads", "Automerge get_heads/get_changes (what a message added)"),
    ("SQLiteStore._commit", "SQLite commit + fsync (worker thread)"),
    ("run_sync_in_worker_thread", "handing each commit to a worker thread (GIL, locks)"),
    ("native.py", "msgspec encode/decode"),
    ("starlette/websockets.py", "WebSocket send/receive (Starlette + uvicorn websockets)"),
    ("uvicorn/protocols", "WebSocket send/receive (Starlette + uvicorn websockets)"),
    ("Runner.run (asyncio/runners.py", "event loop in C (uvloop: sockets, callbacks)"),
    ("anyio/", "anyio/asyncio task and event machinery"),
    ("asyncio/", "anyio/asyncio task and event machinery"),
]


def categorise(stacks: list[tuple[list[str], int]]) -> tuple[Counter, int]:
    costs: Counter = Counter()
    total = 0
    for frames, count in stacks:
        category = "other"
        for frame in reversed(frames):
            hit = next((rule for rule in RULES if rule[0] in frame), None)
            if hit:
                category = hit[1]
                break
        if category is None:
            continue
        costs[category] += count
        total += count
    return costs, total


def table(paths: dict[str, Path], top: int = 6) -> Table:
    t = Table("profile", "where the bridge spends its time (py-spy; % of busy samples, idle waits excluded)",
              ["scenario", "rank", "cost", "% busy"])
    for scenario, path in paths.items():
        if not path.exists():
            t.note(f"{scenario}: no profile written at {path}")
            continue
        stacks = load(path)
        costs, total = categorise(stacks)
        for rank, (category, count) in enumerate(costs.most_common(top), 1):
            t.add(scenario, rank, category, 100 * count / total)
        leaves, _ = leaf_costs(stacks)
        hot = ", ".join(f"{frame} {100 * n / total:.0f}%" for frame, n in leaves.most_common(4)
                        if "Condition.wait" not in frame)
        t.note(f"{scenario}: {total:,} busy samples at 200 Hz ({path.name}); hottest lines: {hot}")
    return t
