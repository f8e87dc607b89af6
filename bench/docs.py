"""Documents with a given history, built with automerge.core (cached per size)."""

from __future__ import annotations

import functools
import random

from automerge import core


@functools.lru_cache(maxsize=None)
def typed_text(changes: int, actors: int = 4) -> bytes:
    """A saved document whose history is ``changes`` one-character edits to one
    text, typed by ``actors`` authors taking turns (each edit one change)."""
    docs = [core.Document()]
    with docs[0].transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
    docs += [docs[0].fork() for _ in range(actors - 1)]
    turn = max(1, changes // (actors * 10))  # each author types a run, then hands over
    letters = random.Random(changes).choices("etaoin shrdlu cmfwyp", k=changes)  # not trivially compressible
    length, made, author = 0, 1, 0
    while made < changes:
        doc = docs[author]
        for _ in range(min(turn, changes - made)):
            with doc.transaction() as tx:
                tx.splice_text(text, length, 0, letters[made])
            length += 1
            made += 1
        nxt = (author + 1) % actors
        docs[nxt].merge(doc)
        author = nxt
    final = docs[author]
    for doc in docs:
        if doc is not final:
            final.merge(doc)
    return final.save()


def heads_hex(saved: bytes) -> list[str]:
    return [h.hex() for h in core.Document.load(saved).get_heads()]
