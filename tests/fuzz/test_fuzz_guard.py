"""Structure-aware fuzzing of the guarded, sans-IO receive path.

Inputs are sync messages built from real changes of a realistic document
(``tests.core_failures.realistic_doc``) with header fields set to edge values,
op columns replaced (huge RLE runs, literal runs, strings that are not UTF-8,
bad column specifications), compressed chunks, document chunks from real saves
with bytes flipped, bloom filters with edge headers, and random bytes.

For every input, ``DocSync(doc, index=...).receive`` either returns or raises
``BadSyncMessage`` / ``CoreFailure``; nothing else escapes. After a
``CoreFailure`` the copy is discarded and reloaded, as the server does. Then
the document still saves and loads back to the same heads, generating sync
messages settles, and an honest peer still converges with it.

Bounded for CI: ``FUZZ_EXAMPLES`` inputs per test (default 300; no deadline).
To run longer::

    FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/fuzz -s

The sibling modules reuse these strategies: ``test_fuzz_server.py`` sends
them (and hostile protocol frames) to a real server process, and
``test_fuzz_storage.py`` fuzzes stored snapshots and change rows; see
tests/fuzz/README.md.

Op-column mutations can still reach core panics the guard cannot see (it
counts and checks the encoding of op columns but does not interpret ops):
those are the ``core-failure`` modes of docs/core-failure-modes.md, and the
printed outcomes count them.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import pytest
from automerge import core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.chunks import sleb, uleb
from bridge.core.validate import ChangeIndex
from bridge.core.sync import BadSyncMessage, CoreFailure, DocSync

from . import flip_bytes

from .. import crafting as c
from ..core_failures import drain, realistic_doc

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "bridge-fuzz-hypothesis"))  # not the working tree

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
settings.register_profile(
    "guard-fuzz",
    deadline=None,
    max_examples=EXAMPLES,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
    database=None,  # no .hypothesis directory in the working tree
)
FUZZ = settings.get_profile("guard-fuzz")

_DOC, _PENDING = realistic_doc()
BASE = _DOC.save()
# An honest peer: the document plus an edit of its own, by an actor nobody
# else uses. (Not the pending edit: a forged change that reuses the pending
# change's actor and seq is, to the guard, an honest first change of that
# actor, and the real one can then never be synced: equivocation, which only
# authenticating actors can prevent.)
PEER = core.Document.load(BASE)
PEER.set_actor(b"\x0e" * 16)
with PEER.transaction() as tx:
    tx.put(core.ROOT, "peer", core.ScalarType.Str, "honest")
PEER_SAVE = PEER.save()

FULL = core.Document.load(BASE)
FULL.receive_sync_message(core.SyncState(), core.Message.decode(c.sync_message(_PENDING)))
FULL_SAVE = FULL.save()

EDGE_U = [0, 1, 2, 3, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**64 - 1]
EDGE_S = [0, 1, -1, 2**31, -(2**31), 2**53, 2**63 - 1, -(2**63)]
SPECS = [c.OBJ_ACTOR, c.OBJ_CTR, c.KEY_ACTOR, c.KEY_CTR, c.KEY_STR, c.ID_ACTOR, c.ID_CTR, c.INSERT, c.ACTION,
         c.VAL_META, c.VAL, c.PRED_GROUP, c.PRED_ACTOR, c.PRED_CTR]

_counts: dict[str, int] = {}


def _tally(name: str) -> None:
    _counts[name] = _counts.get(name, 0) + 1


# --- strategies ---------------------------------------------------------------

uint = st.one_of(st.sampled_from(EDGE_U), st.integers(0, 2**64 - 1))
sint = st.one_of(st.sampled_from(EDGE_S), st.integers(-(2**63), 2**63 - 1))
small = st.one_of(st.sampled_from([0, 1, 2, 3, 127, 128]), st.integers(0, 300))


@st.composite
def header_change(draw) -> bytes:
    """A pending change with one to three header fields set to edge values."""
    chunk = draw(st.sampled_from(_PENDING))
    fields = {}
    for name in draw(st.sets(st.sampled_from(["seq", "start_op", "time", "actor", "deps", "message", "others"]),
                             min_size=1, max_size=3)):
        if name == "seq" or name == "start_op":
            fields[name] = draw(st.one_of(uint, small))
        elif name == "time":
            fields[name] = draw(sint)
        elif name == "actor":
            fields[name] = draw(st.one_of(st.binary(min_size=0, max_size=70),
                                          st.sampled_from([c.parse_change(p).actor for p in _PENDING])))
        elif name == "deps":
            fields[name] = draw(st.lists(st.one_of(st.binary(min_size=32, max_size=32),
                                                   st.sampled_from(_DOC.get_heads())), max_size=3))
        elif name == "message":
            fields[name] = draw(st.one_of(st.binary(max_size=20), st.text(max_size=20)))
        else:
            fields["other_actors"] = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3))
    return c.rewrite(chunk, **fields)


@st.composite
def column_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["nulls", "run", "literal", "strings", "bools", "raw"]))
    if kind == "nulls":
        return c.rle_nulls(draw(st.one_of(uint, small)))
    if kind == "run":
        return sleb(draw(st.one_of(st.integers(-(2**20), 2**20), st.sampled_from(EDGE_S)))) + uleb(draw(uint))
    if kind == "literal":
        return c.rle_literal(draw(st.lists(st.one_of(small, uint), max_size=6)))
    if kind == "strings":
        return c.rle_strings(draw(st.lists(st.one_of(st.binary(max_size=8), st.just(b"\xff\xfe"),
                                                     st.just(b"\xed\xa0\x80")), max_size=4)))
    if kind == "bools":
        return c.bools(*draw(st.lists(st.one_of(small, uint), max_size=4)))
    return draw(st.binary(max_size=12))


@st.composite
def column_change(draw) -> bytes:
    """A pending change with op columns replaced, added, dropped or re-specified."""
    fields = c.parse_change(draw(st.sampled_from(_PENDING)))
    columns = dict(fields.columns)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "add", "drop", "spec"]))
        if action == "replace" and columns:
            columns[draw(st.sampled_from(sorted(columns)))] = draw(column_bytes())
        elif action == "add":
            columns[draw(st.one_of(st.sampled_from(SPECS), st.integers(0, 300)))] = draw(column_bytes())
        elif action == "drop" and columns:
            columns.pop(draw(st.sampled_from(sorted(columns))))
        elif action == "spec" and columns:
            spec = draw(st.sampled_from(sorted(columns)))
            columns[spec ^ (1 << draw(st.integers(0, 7)))] = columns.pop(spec)
    fields.columns = sorted(columns.items())
    if draw(st.booleans()):
        fields.extra = draw(st.binary(max_size=8))
    return fields.chunk()


@st.composite
def bloom_have(draw) -> tuple[list[bytes], bytes]:
    entries = draw(st.one_of(st.sampled_from([0, 1, 2, 2**32 - 1]), st.integers(0, 50)))
    bpe = draw(st.one_of(st.sampled_from([0, 1, 10, 64, 65, 2**32 - 1]), st.integers(0, 20)))
    probes = draw(st.one_of(st.sampled_from([0, 1, 7, 64, 65, 10**7, 2**32 - 1]), st.integers(0, 20)))
    if draw(st.booleans()) and entries * bpe <= 4000:
        bits = None
    else:
        bits = draw(st.binary(max_size=40))
    last = draw(st.lists(st.one_of(st.binary(min_size=32, max_size=32), st.sampled_from(_DOC.get_heads())),
                         max_size=2))
    return last, c.bloom(entries, bpe, probes, bits)


@st.composite
def flipped_document(draw) -> bytes:
    return flip_bytes(draw, draw(st.sampled_from([BASE, PEER_SAVE, FULL_SAVE])), st)


def chunks_of(change: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """The mutated change, maybe compressed, with honest changes around it."""

    @st.composite
    def build(draw) -> list[bytes]:
        bad = draw(change)
        if draw(st.integers(0, 4)) == 0:
            bad = c.compressed(bad)
        out = list(_PENDING) if draw(st.booleans()) else []
        out.insert(draw(st.integers(0, len(out))), bad)
        return out

    return build()


@st.composite
def message(draw, change: st.SearchStrategy[bytes]) -> bytes:
    kind = draw(st.sampled_from(["changes", "changes", "changes", "document", "bloom", "random", "need"]))
    _tally(kind)
    if kind == "changes":
        return c.sync_message(draw(chunks_of(change)))
    if kind == "document":
        return c.sync_message([draw(flipped_document())])
    if kind == "bloom":
        return c.sync_message(heads=draw(st.lists(st.binary(min_size=32, max_size=32), max_size=2)),
                              have=draw(st.lists(bloom_have(), min_size=1, max_size=2)))
    if kind == "need":
        return c.sync_message(need=draw(st.lists(st.binary(min_size=32, max_size=32), max_size=3)),
                              heads=draw(st.lists(st.binary(min_size=32, max_size=32), max_size=2)))
    return draw(st.one_of(st.binary(max_size=200), st.binary(max_size=60).map(lambda b: b"\x42" + b)))


# --- the invariant ------------------------------------------------------------


def converge(a: core.Document, b: core.Document) -> None:
    left, right = DocSync(a), DocSync(b)
    for _ in range(20):
        moved = False
        for src, dst in ((left, right), (right, left)):
            for msg in drain(src):
                dst.receive(msg)
                moved = True
        if not moved:
            break
    assert a.get_heads() and sorted(a.get_heads()) == sorted(b.get_heads())


def check(data: bytes) -> str:
    doc = core.Document.load(BASE)
    index = ChangeIndex.of(doc)
    sync = DocSync(doc, index=lambda: index)
    try:
        index.add_changes(sync.receive(data))
        outcome = "returned"
    except BadSyncMessage as exc:
        index.add_changes(exc.applied)
        outcome = "refused"
    except CoreFailure:
        # What the server does: discard the copy, reload the durable state.
        outcome = "core-failure, reloaded"
        doc = core.Document.load(BASE)
        index = ChangeIndex.of(doc)
        sync.rebind(doc)
    try:
        drain(sync)  # the core answers what it kept of the input, and settles
    except CoreFailure:
        outcome = "generate failed, reset"
        sync.reset()
        drain(sync)
    heads = doc.get_heads()
    assert core.Document.load(doc.save()).get_heads() == heads, "saved document does not load back"
    converge(doc, core.Document.load(PEER_SAVE))
    return outcome


_outcomes: dict[str, int] = {}


def _run(data: bytes) -> None:
    outcome = check(data)
    _outcomes[outcome] = _outcomes.get(outcome, 0) + 1


@pytest.fixture(autouse=True, scope="module")
def _report():
    began = time.monotonic()
    yield
    total = sum(_outcomes.values())
    print(f"\nfuzz: {total} inputs in {time.monotonic() - began:.1f} s; outcomes {_outcomes}; kinds {_counts}")


@FUZZ
@given(message(header_change()))
def test_header_edges_bloom_documents_random(data: bytes) -> None:
    _run(data)


@FUZZ
@given(message(column_change()))
def test_op_column_mutations(data: bytes) -> None:
    _run(data)


def test_seeded_random_bytes() -> None:
    """Plain random bytes after a valid sync message prefix, without hypothesis."""
    rnd = random.Random(1234)
    for _ in range(EXAMPLES):
        prefix = c.sync_message(list(_PENDING))[: rnd.randrange(1, 200)]
        _run(prefix + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40))))
