"""PostgreSQL store: the acceptance suite, plus what sharing one database
among several bridges needs (schema under concurrent starts, per-document
sequences under concurrent commits, compactions racing, restarts).

Real PostgreSQL (tests/services.py): each test gets a fresh database.
"""

from __future__ import annotations

import contextlib

import random
import traceback
from collections import defaultdict
from dataclasses import dataclass

import anyio
import asyncpg
import pytest
from automerge import core

from bridge.storage import AppendChanges, Committed, Compact, acceptance, open_store
from bridge.storage import sqlite as sqlite_store
from bridge.storage.acceptance import *  # noqa: F403 (the test_* functions)
from bridge.storage.postgres import SCHEMA_VERSION, PostgresStore, SchemaTooNew, redact_url
from tests.services import postgres_url, restart_postgres, start_postgres, stop_postgres  # noqa: F401 (fixture)

history = acceptance._history
pairs = acceptance._pairs
PASSWORD = "pw-S3cret-9f2k"  # trust auth on the test server ignores it; it must never show


@pytest.fixture
async def store(postgres_url):  # noqa: F811
    store = PostgresStore(postgres_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def stores(postgres_url):  # noqa: F811
    """Two stores on one database: two bridges."""
    opened = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    for s in opened:
        await s.open()
    yield opened
    for s in opened:
        await s.close()


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


async def query(url: str, sql: str, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def heads(data: bytes) -> list[bytes]:
    return core.Document.load(data).get_heads()


def edit(doc: core.Document, key: str, n: int) -> list[core.Change]:
    """``n`` changes (one key each) on ``doc``; returns them."""
    before = doc.get_heads()
    for i in range(n):
        with doc.transaction() as tx:
            tx.put(core.ROOT, f"{key}{i}", core.ScalarType.Int, i)
    return doc.get_changes(before)


# --- schema ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_creates_the_schema_on_an_empty_database(postgres_url):  # noqa: F811
    store = open_store(postgres_url.replace("postgresql://", "postgres://"))
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        await store.open()  # a no-op
        assert [r["version"] for r in await query(postgres_url, "SELECT version FROM bridge_schema")] == [1]
        assert SCHEMA_VERSION == 1
        tables = await query(
            postgres_url, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'bridge%' ORDER BY 1"
        )
        assert [r["table_name"] for r in tables] == ["bridge_changes", "bridge_docs", "bridge_schema", "bridge_snapshots"]
    finally:
        await store.close()
        await store.close()  # closing twice is harmless too


@pytest.mark.anyio
async def test_bridges_starting_together_on_a_fresh_database_all_open(postgres_url):  # noqa: F811
    many = [PostgresStore(postgres_url) for _ in range(6)]
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for s in many:
                    tg.start_soon(s.open)
        assert [r["version"] for r in await query(postgres_url, "SELECT version FROM bridge_schema")] == [1]
        _, changes = history(2)
        await many[0].commit([AppendChanges("a", pairs(changes))])
        assert (await many[-1].load("a")).changes == pairs(changes)
    finally:
        for s in many:
            await s.close()


@pytest.mark.anyio
async def test_a_database_from_a_newer_bridge_is_refused(postgres_url):  # noqa: F811
    first = PostgresStore(postgres_url)
    await first.open()
    await first.close()
    await query(postgres_url, "UPDATE bridge_schema SET version = 99")
    newer = PostgresStore(with_password(postgres_url))
    with pytest.raises(SchemaTooNew) as refused:
        await newer.open()
    assert isinstance(refused.value, sqlite_store.SchemaTooNew), "the CLI catches the SQLite store's class"
    text = str(refused.value)
    assert "schema version 99" in text and f"up to version {SCHEMA_VERSION}" in text and "newer bridge" in text
    assert postgres_url.rsplit("/", 1)[1] in text, "it names the database"
    assert PASSWORD not in "".join(traceback.format_exception(refused.value))
    with pytest.raises(RuntimeError):
        await newer.load("a")  # not open: nothing was left half-open


@pytest.mark.anyio
async def test_reopening_keeps_everything(postgres_url):  # noqa: F811
    doc, changes = history(4)
    first = PostgresStore(postgres_url)
    await first.open()
    snapshot = core.Document.load(b"".join(c.bytes for c in changes[:2])).save()
    await first.commit(
        [AppendChanges("a", pairs(changes)), Compact("a", snapshot, frozenset(c.hash for c in changes[:2]))]
    )
    before = await first.load("a")
    await first.close()
    second = PostgresStore(postgres_url)
    await second.open()
    try:
        after = await second.load("a")
        assert after == before and after.gen == 1 and after.seq == 4
        assert heads(after.as_bytes()) == doc.get_heads()
        (more,) = await second.commit([AppendChanges("a", pairs(history(5)[1][4:]))])
        assert (more.prev_seq, more.seq) == (4, 5), "the sequence carries on"
    finally:
        await second.close()


# --- sharing: sequences, reading back ----------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_overlapping_appends_from_two_bridges_get_gapless_commit_ordered_sequences(
    stores, postgres_url  # noqa: F811
):
    rng = random.Random(7)
    docs = {f"d{i}": history(30)[1] for i in range(5)}
    submitted: list[tuple[AppendChanges, Committed]] = []
    seen: dict[str, int] = defaultdict(int)
    read_back: dict[str, list[bytes]] = defaultdict(list)
    writers_done = anyio.Event()

    async def writer(store: PostgresStore, seed: int) -> None:
        mine = random.Random(seed)
        for _ in range(8):
            batch = []
            for doc_id in mine.sample(sorted(docs), k=mine.randint(1, len(docs))):  # any order
                changes = docs[doc_id]
                start = mine.randrange(len(changes))
                batch.append(AppendChanges(doc_id, pairs(changes[start : start + mine.randint(1, 8)])))
            results = await store.commit(batch)
            submitted.extend(zip(batch, results))

    async def read_all_since(store: PostgresStore) -> None:
        # A bridge healing from the store: whatever it reads after `seen`
        # must be exactly the rows seen+1 .. seq, never a gap to fill later.
        for doc_id in docs:
            stored = await store.read_since(doc_id, seen[doc_id])
            if stored is None:
                continue
            assert len(stored.changes) == stored.seq - seen[doc_id]
            seen[doc_id] = stored.seq
            read_back[doc_id].extend(h for h, _ in stored.changes)

    async def reader(store: PostgresStore) -> None:
        while not writers_done.is_set():
            await read_all_since(store)
        await read_all_since(store)

    with anyio.fail_after(25):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, stores[1])
            async with anyio.create_task_group() as writers:
                for n in range(12):
                    writers.start_soon(writer, stores[n % 2], rng.random())
            # Then everything, from both, so every change is in.
            everything = [AppendChanges(d, pairs(c)) for d, c in docs.items()]
            submitted.extend(zip(everything, await stores[0].commit(everything)))
            again = await stores[1].commit(everything)
            assert all(r.seq == r.prev_seq == 30 for r in again)
            writers_done.set()

    for doc_id, changes in docs.items():
        n = len(changes)
        rows = await query(postgres_url, "SELECT seq, hash FROM bridge_changes WHERE doc_id = $1 ORDER BY seq", doc_id)
        assert [r["seq"] for r in rows] == list(range(1, n + 1)), "per-document sequence 1..N, no gaps"
        assert sorted(r["hash"] for r in rows) == sorted(c.hash for c in changes), "every change stored once"
        by_seq = {r["seq"]: r["hash"] for r in rows}
        # The Committed ranges of all commits tile 1..N, and each range holds
        # rows of the write that reported it.
        ranges = sorted((r.prev_seq, r.seq, w) for w, r in submitted if w.doc_id == doc_id and r.seq > r.prev_seq)
        position = 0
        for prev, seq, write in ranges:
            assert prev == position, f"{doc_id}: ranges must tile 1..{n}: {[(p, s) for p, s, _ in ranges]}"
            assert {by_seq[s] for s in range(prev + 1, seq + 1)} <= {h for h, _ in write.changes}
            position = seq
        assert position == n
        assert read_back[doc_id] == [by_seq[s] for s in range(1, n + 1)], "the reader got every row, in order"
        data = dict(pairs(changes))
        stored = await stores[0].load(doc_id)
        assert stored.seq == n and stored.changes == [(by_seq[s], data[by_seq[s]]) for s in range(1, n + 1)]


