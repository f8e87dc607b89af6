"""PostgreSQL store: one database shared by several bridges, on many machines.

Same semantics as the SQLite store (up to two snapshots per document by
generation; change rows marked with the generation of the snapshot that
covers them and deleted one compaction later), plus what sharing needs:

**A sequence per document.** ``bridge_docs.seq`` counts the rows ever appended
to a document; a commit numbers the document's new rows ``prev+1 .. seq`` and
reports that range (:class:`~bridge.storage.Committed`), so other bridges can
tell from the bus whether they missed a commit, and read what they lack with
:meth:`PostgresStore.read_since`.

**Sequence order is commit order.** Every commit starts by locking the
``bridge_docs`` rows of all the documents it touches, and takes the numbers
from those rows. A second commit to the same document, from any bridge, waits
on that row lock until the first has committed or rolled back, and then
continues from its counter. So per document the numbers are handed out in
commit order with no gaps, and a reader that has everything up to N and later
reads ``seq > N`` misses nothing. (A global ``bigserial`` would not do: numbers
are taken at insert time, transactions commit in another order, and a reader
could pass over a row whose transaction commits late.)

**Lock order.** The rows are locked in one statement, in sorted doc_id order,
before anything else is written. Two batches sharing documents then take
their locks in the same order, so they queue instead of deadlocking.

**Compaction by base generation.** A :class:`~bridge.storage.Compact` names
the newest generation its writer's copy is known to contain. Another bridge
may have written a newer snapshot meanwhile, containing changes this writer
lacks; retiring rows and the older snapshot on the strength of ours could
then lose them. So, under a per-document advisory lock, a Compact whose
``base_gen`` is not the newest generation writes nothing (``Committed.gen``
is None) and its writer heals and compacts again later. Snapshots therefore
only grow, and the previous snapshot plus the rows always hold everything.

**Durability.** ``commit`` returns once PostgreSQL has committed the
transaction with ``synchronous_commit`` at least ``local`` (the default,
``on``, or stronger is left alone; ``off`` would break the promise, so this
store raises it to ``on`` inside its own transactions and says so once).

Connections come from a small asyncpg pool (asyncio only). A restart of
PostgreSQL breaks the pooled connections; the pool replaces them on the next
use, so the commit that meets a dead connection raises (group commit retries
it) and the next one goes through. Connect and command timeouts bound every
wait, so a store that is down makes commits fail, never hang.

A commit whose outcome is unknown (the connection dropped during COMMIT) is
safe to retry: appends are idempotent per (document, hash), and a retried
Compact finds its base generation gone and is skipped.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Sequence
from urllib.parse import unquote

import anyio

from ..logs import get_logger
from ..urls import redact_url, split_url, take_query_param
from . import AppendChanges, Committed, Compact, DeleteDoc, DocInfo, SchemaTooNew, StoredDoc, Write

log = get_logger(__name__)

SCHEMA_VERSION = 1  # kept in bridge_schema.version

CONNECT_TIMEOUT = 5.0  # seconds to open one connection
COMMAND_TIMEOUT = 30.0  # seconds for one statement (a commit waiting on another bridge's lock included)
ACQUIRE_TIMEOUT = 30.0  # seconds to wait for a free pooled connection
CLOSE_TIMEOUT = 10.0  # seconds to let close() finish gracefully before cutting connections

# A bulk insert is split so that no single bytea[] parameter nears
# PostgreSQL's 1 GB limit on a value.
INSERT_CHUNK_BYTES = 64 * 1024 * 1024

# pg_advisory_xact_lock(int, int) key for schema creation and migration. The
# two-int key space never overlaps the one-bigint key space that the
# per-document locks use.
_SCHEMA_LOCK = (0x616D6272, 0x736368)  # "ambr", "sch"

_BYTES = (bytes, bytearray, memoryview)

_SCHEMA_V1 = [
    """
