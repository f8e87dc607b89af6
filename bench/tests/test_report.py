"""The benchmark's own logic: statistics, table rendering, profile parsing,
the in-process floor. No timings are asserted."""

from __future__ import annotations

import json
import math

from bench import floor, profile, wire
from bench.report import Table, percentile, ratio, render, write_json


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 99) is None
    assert percentile([7.0], 99) == 7.0


def test_ratio_handles_missing_and_infinite():
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0) is None
    assert ratio(1.0, math.inf) is None


def test_table_renders_and_writes_json(tmp_path):
    table = Table("x", "title", ["name", "value"])
    table.add("a", 1234.5)
    table.add("b", None)
    table.note("a note")
    text = render(table)
    assert "1,234" in text or "1,235" in text
    assert "n/a" in text and "a note" in text
    write_json(tmp_path / "out.json", [table], {"quick": True})
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["tables"][0]["rows"][0][0] == "a"


def test_profile_categories(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (bridge/cli.py:46);Runner.run (asyncio/runners.py:118) 10\n"
        "main (bridge/cli.py:46);Runner.run (asyncio/runners.py:118);_on_sync (bridge/connection.py:199);"
        "DocSync.receive (bridge/session.py:50) 30\n"
        "Thread._bootstrap (threading.py:1002);Queue.get (queue.py:171);Condition.wait (threading.py:327) 99\n"
    )
    costs, total = profile.categorise(profile.load(raw))
    assert total == 40  # the idle worker thread is left out
    assert costs.most_common(1)[0][0].startswith("Automerge receive_sync_message")
    assert "profile" in render(profile.table({"s": raw}))


def test_floor_star_converges():
    star = floor.Star(4)
    for i in range(12):
        star.edit(i % 4)
    assert all(p.doc.get_heads() == star.hub.get_heads() for p in star.peers)


def test_wire_floor_counts_bytes():
    result = wire.core_floor(5)
    assert result["change_bytes"] > 0
    assert result["editor_up"] > result["change_bytes"]  # a sync message carries the change and more
