"""End-to-end smoke: a tiny scenario against a real bridge process. Checks
what was measured is consistent (every change reached the server), never how fast."""

from __future__ import annotations

import pytest

from bench import throughput


@pytest.mark.slow
def test_throughput_scenario_counts_every_change():
    table = throughput.run(quick=True, clients=2, seconds=0.5)
    row = dict(zip(table.columns, table.rows[0]))
    assert row["changes"] > 0
    assert row["on server"] == row["changes"]
