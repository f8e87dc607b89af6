"""What the integrity checks cost: the guarded receive path against the bare
core, and loading with every stored row checked against a bare
``Document.load`` (both in this process, no network, no storage).

- apply: one peer's one-character edit received by the server's DocSync,
  guarded (parse, check, re-encode, then ``receive_sync_message``) and not;
- load: a snapshot plus rows through ``load_stored`` (rows parsed and checked,
  the result proven to save and load back) against ``Document.load``.
"""

from __future__ import annotations

import time

from automerge import core

from bridge.core.chunks import Bounds
from bridge.core.loading import load_stored
from bridge.core.sync import DocSync
from bridge.core.validate import ChangeIndex

from .report import Table, median, percentile, ratio


def _text_doc(chars: int) -> tuple[core.Document, bytes]:
    doc = core.Document()
    with doc.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        tx.splice_text(text, 0, 0, "x" * chars)
    return doc, text


def _apply_times(guarded: bool, chars: int, edits: int) -> list[float]:
    base, text = _text_doc(chars)
    saved = base.save()
    server, client = core.Document.load(saved), core.Document.load(saved)
    index = ChangeIndex.of(server)
    on_server = DocSync(server, index=(lambda: index) if guarded else None)
    on_client = DocSync(client)
    times = []
    for i in range(edits):
        with client.transaction() as tx:
            tx.splice_text(text, i, 0, "a")
        for message in on_client.generate():
            started = time.perf_counter()
            applied = on_server.receive(message)
            if guarded:
                index.add_changes(applied)
            times.append(time.perf_counter() - started)
        for message in on_server.generate():
            on_client.receive(message)
    return times


def _load_times(ops: int, rows: int, repeats: int) -> tuple[list[float], list[float], list[float], list[float]]:
    doc, text = _text_doc(ops)
    snapshot = doc.save()
    for i in range(rows):
        with doc.transaction() as tx:
            tx.splice_text(text, i, 0, "a")
    chunks = [c.bytes for c in doc.get_changes([])][1:]

    def timed(fn) -> list[float]:
        out = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
        return out

    return (
        timed(lambda: load_stored([snapshot], chunks, Bounds())),
        timed(lambda: core.Document.load(snapshot + b"".join(chunks))),
        timed(lambda: load_stored([snapshot], [], Bounds())),
        timed(lambda: core.Document.load(snapshot)),
    )


def run(quick: bool) -> Table:
    edits, ops, repeats = (100, 20_000, 3) if quick else (500, 100_000, 7)
    table = Table("guard", "Integrity checks: guarded vs bare core (in process)",
                  ["measure", "guarded p50 ms", "bare p50 ms", "ratio", "guarded p99 ms", "bare p99 ms"])
    guarded, bare = _apply_times(True, 10_000, edits), _apply_times(False, 10_000, edits)
    ms = lambda values, fn: None if not values else fn(values) * 1000  # noqa: E731
    table.add(f"apply a 1-char edit (10k-char text, {edits} edits)", ms(guarded, median), ms(bare, median),
              ratio(median(guarded), median(bare)), ms(guarded, lambda v: percentile(v, 99)), ms(bare, lambda v: percentile(v, 99)))
    checked, plain, checked_snapshot, plain_snapshot = _load_times(ops, 500, repeats)
    table.add(f"load {ops:,}-op snapshot + 500 rows", ms(checked, median), ms(plain, median),
              ratio(median(checked), median(plain)), ms(checked, max), ms(plain, max))
    table.add(f"load {ops:,}-op snapshot alone", ms(checked_snapshot, median), ms(plain_snapshot, median),
              ratio(median(checked_snapshot), median(plain_snapshot)), ms(checked_snapshot, max), ms(plain_snapshot, max))
    table.note("guarded apply = bounded parse of the sync message + seq/start_op/time/dependency checks + re-encode, "
               "then the same receive_sync_message; loading also builds the document's ChangeIndex and, when rows "
               "are added, proves the result saves and loads back (p99 column: max of the repeats for loads)")
    return table
