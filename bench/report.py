"""Result tables: printed as text, written as JSON."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class Table:
    scenario: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def note(self, text: str) -> None:
        self.notes.append(text)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(bridge: float | None, reference: float | None) -> float | None:
    if bridge is None or reference is None or reference == 0 or math.isinf(bridge) or math.isinf(reference):
        return None
    return bridge / reference


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.2f}"
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(table: Table) -> str:
    cells = [table.columns] + [[fmt(v) for v in row] for row in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    lines = [f"== {table.scenario}: {table.title}"]
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"  * {note}" for note in table.notes]
    return "\n".join(lines)


def write_json(path: str | Path, tables: list[Table], meta: dict) -> None:
    Path(path).write_text(json.dumps({"meta": meta, "tables": [asdict(t) for t in tables]}, indent=2, default=str))
