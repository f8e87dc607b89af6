"""A store that keeps everything in this process: for tests and throwaway use.

Same semantics as the SQLite store: up to two snapshots per document, change
rows marked with the generation of the snapshot that covers them and deleted
only when the next snapshot is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from . import AppendChanges, Committed, Compact, DeleteDoc, DocInfo, StoredDoc, Write

_BYTES = (bytes, bytearray, memoryview)


@dataclass
class _Doc:
    snapshots: list[tuple[int, bytes]] = field(default_factory=list)  # (generation, data), oldest first
    rows: dict[bytes, tuple[bytes, int | None]] = field(default_factory=dict)  # hash -> (data, covered by), append order
    changed_at: float | None = None  # unix time of the last append that stored a row

    def copy(self) -> _Doc:
        return _Doc(list(self.snapshots), dict(self.rows), self.changed_at)

    def info(self, doc_id: str) -> DocInfo:
        size = sum(len(data) for _, data in self.snapshots) + sum(len(data) for data, _ in self.rows.values())
        return DocInfo(doc_id, size, self.changed_at)


class MemoryStore:
    def __init__(self) -> None:
        self._docs: dict[str, _Doc] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check(self) -> None:
        pass

    async def load(self, doc_id: str) -> StoredDoc | None:
        doc = self._docs.get(doc_id)
        if doc is None:
            return None
        return StoredDoc(
            snapshots=[data for _, data in reversed(doc.snapshots)],
            changes=[(change_hash, data) for change_hash, (data, _) in doc.rows.items()],
            gen=doc.snapshots[-1][0] if doc.snapshots else 0,
        )

    async def commit(self, writes: Sequence[Write]) -> list[Committed]:
        # Apply to copies of the documents written, then swap them in: all or
        # nothing, as a transaction would be.
        staged: dict[str, _Doc] = {}

        def doc(doc_id: str) -> _Doc:
            if doc_id not in staged:
                current = self._docs.get(doc_id)
                staged[doc_id] = current.copy() if current is not None else _Doc()
            return staged[doc_id]

        done: list[Committed] = []
        for write in writes:
            if isinstance(write, AppendChanges):
                done.append(Committed())
                target = doc(write.doc_id)
                for change_hash, data in write.changes:
                    if not isinstance(change_hash, _BYTES) or not isinstance(data, _BYTES):
                        raise TypeError(f"a change is a (hash, bytes) pair of bytes, not {(change_hash, data)!r:.80}")
                    if bytes(change_hash) not in target.rows:
                        target.rows[bytes(change_hash)] = (bytes(data), None)
                        target.changed_at = time.time()
            elif isinstance(write, Compact):
                if not isinstance(write.snapshot, _BYTES):
                    raise TypeError(f"a snapshot is bytes, not {type(write.snapshot).__name__}")
                target = doc(write.doc_id)
                newest = target.snapshots[-1][0] if target.snapshots else 0
                if write.base_gen is not None and write.base_gen != newest:
                    done.append(Committed(gen=None))
                    continue
                gen = newest + 1
                done.append(Committed(gen=gen))
                target.snapshots = [s for s in target.snapshots if s[0] >= gen - 1] + [(gen, bytes(write.snapshot))]
                for change_hash in write.covered:
                    row = target.rows.get(change_hash)
                    if row is not None and row[1] is None:
                        target.rows[change_hash] = (row[0], gen)
                target.rows = {
                    h: row for h, row in target.rows.items() if row[1] is None or row[1] >= gen
                }
            elif isinstance(write, DeleteDoc):
                staged[write.doc_id] = _Doc()
                done.append(Committed())
            else:
                raise TypeError(f"unknown write: {write!r}")
        for doc_id, staged_doc in staged.items():
            if staged_doc.snapshots or staged_doc.rows:
                self._docs[doc_id] = staged_doc
            else:
                self._docs.pop(doc_id, None)
        return done

    async def doc_ids(self) -> list[str]:
        return sorted(self._docs)

    async def doc_infos(self, after: str | None = None, limit: int = 100, only: str | None = None) -> list[DocInfo]:
        ids = [only] if only is not None else sorted(d for d in self._docs if after is None or d > after)[:limit]
        return [self._docs[d].info(d) for d in ids if d in self._docs]
