"""Calls into the Automerge binding, with its failures made ordinary.

The Rust core reports some bad input by panicking; pyo3 turns a panic into
``PanicException``, which derives from ``BaseException`` so that a plain
``except Exception`` lets it through and takes a connection or a background
task down with it. Every call whose input came from outside goes through
:func:`call_core`, which turns any failure into :class:`CoreFailure`.
"""

from __future__ import annotations

from typing import Callable, Container, Iterable, TypeVar

from automerge import core

from .chunks import SYNC_V1, Bounds, Change, ChunkError, DocumentChunk, SyncMessage, encode_sync_message, split_chunks

T = TypeVar("T")

_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)


class CoreFailure(Exception):
    """The Automerge core raised or panicked. If the call could modify a
    document, treat the in-memory copy as damaged."""


def call_core(fn: Callable[..., T], *args) -> T:
    try:
        return fn(*args)
    except _NOT_OURS:
        raise
    except BaseException as exc:  # noqa: B036 - panics are BaseExceptions
        raise CoreFailure(f"{type(exc).__name__}: {exc}"[:500]) from exc


def expand_chunks(
    data: bytes, bounds: Bounds, known: Container[bytes] = frozenset(), heads: Iterable[bytes] = ()
) -> list[Change]:
    """Every change in a buffer of chunks that may be new to a document that
    holds the changes ``known`` (hashes), whose heads are ``heads``. Raises
    ChunkError.

    A document chunk is loaded into a scratch document (never the shared
    one) and taken apart into its changes, each of which is then read like
    any other. Automerge sends the whole document this way while it believes
    the other side has nothing, so a chunk often repeats what we hold: one
    whose heads are all known holds nothing new and is skipped unread, and
    of the others only the changes past the known heads they share are read
    (``get_changes`` ignores hashes the scratch document lacks; a change
    outside the closure of known hashes is not known). Which changes are
    applied is still decided change by change afterwards."""
    changes: list[Change] = []
    for chunk in split_chunks(data, bounds):
        if isinstance(chunk, DocumentChunk):
            if chunk.heads and all(h in known for h in chunk.heads):
                continue
            since = sorted({*heads, *(h for h in chunk.heads if h in known)})
            try:
                scratch = call_core(core.Document.load, chunk.chunk)
                inner = call_core(scratch.get_changes, since)
            except CoreFailure as exc:
                raise ChunkError(f"document chunk does not load: {exc}") from None
            for change in inner:
                changes.extend(split_chunks(change.bytes, bounds))  # type: ignore[arg-type]
        else:
            changes.append(chunk)
    if sum(c.ops for c in changes) > bounds.max_ops_per_message:
        raise ChunkError(f"more than {bounds.max_ops_per_message} ops in one message")
    return changes


def apply_chunks(doc: core.Document, chunks: list[bytes]) -> None:
    """Apply change chunks whose dependencies the document holds: a sync
    message carrying only those changes, received with a throwaway state."""
    message = encode_sync_message(SyncMessage(SYNC_V1, [], [], [], chunks))
    call_core(doc.receive_sync_message, core.SyncState(), core.Message.decode(message))