@pytest.mark.anyio
async def test_read_since_and_positions(store):
    doc, c = history(6)
    assert await store.read_since("a", 0) is None
    assert await store.positions([]) == {}
    assert await store.positions(["a"]) == {}
    await store.commit([AppendChanges("a", pairs(c[:4])), AppendChanges("b", pairs(c[:1]))])

    everything = await store.read_since("a", 0)
    assert everything.changes == pairs(c[:4]) and everything.snapshots == []
    assert (everything.seq, everything.gen) == (4, 0)
    later = await store.read_since("a", 2)
    assert later.changes == pairs(c[2:4]) and later.seq == 4
    assert (await store.read_since("a", 4)).changes == []
    assert await store.positions(["a", "b", "nope"]) == {"a": (4, 0), "b": (1, 0)}

    # A snapshot covering c0-c3, then c4-c5: gen 1, rows stay until gen 2.
    s1 = core.Document.load(b"".join(x.bytes for x in c[:4])).save()
    await store.commit([Compact("a", s1, frozenset(x.hash for x in c[:4]), base_gen=0), AppendChanges("a", pairs(c[4:]))])
    assert await store.positions(["a"]) == {"a": (6, 1)}
    since = await store.read_since("a", 4)
    assert since.changes == pairs(c[4:]) and (since.seq, since.gen) == (6, 1) and since.snapshots == []
    # Gen 2 retires c0-c3: a reader far behind sees gen 2 and loads the whole document.
    s2 = core.Document.load(b"".join(x.bytes for x in c)).save()
    await store.commit([Compact("a", s2, frozenset(x.hash for x in c), base_gen=1)])
    behind = await store.read_since("a", 1)
    assert behind.changes == pairs(c[4:]) and behind.gen == 2
    assert heads((await store.load("a")).as_bytes()) == doc.get_heads()

    # A document only ever compacted has a position too.
    await store.commit([Compact("s", s1)])
    assert await store.positions(["s"]) == {"s": (0, 1)}
    assert (await store.read_since("s", 0)).changes == []