CREATE TABLE bridge_docs (
    doc_id     text PRIMARY KEY,
    seq        bigint NOT NULL DEFAULT 0,   -- rows ever appended: the document's store sequence
    gen        int NOT NULL DEFAULT 0,      -- generation of the newest snapshot (0: none)
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()  -- the last append that stored a row
)""",
    """
CREATE TABLE bridge_snapshots (
    doc_id text NOT NULL,
    gen    int NOT NULL,                    -- 1, 2, ... per document; the two newest are kept
    data   bytea NOT NULL,
    PRIMARY KEY (doc_id, gen)
)""",
    """
CREATE TABLE bridge_changes (
    doc_id  text NOT NULL,
    seq     bigint NOT NULL,                -- place in the document's sequence: commit order
    hash    bytea NOT NULL,
    data    bytea NOT NULL,
    covered int,                            -- generation of the snapshot that holds this row, or NULL
    PRIMARY KEY (doc_id, seq),
    UNIQUE (doc_id, hash)
)""",
]

# Lock (creating where missing) the bridge_docs row of every document in $1,
# in the order given (the caller sorts): see "Lock order" above. Returns each
# row's seq and gen as of the lock: ON CONFLICT DO UPDATE locks and updates
# the newest committed version of the row, even one committed after this
# statement began while it waited.
_LOCK_DOCS = """
INSERT INTO bridge_docs AS d (doc_id)
SELECT doc_id FROM unnest($1::text[]) WITH ORDINALITY AS w(doc_id, n) ORDER BY n
ON CONFLICT (doc_id) DO UPDATE SET seq = d.seq
RETURNING d.doc_id, d.seq, d.gen
"""

# Which of the batch's (doc_id, hash) pairs are stored already. A statement of
# its own, after _LOCK_DOCS: in READ COMMITTED each statement reads a fresh
# snapshot, so this one sees every row committed before we got the locks.
_EXISTING = """
SELECT c.doc_id, c.hash
FROM bridge_changes c
JOIN unnest($1::text[], $2::bytea[]) AS w(doc_id, hash) ON c.doc_id = w.doc_id AND c.hash = w.hash
"""

# No ON CONFLICT: the numbers were computed under the row locks from hashes
# known to be new, so a conflict is a bug, and must fail loudly rather than
# leave a gap in the sequence.
_INSERT_CHANGES = """
INSERT INTO bridge_changes (doc_id, seq, hash, data)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bytea[])
"""

_SET_SEQS = """
UPDATE bridge_docs AS d SET seq = w.seq, updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS w(doc_id, seq)
WHERE d.doc_id = w.doc_id
"""

# Every commit holds the document's row lock already, which serialises
# compactions among bridges by itself; the advisory lock states the rule
# where it matters, for any writer that compacts another way (a maintenance
# tool, a future code path). Taken after the row locks, always, so it never
# waits on a holder of ours (barring a 64-bit hash collision, which costs a
# wait, or a deadlock PostgreSQL detects and breaks: the commit is retried).
_LOCK_COMPACTION = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

# A statement of its own after the lock, for a snapshot that sees whatever
# committed before the lock was granted.
_NEWEST_GEN = "SELECT gen FROM bridge_docs WHERE doc_id = $1"

# Write generation $2 as sqlite.py's _compact does, in one statement: insert
# the snapshot, drop snapshots older than the previous one, mark the rows it
# covers (those not marked yet), delete the rows an earlier generation covers,
# record the generation. Data-modifying CTEs all run on one snapshot in an
# unspecified order; that is equivalent to sqlite's sequence here because no
# two parts touch the same row (rows marked now get covered = $2, and only
# rows with covered < $2 are deleted; the snapshot inserted is gen $2, and
# only gens below $2 - 1 are dropped). Returns the hashes of the rows deleted.
_COMPACT = """
WITH snapshot AS (
    INSERT INTO bridge_snapshots (doc_id, gen, data) VALUES ($1, $2, $3)
), dropped AS (
    DELETE FROM bridge_snapshots WHERE doc_id = $1 AND gen < $2 - 1
), marked AS (
    UPDATE bridge_changes SET covered = $2
    WHERE doc_id = $1 AND hash = ANY($4::bytea[]) AND covered IS NULL
), doc AS (
    UPDATE bridge_docs SET gen = $2 WHERE doc_id = $1
)
DELETE FROM bridge_changes WHERE doc_id = $1 AND covered < $2
RETURNING hash
"""

# Everything of a document, under its row lock (the admin route). The row
# stays, emptied: the lock is held on it, and a later append in the same
# batch starts the document over from sequence 0.
_DELETE = """
WITH changes AS (
    DELETE FROM bridge_changes WHERE doc_id = $1
), snapshots AS (
    DELETE FROM bridge_snapshots WHERE doc_id = $1
)
UPDATE bridge_docs SET seq = 0, gen = 0 WHERE doc_id = $1
"""

# The admin listing: ids in byte order (COLLATE "C", as Python sorts them).
_DOC_INFOS = """
SELECT d.doc_id, extract(epoch FROM d.updated_at)::float8 AS changed_at,
       ((SELECT COALESCE(sum(octet_length(s.data)), 0) FROM bridge_snapshots s WHERE s.doc_id = d.doc_id)
      + (SELECT COALESCE(sum(octet_length(c.data)), 0) FROM bridge_changes c WHERE c.doc_id = d.doc_id))::bigint AS size
