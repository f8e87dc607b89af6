"""A store that keeps everything in this process: for tests and throwaway use."""

from __future__ import annotations

from typing import Sequence

from . import AppendChanges, Compact, StoredDoc, Write


class MemoryStore:
    def __init__(self) -> None:
        self._docs: dict[str, tuple[bytes | None, dict[bytes, bytes]]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def load(self, doc_id: str) -> StoredDoc | None:
        if doc_id not in self._docs:
            return None
        snapshot, changes = self._docs[doc_id]
        return StoredDoc(snapshot, list(changes.values()))

    async def commit(self, writes: Sequence[Write]) -> None:
        # Check every write before applying any: all or nothing, as a
        # transaction would be.
        for write in writes:
            if not isinstance(write, (AppendChanges, Compact)):
                raise TypeError(f"unknown write: {write!r}")
        for write in writes:
            if isinstance(write, Compact):
                self._docs[write.doc_id] = (write.snapshot, {})
                continue
            _, changes = self._docs.setdefault(write.doc_id, (None, {}))
            for change_hash, data in write.changes:
                changes.setdefault(change_hash, data)

    async def doc_ids(self) -> list[str]:
        return sorted(self._docs)
