"""Backup, restore, export and import: the operator's commands on a store.

- ``backup``: a consistent copy of a SQLite database while a bridge serves
  it. It uses SQLite's online backup API over a read-only connection of its
  own, in one step, so the copy is one snapshot of the WAL database. The
  bridge's lock is not taken and the bridge never waits. The copy is
  checked (``integrity_check``, schema version) before it takes the
  destination's name.
- ``restore``: put such a copy in place of a data directory's database,
  only while no bridge holds it. The database it replaces is kept beside
  it (``bridge.sqlite3.before-restore-<time>``, with its WAL).
- ``export``: each document as an Automerge file (``<id>.automerge``, what
  ``Document.save()`` writes), readable by any Automerge implementation. It
  reads the way the bridge loads (past damaged records), read-only, while a
  bridge serves.
- ``import``: merge Automerge files into documents, through a hub, so with
  the same checks as a peer's changes. A file is first merged into a
  scratch document in memory: one with anything refused is not imported at
  all. SQLite imports refuse while a bridge serves the directory, since its
  loaded copies would never hear of them. Send the file to
  ``POST /docs/{id}/changes`` instead.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from .core.loading import Unloadable, load_stored
from .core.chunks import Bounds
from .errors import QuotaExceeded
from .hub import Hub
from .local import open_local
from .protocol.native import valid_doc_id
from .storage import Store, StoredDoc, open_store
from .storage.memory import MemoryStore
from .storage.sqlite import SCHEMA_VERSION, SQLiteStore

SUFFIX = ".automerge"


class BackupError(Exception):
    """What went wrong, in one line for the operator."""


@dataclass(frozen=True)
class DatabaseSummary:
    documents: int
    changes: int
    snapshots: int
    version: int


def check_database(path: Path) -> DatabaseSummary:
    """Is ``path`` a healthy bridge database this bridge can open? Raises
    BackupError saying why not."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path} cannot be opened: {exc}") from None
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(map(str, problems[:3]))}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"snapshots", "changes"} <= tables:
            raise BackupError(f"{path} is not a bridge database (no snapshots and changes tables)")
        if version > SCHEMA_VERSION:
            raise BackupError(f"{path} has schema version {version}, newer than this bridge's {SCHEMA_VERSION}: "
                              "upgrade the bridge to use it")
        (documents,) = conn.execute("SELECT COUNT(*) FROM (SELECT doc_id FROM snapshots UNION SELECT doc_id FROM changes)").fetchone()
        (changes,) = conn.execute("SELECT COUNT(*) FROM changes").fetchone()
        (snapshots,) = conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()
        return DatabaseSummary(documents, changes, snapshots, version)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a healthy SQLite database: {exc}") from None
    finally:
        conn.close()


def backup(database: Path, destination: Path, *, force: bool = False) -> DatabaseSummary:
    """Copy ``database`` to ``destination`` consistently, while a bridge may be writing it."""
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    if destination.exists() and not force:
        raise BackupError(f"{destination} exists; pass --force to overwrite it")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        target = sqlite3.connect(partial)
        try:
            source.backup(target)  # one step (pages=-1): one consistent snapshot
        finally:
            target.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backing up {database} failed: {exc}") from None
    finally:
        source.close()
    try:
        summary = check_database(partial)
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
    return summary


def restore(database: Path, backup_file: Path) -> Path | None:
    """Put ``backup_file`` in place of ``database`` (no bridge may be serving
    it); return where the replaced database was kept, if there was one."""
    check_database(backup_file)
    store = SQLiteStore(database)
    store.lock()  # StoreLocked while a bridge serves it: the caller says so
    try:
        kept = None
        if database.exists():
            kept = database.with_name(f"{database.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                part = database.with_name(database.name + suffix)
                if part.exists():
                    part.replace(kept.with_name(kept.name + suffix))
        shutil.copyfile(backup_file, database)
        return kept
    finally:
        store._unlock()


async def export(store: Store, out_dir: Path, doc_ids: list[str], bounds: Bounds | None = None) -> list[str]:
    """Write each document (all when ``doc_ids`` is empty) as ``<id>.automerge``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = bounds or Bounds()
    written = []
    for doc_id in doc_ids or await store.doc_ids():
        if not valid_doc_id(doc_id):  # never a path: ids are [A-Za-z0-9._:~-]
            raise BackupError(f"{doc_id!r} is not a document id")
        stored = await store.load(doc_id)
        if stored is None:
            raise BackupError(f"no document {doc_id!r} in the store")
        (out_dir / f"{doc_id}{SUFFIX}").write_bytes(_saved(doc_id, stored, bounds))
        written.append(doc_id)
    return written


def _saved(doc_id: str, stored: StoredDoc, bounds: Bounds) -> bytes:
    try:
        result = load_stored(stored.snapshots, stored.change_bytes, bounds, [h for h, _ in stored.changes])
    except Unloadable as exc:
        raise BackupError(f"document {doc_id!r} does not load: {exc}") from None
    return result.doc.save()


async def import_files(store: Store, files: list[tuple[str, bytes]]) -> list[tuple[str, int]]:
    """Merge each ``(doc_id, Automerge bytes)`` into the store durably, with
    the bridge's checks; nothing of a file that fails them. Returns each
    document's id and how many changes the file carried."""
    for doc_id, data in files:  # every file checked before anything is written
        await _check_alone(doc_id, data)
    imported = []
    async with anyio.create_task_group() as tg:
        hub = Hub(store)
        await tg.start(hub.run)
        for doc_id, data in files:
            async with open_local(hub, doc_id, peer="import") as doc:
                carried = doc.merge(data)
                await doc.flush(60, heads=carried)
            imported.append((doc_id, len(carried)))
        tg.cancel_scope.cancel()
    return imported


async def _check_alone(doc_id: str, data: bytes) -> None:
    if not valid_doc_id(doc_id):
        raise BackupError(f"{doc_id!r} is not a document id (1-256 characters of A-Z a-z 0-9 . _ : ~ -)")
    why = None
    async with anyio.create_task_group() as tg:
        scratch = Hub(MemoryStore())
        await tg.start(scratch.run)
        async with open_local(scratch, doc_id, peer="import") as doc:
            try:
                doc.merge(data)
            except (ValueError, QuotaExceeded) as exc:
                why = str(exc)
        tg.cancel_scope.cancel()
    if why is not None:  # raised out here: inside the task group it would come wrapped in a group
        raise BackupError(f"{doc_id}: refused, nothing imported: {why}")


def open_for_reading(url: str) -> Store:
    """A store to export from: SQLite read-only (no lock: a bridge may be serving it)."""
    store = open_store(url)
    if isinstance(store, SQLiteStore):
        store.read_only = True
    return store