FROM bridge_docs d
WHERE {where} AND (d.seq > 0 OR d.gen > 0)
ORDER BY d.doc_id COLLATE "C"
LIMIT $2
"""

# A document has something stored once a row was appended (rows go only when
# a snapshot covers them) or a snapshot written (the newest always stays). A
# bridge_docs row with neither exists when a batch touched the document
# without storing anything (an empty append, a skipped compaction).
_HAS_DATA = "(seq > 0 OR gen > 0)"


class PostgresStoreError(RuntimeError):
    """An error whose text would have shown the database password, re-raised
    with the password masked."""


def _secrets_of(url: str) -> list[str]:
    """The password texts in ``url``, as written and decoded, longest first
    (to mask them in error texts)."""
    _, userinfo, _, pairs = split_url(url)
    found = {userinfo.split(":", 1)[1]} if ":" in userinfo else set()
    found.update(v for k, v in pairs if "password" in k.lower())
    found.update(re.findall(r"password=([^&#]*)", url, flags=re.IGNORECASE))  # as written
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def _validate(writes: list[Write]) -> None:
    """Refuse a malformed batch before it reaches the database (the
    transaction would refuse it too; this says why, and costs no round trip)."""
    for write in writes:
        if isinstance(write, AppendChanges):
            if not isinstance(write.doc_id, str):
                raise TypeError(f"a document id is a str, not {type(write.doc_id).__name__}")
            for pair in write.changes:
                change_hash, data = pair
                if not isinstance(change_hash, _BYTES) or not isinstance(data, _BYTES):
                    raise TypeError(f"a change is a (hash, bytes) pair of bytes, not {(change_hash, data)!r:.80}")
        elif isinstance(write, Compact):
            if not isinstance(write.doc_id, str):
                raise TypeError(f"a document id is a str, not {type(write.doc_id).__name__}")
            if not isinstance(write.snapshot, _BYTES):
                raise TypeError(f"a snapshot is bytes, not {type(write.snapshot).__name__}")
            if not all(isinstance(h, _BYTES) for h in write.covered):
                raise TypeError("a Compact's covered hashes are bytes")
            if write.base_gen is not None and not isinstance(write.base_gen, int):
                raise TypeError(f"a base generation is an int or None, not {type(write.base_gen).__name__}")
        elif isinstance(write, DeleteDoc):
            if not isinstance(write.doc_id, str):
                raise TypeError(f"a document id is a str, not {type(write.doc_id).__name__}")
        else:
            raise TypeError(f"unknown write: {write!r:.80}")


class PostgresStore:
    """A :class:`~bridge.storage.Store` in a PostgreSQL database that several
    bridges share; also the cluster layer's ``read_since`` and ``positions``."""

    def __init__(self, url: str, *, min_connections: int = 1, max_connections: int = 4) -> None:
        # ``?statement_cache_size=0`` is asyncpg's, not libpq's: taken out of
        # the DSN and handed to the pool. 0 is what PgBouncer in transaction
        # mode needs (a prepared statement belongs to one server connection).
        url, cache_size = take_query_param(url, "statement_cache_size")
        if cache_size is not None and not cache_size.isdigit():
            raise ValueError(f"statement_cache_size must be a whole number, not {cache_size!r}")
        self._statement_cache_size = None if cache_size is None else int(cache_size)
        self._url = url  # holds the password: never shown (see __repr__)
        self.where = f"PostgreSQL database {redact_url(url)}"
        self._secrets = _secrets_of(url)
        self._min, self._max = min_connections, max_connections
        self._pool = None  # asyncpg.Pool once open
        self._raise_sync_commit = False  # the server's synchronous_commit is off: raise it per commit
        self._warned_sync_commit = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self._url)!r})"

    # --- errors never show the password -------------------------------------------

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _no_password_in_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            text = f"{exc}"
            if any(secret in text or secret in repr(exc) for secret in self._secrets):
                # `from None`: the original, which shows it, is not printed with ours.
                raise PostgresStoreError(f"{type(exc).__name__}: {self._mask(text)}") from None
            raise

    # --- opening ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and create or migrate the schema. Opening an open store does nothing."""
        if self._pool is not None:
            return
        import asyncpg

        with self._no_password_in_errors():
            settings = {}
            if not any(k == "application_name" for k, _ in split_url(self._url)[3]):
                settings["application_name"] = "automerge-bridge"
            pool = await asyncpg.create_pool(
                dsn=self._url,
                min_size=self._min,
                max_size=self._max,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                init=self._init_connection,
                server_settings=settings,
                **({} if self._statement_cache_size is None else {"statement_cache_size": self._statement_cache_size}),
            )
            try:
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                    await self._upgrade(conn)
            except BaseException:
                pool.terminate()
                raise
            if self._pool is not None:  # a concurrent open() finished first: keep its pool
                await pool.close()
                return
            self._pool = pool

    async def _init_connection(self, conn) -> None:
        """Each new pooled connection: note a synchronous_commit of ``off``
        (set for the server, database or role), which would let a commit
        return before it is on disk."""
        if await conn.fetchval("SELECT current_setting('synchronous_commit')") == "off":
            self._raise_sync_commit = True
            if not self._warned_sync_commit:
                self._warned_sync_commit = True
                log.warning(
                    "%s has synchronous_commit = off; the bridge sets it to on for its own commits, "
                    "since it acknowledges only what is durable", self.where,
                )

    async def _upgrade(self, conn) -> None:
        """Create the schema, or migrate an older one, in one transaction,
        under an advisory lock: bridges starting together take turns, and
        each finds the schema either absent or complete."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_SCHEMA_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS bridge_schema (version int NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM bridge_schema")
            if version is not None and version > SCHEMA_VERSION:
                raise SchemaTooNew(self.where, version, SCHEMA_VERSION)
            if version is None:
                for statement in _SCHEMA_V1:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO bridge_schema (version) VALUES ($1)", SCHEMA_VERSION)
            # Later versions migrate here, step by step from `version`.

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
            await pool.close()
        if scope.cancelled_caught:
            pool.terminate()

    def _require_pool(self):
        if self._pool is None:
            raise RuntimeError(f"{self.where}: the store is not open")
        return self._pool

    async def check(self) -> None:
        """Raise unless the database answers ``SELECT 1`` now."""
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=CONNECT_TIMEOUT) as conn:
                await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)

    # --- writing ---------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write]) -> list[Committed]:
        """Apply ``writes`` in order in one transaction; return once it is
        committed, with one :class:`Committed` per write."""
        writes = list(writes)
        _validate(writes)
        if not writes:
            return []
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                async with conn.transaction():
                    if self._raise_sync_commit:
                        await conn.execute("SET LOCAL synchronous_commit = on")
                    return await _Batch(conn, writes).apply()

    # --- reading ---------------------------------------------------------------------

    async def load(self, doc_id: str) -> StoredDoc | None:
        """The two newest snapshots (newest first), every row in sequence
        order, and the document's ``gen`` and ``seq``, in one consistent read."""
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                # One snapshot for the three reads, so they agree.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    doc = await conn.fetchrow("SELECT seq, gen FROM bridge_docs WHERE doc_id = $1", doc_id)
                    if doc is None:
                        return None
                    snapshots = await conn.fetch(
                        "SELECT data FROM bridge_snapshots WHERE doc_id = $1 ORDER BY gen DESC LIMIT 2", doc_id
                    )
                    changes = await conn.fetch(
                        "SELECT hash, data FROM bridge_changes WHERE doc_id = $1 ORDER BY seq", doc_id
                    )
        if not snapshots and not changes:
            return None
        return StoredDoc(
            snapshots=[row["data"] for row in snapshots],
            changes=[(row["hash"], row["data"]) for row in changes],
            gen=doc["gen"],
            seq=doc["seq"],
        )

    async def read_since(self, doc_id: str, seq: int) -> StoredDoc | None:
        """The rows after ``seq``, in order, with the document's current
        ``gen`` and ``seq`` (no snapshots), in one consistent read; None if
        the document has nothing stored. Rows may have been retired into a
        snapshot since: a caller whose copy lacks generation ``gen`` reads
        the whole document with :meth:`load` instead."""
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    doc = await conn.fetchrow(
                        f"SELECT seq, gen FROM bridge_docs WHERE doc_id = $1 AND {_HAS_DATA}", doc_id
                    )
                    if doc is None:
                        return None
                    changes = await conn.fetch(
                        "SELECT hash, data FROM bridge_changes WHERE doc_id = $1 AND seq > $2 ORDER BY seq",
                        doc_id, seq,
                    )
        return StoredDoc(changes=[(row["hash"], row["data"]) for row in changes], gen=doc["gen"], seq=doc["seq"])

    async def positions(self, doc_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``(seq, gen)`` of each of ``doc_ids`` that has something stored, in one query."""
        if not doc_ids:
            return {}
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                rows = await conn.fetch(
                    f"SELECT doc_id, seq, gen FROM bridge_docs WHERE doc_id = ANY($1::text[]) AND {_HAS_DATA}",
                    list(doc_ids),
                )
        return {row["doc_id"]: (row["seq"], row["gen"]) for row in rows}

    async def doc_ids(self) -> list[str]:
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                rows = await conn.fetch(f"SELECT doc_id FROM bridge_docs WHERE {_HAS_DATA}")
        return sorted(row["doc_id"] for row in rows)  # Python's order, not the database collation's

    async def doc_infos(self, after: str | None = None, limit: int = 100, only: str | None = None) -> list[DocInfo]:
        where, key = ('d.doc_id = $1', only) if only is not None else ('d.doc_id COLLATE "C" > $1', after or "")
        with self._no_password_in_errors():
            async with self._require_pool().acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                rows = await conn.fetch(_DOC_INFOS.format(where=where), key, limit)
        return [DocInfo(row["doc_id"], row["size"], row["changed_at"]) for row in rows]


class _Batch:
    """One commit's work inside its transaction.

    Round trips for a batch of appends, however many documents: lock the
    documents, look up which hashes exist, insert the new rows (one statement
    per 64 MB), set the sequences. A Compact adds three (advisory lock, read
    the generation, write it); a document's pending rows are inserted before
    its Compact, so the Compact can mark them.
    """

    def __init__(self, conn, writes: list[Write]) -> None:
        self.conn = conn
        self.writes = writes
        self.seq: dict[str, int] = {}  # doc_id -> the document's sequence so far in this batch
        self.start: dict[str, int] = {}  # doc_id -> its sequence when locked
        self.known: dict[str, set[bytes]] = {}  # doc_id -> hashes stored, or added in this batch
        self.pending: list[tuple[str, int, bytes, bytes]] = []  # rows not inserted yet
        self.pending_docs: set[str] = set()

    async def apply(self) -> list[Committed]:
        conn = self.conn
        doc_ids = sorted({write.doc_id for write in self.writes})
        for row in await conn.fetch(_LOCK_DOCS, doc_ids):
            self.seq[row["doc_id"]] = self.start[row["doc_id"]] = row["seq"]
        self.known = {doc_id: set() for doc_id in doc_ids}
        await self._find_existing()

        done: list[Committed] = []
        for write in self.writes:
            if isinstance(write, AppendChanges):
                done.append(self._append(write))
            elif isinstance(write, DeleteDoc):
                if write.doc_id in self.pending_docs:
                    await self._flush()
                await conn.execute(_DELETE, write.doc_id)
                self.seq[write.doc_id] = self.start[write.doc_id] = 0
                self.known[write.doc_id] = set()
                done.append(Committed())
            else:
                assert isinstance(write, Compact)  # _validate refused anything else
                if write.doc_id in self.pending_docs:
                    await self._flush()
                done.append(Committed(gen=await self._compact(write)))
        await self._flush()

        moved = [(doc_id, seq) for doc_id, seq in self.seq.items() if seq != self.start[doc_id]]
        if moved:
            await conn.execute(_SET_SEQS, [d for d, _ in moved], [s for _, s in moved])
        return done

    async def _find_existing(self) -> None:
        wanted = {
            (write.doc_id, bytes(change_hash))
            for write in self.writes
            if isinstance(write, AppendChanges)
            for change_hash, _ in write.changes
        }
        if not wanted:
            return
        ids, hashes = zip(*wanted)
        for row in await self.conn.fetch(_EXISTING, list(ids), list(hashes)):
            self.known[row["doc_id"]].add(row["hash"])

    def _append(self, write: AppendChanges) -> Committed:
        doc_id = write.doc_id
        known = self.known[doc_id]
        prev = self.seq[doc_id]
        seq = prev
        for change_hash, data in write.changes:
            change_hash = bytes(change_hash)
            if change_hash in known:  # stored already, or earlier in this batch
                continue
            known.add(change_hash)
            seq += 1
            self.pending.append((doc_id, seq, change_hash, bytes(data)))
        if seq != prev:
            self.pending_docs.add(doc_id)
            self.seq[doc_id] = seq
        return Committed(seq=seq, prev_seq=prev)

    async def _flush(self) -> None:
        rows, self.pending = self.pending, []
        self.pending_docs.clear()
        start, size = 0, 0
        for i, row in enumerate(rows):
            size += len(row[3]) + len(row[2])
            if size >= INSERT_CHUNK_BYTES or i == len(rows) - 1:
                await self._insert(rows[start : i + 1])
                start, size = i + 1, 0

    async def _insert(self, rows: list[tuple[str, int, bytes, bytes]]) -> None:
        ids, seqs, hashes, data = (list(column) for column in zip(*rows))
        await self.conn.execute(_INSERT_CHANGES, ids, seqs, hashes, data)

    async def _compact(self, write: Compact) -> int | None:
        conn, doc_id = self.conn, write.doc_id
        await conn.execute(_LOCK_COMPACTION, doc_id)
        newest = await conn.fetchval(_NEWEST_GEN, doc_id)
        if write.base_gen is not None and write.base_gen != newest:
            return None  # stale: see Compact.base_gen
        gen = newest + 1
        retired = await conn.fetch(
            _COMPACT, doc_id, gen, bytes(write.snapshot), [bytes(h) for h in write.covered]
        )
        # Retired rows are gone: appending one of them again later in this
        # batch stores it again, as the SQLite store does.
        self.known[doc_id].difference_update(row["hash"] for row in retired)
        return gen