@pytest.mark.anyio
async def test_writes_that_store_nothing_leave_no_document(store):
    _, c = history(1)
    results = await store.commit([AppendChanges("empty", []), Compact("stale", b"x", base_gen=3)])
    assert results == [Committed(seq=0, prev_seq=0), Committed(gen=None)]
    assert await store.doc_ids() == []
    assert await store.load("empty") is None and await store.load("stale") is None
    assert await store.read_since("empty", 0) is None
    assert await store.positions(["empty", "stale"]) == {}
    await store.commit([AppendChanges("empty", pairs(c))])
    assert await store.doc_ids() == ["empty"]


@contextlib.asynccontextmanager
async def logged_store(url: str):
    """A store on one pooled connection, and the list of every statement it sends."""
    store = PostgresStore(url, max_connections=1)
    await store.open()
    try:
        statements: list[str] = []
        async with store._pool.acquire() as conn:
            conn.add_query_logger(lambda record: statements.append(record.query))
        yield store, statements
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_large_batch_across_many_documents_takes_a_few_round_trips(postgres_url):  # noqa: F811
    # One pooled connection, so every statement a commit sends shows in its log.
    async with logged_store(postgres_url) as (store, statements):
        _, c = history(5)
        await store.commit([AppendChanges("doc-0000", pairs(c[:1]))])
        batch = [AppendChanges(f"doc-{i:04d}", pairs(c)) for i in reversed(range(1000))]
        batch.insert(500, Compact("doc-0000", core.Document.load(c[0].bytes).save(), frozenset({c[0].hash}), base_gen=0))
        statements.clear()
        with anyio.fail_after(20):
            results = await store.commit(batch)
        sent = statements[: next(i for i, q in enumerate(statements) if q.startswith("COMMIT")) + 1]  # not the pool's reset
        # BEGIN, lock the documents, find stored hashes, insert the rows, set
        # the sequences, COMMIT; the Compact adds its advisory lock, its
        # generation read and its write (and splits the insert in two only if
        # its document had rows pending: here it has none yet).
        assert sent[0].startswith("BEGIN") and 6 <= len(sent) <= 10, sent  # not one per document
        assert (results[-1].prev_seq, results[-1].seq) == (1, 5)
        assert all((r.prev_seq, r.seq) == (0, 5) for r in results[:500] + results[501:-1])
        assert results[500].gen == 1
        assert len(await store.doc_ids()) == 1000
        assert (await store.load("doc-0999")).changes == pairs(c)
        assert (await store.load("doc-0000")).changes == pairs(c), "the Compact marked doc-0000's row, kept it"


