"""What one side of a connection still has to send (bridge/core/outbox.py)."""

from __future__ import annotations

import anyio
import pytest

from bridge.core.outbox import Outbox, OutboxOverflow

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


class Drained(Exception):
    pass


async def drain(outbox: Outbox, generate=lambda doc_id: [f"sync:{doc_id}".encode()]) -> list[bytes]:
    """Run the pump until it has nothing left to send."""
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)
        if outbox.idle:
            raise Drained

    with anyio.fail_after(2), pytest.raises(Drained):
        await outbox.pump(send, generate)
    return sent


async def test_control_frames_first_then_dirty_documents_then_latest():
    outbox = Outbox()
    outbox.push_latest(("saved", "a"), b"saved:a:1")
    outbox.mark_dirty("a")
    outbox.push(b"control")
    outbox.push_latest(("saved", "a"), b"saved:a:2")
    assert await drain(outbox) == [b"control", b"sync:a", b"saved:a:2"]


async def test_a_dirty_document_is_generated_once_however_often_it_changed():
    outbox = Outbox()
    calls = []
    for _ in range(100):
        outbox.mark_dirty("a")
    await drain(outbox, lambda doc_id: calls.append(doc_id) or [b"x"])
    assert calls == ["a"]


async def test_forgetting_a_document_drops_its_pending_output():
    outbox = Outbox()
    outbox.mark_dirty("a")
    outbox.push_latest(("saved", "a"), b"saved")
    outbox.forget("a")
    assert outbox.idle


async def test_too_many_control_frames_overflow():
    outbox = Outbox(max_control=3)
    for i in range(4):
        outbox.push(b"%d" % i)
    with pytest.raises(OutboxOverflow):
        await outbox.pump(lambda frame: anyio.sleep(0), lambda doc_id: [])
