"""Every known way crafted input breaks the Automerge core, checked twice.

(a) The raw core, in a subprocess with bounded address space and time, still
    fails the catalogued way, or no longer does ("fixed upstream"): either is
    a pass and is printed, so that after a binding upgrade one run shows which
    modes the core has fixed. Only a broken harness fails the test.
(b) The guarded receive path (``DocSync`` with an index) refuses the input on
    a realistic document: ``BadSyncMessage`` (or ``CoreFailure`` for modes the
    guard cannot see, catalogued as ``core-failure``), no refused change in
    the heads (an honest change sent with it may be applied), and the document
    still saves and loads back to its heads. Modes the guard does not stop
    are catalogued as ``gap`` and xfail here with the reason.

After upgrading the binding::

    .venv/bin/python -m pytest tests/test_core_failure_modes.py -v -s
"""

from __future__ import annotations

import pytest
from automerge import core

from bridge.core.validate import ChangeIndex
from bridge.core.sync import BadSyncMessage, CoreFailure, DocSync

from .core_failures import MODES, Mode, drain, realistic_doc, run_raw

_ids = [m.name for m in MODES]


@pytest.fixture(scope="module")
def base() -> tuple[bytes, list[bytes]]:
    doc, pending = realistic_doc()
    return doc.save(), pending


@pytest.mark.parametrize("mode", MODES, ids=_ids)
def test_raw_core(mode: Mode, base, record_property):
    doc_bytes, pending = base
    result = run_raw(mode.build(pending), doc_bytes, timeout=mode.timeout, memory=mode.memory)
    assert result.outcome != "harness", f"the subprocess harness broke: {result.detail}"
    verdict = "still fails" if result.outcome in mode.raw else "fixed upstream"
    line = f"{mode.name}: {verdict} (raw core: {result.outcome}; {result.detail[:160]}; {result.seconds:.1f} s"
    line += f", {result.rss_mb} MB)" if result.rss_mb else ")"
    print("\n" + line)
    record_property("raw_core", verdict)


def _guarded(mode: Mode) -> list:
    marks = []
    if mode.guard == "gap":
        marks.append(pytest.mark.xfail(reason=f"guard gap: {mode.symptom}", strict=False))
    return marks


@pytest.mark.parametrize("mode", [pytest.param(m, marks=_guarded(m), id=m.name) for m in MODES])
def test_guard_refuses(mode: Mode, base):
    doc_bytes, pending = base
    doc = core.Document.load(doc_bytes)
    heads = doc.get_heads()
    index = ChangeIndex.of(doc)
    sync = DocSync(doc, index=lambda: index)
    inp = mode.build(pending)
    refused: list[BaseException] = []
    honest: set[bytes] = set()
    for message in inp.messages:
        try:
            applied = sync.receive(message)
        except BadSyncMessage as exc:
            refused.append(exc)
            index.add_changes(exc.applied)  # an honest prefix may be applied
            honest.update(change.hash for change in exc.applied)
            continue
        except CoreFailure as exc:
            assert mode.guard == "core-failure", f"{mode.name}: reached the core: {exc}"
            refused.append(exc)
            continue
        index.add_changes(applied)
        honest.update(change.hash for change in applied)
    if mode.guard == "core-failure":
        # The guard cannot see it; the core fails and poisons the Document.
        # The server drops that copy and reloads the durable state: do so.
        assert refused and isinstance(refused[-1], CoreFailure), f"{mode.name}: no CoreFailure"
        doc = core.Document.load(doc_bytes)
        sync.rebind(doc)
    if inp.generate:
        sync.generate()  # bounded
        drain(sync)  # and settles: the core answers the input it kept
    if mode.guard != "neutralised":
        assert refused, f"{mode.name}: accepted by the guard"
    assert set(doc.get_heads()) <= set(heads) | honest, "a refused change reached the document"
    assert core.Document.load(doc.save()).get_heads() == doc.get_heads()