@pytest.mark.anyio
async def test_statement_cache_size_0_prepares_no_named_statements_for_pgbouncer(postgres_url):  # noqa: F811
    """PgBouncer in transaction mode hands each transaction to any server
    connection, so a named prepared statement may not be there next time:
    `?statement_cache_size=0` turns asyncpg's cache off."""
    _, c = history(3)
    for url, named in ((postgres_url, True), (postgres_url + "?statement_cache_size=0", False)):
        store = PostgresStore(url)
        assert "statement_cache_size" not in store._url
        await store.open()
        try:
            for n in range(3):
                await store.commit([AppendChanges(f"d{n}", pairs(c))])
                await store.load(f"d{n}")
            async with store._require_pool().acquire() as conn:
                prepared = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
            assert (prepared > 0) is named, (url, prepared)
        finally:
            await store.close()
    with pytest.raises(ValueError, match="statement_cache_size"):
        PostgresStore(postgres_url + "?statement_cache_size=lots")


@pytest.mark.anyio
async def test_a_database_with_synchronous_commit_off_still_gets_durable_commits(postgres_url, caplog):  # noqa: F811
    database = postgres_url.rsplit("/", 1)[1]
    await query(postgres_url, f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    async with logged_store(postgres_url) as (store, statements):
        _, c = history(1)
        await store.commit([AppendChanges("a", pairs(c))])
        assert "SET LOCAL synchronous_commit = on" in statements
        assert "synchronous_commit = off" in caplog.text


# --- compactions racing ----------------------------------------------------------------


@dataclass
class Bridge:
    """What a bridge holds of the document: its copy, and the newest stored
    generation that copy is known to contain."""

    store: PostgresStore
    doc: core.Document
    base_gen: int

    async def heal(self) -> None:
        stored = await self.store.load("doc")
        self.doc.merge(core.Document.load(stored.as_bytes()))
        self.base_gen = stored.gen


@pytest.mark.anyio
async def test_two_bridges_compacting_one_document_at_once_lose_nothing(stores):
    base, changes = history(5)
    await stores[0].commit([AppendChanges("doc", pairs(changes))])
    bridges = []
    for s in stores:
        stored = await s.load("doc")
        bridges.append(Bridge(s, core.Document.load(stored.as_bytes()), stored.gen))
    bridges[1].doc.set_actor(b"\x02" * 16)  # the two copies edit as different actors

    for generation in range(1, 5):
        # Each bridge accepts edits the other has not seen, and compacts its
        # copy in the same batch, both at the same moment.
        batches = []
        for n, bridge in enumerate(bridges):
            mine = edit(bridge.doc, f"g{generation}-b{n}-", 3)
            covered = frozenset(x.hash for x in bridge.doc.get_changes([]))
            batches.append(
                [AppendChanges("doc", pairs(mine)), Compact("doc", bridge.doc.save(), covered, base_gen=bridge.base_gen)]
            )
        outcomes: dict[int, list[Committed]] = {}

        async def run(n: int) -> None:
            outcomes[n] = await bridges[n].store.commit(batches[n])

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n in range(2):
                    tg.start_soon(run, n)
        gens = sorted((outcomes[n][1].gen for n in range(2)), key=lambda g: g or 0)
        assert gens == [None, generation], "one compaction wins each generation; the stale one is skipped"
        assert all(outcomes[n][0].seq - outcomes[n][0].prev_seq == 3 for n in range(2)), "both appends committed"

        merged = bridges[0].doc.fork()
        merged.merge(bridges[1].doc)
        stored = await stores[0].load("doc")
        assert stored.gen == generation
        assert heads(stored.as_bytes()) == merged.get_heads(), "the newest snapshot plus the rows hold everything"
        for snapshot in stored.snapshots:
            assert heads(snapshot + b"".join(stored.change_bytes)) == merged.get_heads(), "so does the previous one"
        for bridge in bridges:
            await bridge.heal()
            assert bridge.doc.get_heads() == merged.get_heads()

    keys = set(core.Document.load((await stores[1].load("doc")).as_bytes()).keys(core.ROOT))
    assert {f"g{g}-b{n}-{i}" for g in range(1, 5) for n in range(2) for i in range(3)} <= keys
    assert {f"k{i}" for i in range(5)} <= keys


# --- PostgreSQL restarting or down --------------------------------------------------------


async def commit_retrying(store: PostgresStore, writes, timeout: float = 20.0) -> tuple[list[Committed], int]:
    """What group commit does: retry until it goes through (bounded here).
    Returns the results and how many attempts failed."""
    failures = 0
    with anyio.fail_after(timeout):
        while True:
            try:
                return await store.commit(writes), failures
            except Exception:
                failures += 1
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_the_store_works_again_after_postgres_restarts(store):
    doc, c = history(6)
    await store.commit([AppendChanges("a", pairs(c[:2]))])
    await anyio.to_thread.run_sync(restart_postgres)
    (first,), _ = await commit_retrying(store, [AppendChanges("a", pairs(c[2:4]))])
    assert (first.prev_seq, first.seq) == (2, 4)
    await anyio.to_thread.run_sync(restart_postgres)
    (second,), _ = await commit_retrying(store, [AppendChanges("a", pairs(c[4:]))])
    assert (second.prev_seq, second.seq) == (4, 6)
    # Once through, it stays through: no failure for the next ones.
    s = core.Document.load(b"".join(x.bytes for x in c)).save()
    (compacted,) = await store.commit([Compact("a", s, frozenset(x.hash for x in c), base_gen=0)])
    assert compacted.gen == 1
    stored = await store.load("a")
    assert stored.changes == pairs(c) and stored.seq == 6, "nothing committed before a restart is lost"
    assert heads(stored.as_bytes()) == doc.get_heads()
    assert (await store.read_since("a", 5)).changes == pairs(c[5:])
    await store.check()


@pytest.mark.anyio
async def test_while_postgres_is_down_check_and_commit_raise_promptly(postgres_url):  # noqa: F811
    store = PostgresStore(with_password(postgres_url))
    await store.open()
    _, c = history(3)
    try:
        await store.commit([AppendChanges("a", pairs(c[:1]))])
        try:
            await anyio.to_thread.run_sync(stop_postgres)
            with anyio.fail_after(15):
                with pytest.raises(Exception) as down:
                    await store.check()
                assert PASSWORD not in "".join(traceback.format_exception(down.value))
                with pytest.raises(Exception) as failed:
                    await store.commit([AppendChanges("a", pairs(c[1:2]))])
                assert PASSWORD not in "".join(traceback.format_exception(failed.value))
        finally:
            await anyio.to_thread.run_sync(start_postgres)
        (result,), _ = await commit_retrying(store, [AppendChanges("a", pairs(c[1:]))])
        assert (result.prev_seq, result.seq) == (1, 3), "the failed commit applied nothing"
        await store.check()
    finally:
        with anyio.fail_after(15):
            await store.close()


# --- the password never shows --------------------------------------------------------------


@pytest.mark.anyio
async def test_the_password_shows_in_no_repr_and_no_error(postgres_url):  # noqa: F811
    url = with_password(postgres_url)
    store = PostgresStore(url)
    assert PASSWORD not in repr(store) and "postgres@127.0.0.1" in repr(store)
    assert PASSWORD not in repr(open_store(url))
    with pytest.raises(RuntimeError) as closed:
        await store.commit([AppendChanges("a", [])])
    assert PASSWORD not in str(closed.value)
    await store.open()
    try:
        await store.check()
        assert PASSWORD not in repr(store)
    finally:
        await store.close()

    unreachable = PostgresStore(f"postgresql://nobody:{PASSWORD}@127.0.0.1:1/none")
    with anyio.fail_after(15):
        with pytest.raises(Exception) as refused:
            await unreachable.open()
    assert PASSWORD not in "".join(traceback.format_exception(refused.value)) and PASSWORD not in repr(unreachable)
    for bad in [f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/db", f"postgresql://u:{PASSWORD}@[::1/db"]:
        with pytest.raises(Exception) as wrong:
            await PostgresStore(bad).open()
        assert PASSWORD not in "".join(traceback.format_exception(wrong.value)) and PASSWORD not in repr(PostgresStore(bad))


def test_urls_are_shown_without_their_password():
    assert redact_url("postgresql://u:p%40ss@db.example:5433/bridge?sslmode=require") == (
        "postgresql://u@db.example:5433/bridge?sslmode=require"
    )
    assert redact_url("postgres://db/x?password=hunter2&application_name=a") == "postgres://db/x?application_name=a"
    assert redact_url("postgresql://:secret@db/x") == "postgresql://db/x"
    assert redact_url("postgresql://u@h1:5432,h2:5432/x") == "postgresql://u@h1:5432,h2:5432/x"
    for odd in ["postgresql://u:se/cret@db/x", "postgresql://u:se#cret@db/x", "postgresql://u:se@cret@db/x",
                "postgresql://u:secret@[::1/x", "postgresql://u@db/x?sslpassword=secret#frag"]:
        assert "secret" not in redact_url(odd) and "cret" not in redact_url(odd), odd
    assert redact_url("postgresql:///x?host=/run/postgresql") == "postgresql:///x?host=%2Frun%2Fpostgresql"
