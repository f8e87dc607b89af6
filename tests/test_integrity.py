"""The promise against hostile peers and bad records, on real server processes.

Each test reproduces one attack from the integrity issue with crafted but
well-formed Automerge data sent as raw frames by an anonymous peer, and
asserts: the attacker gets the documented error, bystanders on the same
document and on another one keep converging with their flushes answered, and
nothing acknowledged is lost across a restart.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import anyio
import httpx
import pytest
from automerge import core

from bridge.client import BridgeClient
from bridge.testing import RunningBridge, serve_in_subprocess

from . import crafting
from .rawpeer import RawPeer
from .waiting import eventually

pytestmark = pytest.mark.anyio

QUICK_UNLOAD = ["--idle-unload-after", "0.3"]



def honest_change(doc: core.Document, key: str, value: int) -> core.Change:
    with doc.transaction() as tx:
        tx.put(core.ROOT, key, core.ScalarType.Int, value)
    return doc.get_last_local_change()


async def attacker_on(bridge: RunningBridge, doc_id: str, address: str = "127.0.0.66") -> tuple[RawPeer, core.Document]:
    """An anonymous raw peer that has synced ``doc_id`` (so it knows its
    heads), from an address of its own: what it owes is not the bystanders'."""
    peer = await RawPeer.connect(bridge.ws_url, peer="mallory", address=address)
    doc = core.Document()
    await peer.sync_doc(doc_id, doc)
    return peer, doc


async def send_changes(peer: RawPeer, doc_id: str, chunks: list[bytes], heads: list[bytes]) -> dict:
    """Send a sync message carrying ``chunks``; return the server's error frame."""
    await peer.send({"t": "sync", "doc": doc_id, "data": crafting.sync_message(chunks, heads=sorted(heads))})
    return await peer.recv_until(lambda f: f["t"] == "error")


async def bystanders_converge(bridge: RunningBridge, doc_ids: list[str], tag: str) -> None:
    """Two fresh clients edit each document, flush, and see each other's edits."""
    async with BridgeClient(bridge.ws_url, peer=f"{tag}-a") as a, BridgeClient(bridge.ws_url, peer=f"{tag}-b") as b:
        for doc_id in doc_ids:
            da, db = await a.open(doc_id), await b.open(doc_id)
            with da.change() as d:
                d[f"{tag}-a"] = 1
            with db.change() as d:
                d[f"{tag}-b"] = 2
            await da.flush(timeout=10)
            await db.flush(timeout=10)
            await db.wait_for(da.heads)
            await da.wait_for(db.heads)
            assert da.to_py()[f"{tag}-b"] == 2 and db.to_py()[f"{tag}-a"] == 1


def view(bridge: RunningBridge, doc_id: str) -> httpx.Response:
    return httpx.get(f"{bridge.http_url}/docs/{doc_id}", timeout=30)


def health(bridge: RunningBridge) -> httpx.Response:
    return httpx.get(f"{bridge.http_url}/healthz", timeout=10)


async def wait_unloaded(bridge: RunningBridge) -> None:
    await eventually(lambda: health(bridge).json()["loaded_docs"] == 0, timeout=20, interval=0.05)


# --- attacks through sync messages --------------------------------------------


async def test_extreme_timestamp_is_refused_and_acknowledged_edits_survive_unload_and_restart(tmp_path):
    with serve_in_subprocess(tmp_path, extra_args=QUICK_UNLOAD) as bridge:
        async with BridgeClient(bridge.ws_url, peer="honest") as client:
            doc = await client.open("ledger")
            for i in range(30):
                with doc.change() as d:
                    d[f"k{i}"] = i
            await doc.flush(timeout=10)

            mallory, theirs = await attacker_on(bridge, "ledger")
            poison = crafting.rewrite(honest_change(theirs, "poison", 1).bytes, time=-(2**63))
            assert len(crafting.sync_message([poison], heads=[crafting.change_hash(poison)])) < 200
            error = await send_changes(mallory, "ledger", [poison], [crafting.change_hash(poison)])
            assert error["code"] == "bad_sync" and error["doc"] == "ledger"

            for i in range(30, 60):  # honest peers keep editing and get `flushed`
                with doc.change() as d:
                    d[f"k{i}"] = i
            await doc.flush(timeout=10)
            await mallory.close()
        await bystanders_converge(bridge, ["ledger", "elsewhere"], "after")
        await wait_unloaded(bridge)  # unloading compacts: the snapshot must load
    with serve_in_subprocess(tmp_path) as restarted:
        answer = view(restarted, "ledger")
        assert answer.status_code == 200
        content = answer.json()
        assert [content.get(f"k{i}") for i in range(60)] == list(range(60))
        assert "poison" not in content


async def test_seq_gap_is_refused_before_the_core_and_the_document_stays_usable(tmp_path):
    with serve_in_subprocess(tmp_path) as bridge:
        async with BridgeClient(bridge.ws_url, peer="honest") as client:
            doc = await client.open("shared")
            with doc.change() as d:
                d["before"] = 1
            await doc.flush(timeout=10)

            mallory, theirs = await attacker_on(bridge, "shared")
            gap = crafting.rewrite(honest_change(theirs, "gap", 1).bytes, seq=2)
            error = await send_changes(mallory, "shared", [gap], [crafting.change_hash(gap)])
            assert error["code"] == "bad_sync"
            assert "seq" in error["msg"]

            # The attacker's connection is still served (a doc-scoped error only).
            await mallory.send({"t": "flush", "id": 1, "docs": {"shared": theirs.get_heads()[:0]}})
            assert (await mallory.recv_until(lambda f: f["t"] == "flushed"))["id"] == 1

            with doc.change() as d:
                d["after"] = 2
            await doc.flush(timeout=10)
            await bystanders_converge(bridge, ["shared", "other"], "bystander")
        # A newcomer converges with everything but the refused change.
        async with BridgeClient(bridge.ws_url, peer="newcomer") as late:
            fresh = await late.open("shared")
            assert fresh.to_py()["before"] == 1 and fresh.to_py()["after"] == 2
            assert "gap" not in fresh.to_py()


async def test_valid_changes_in_a_message_sync_while_the_bad_one_is_refused(tmp_path):
    with serve_in_subprocess(tmp_path) as bridge:
        mallory, theirs = await attacker_on(bridge, "mixed")
        good = honest_change(theirs, "good", 1)
        bad = crafting.rewrite(honest_change(core.Document(), "bad", 2).bytes, start_op=2**62)
        error = await send_changes(mallory, "mixed", [good.bytes, bad], [good.hash, crafting.change_hash(bad)])
        assert error["code"] == "bad_sync" and "start_op" in error["msg"]
        async with BridgeClient(bridge.ws_url, peer="reader") as client:
            seen = await client.open("mixed")
            await seen.wait_for([good.hash])
            assert seen.to_py() == {"good": 1}


async def test_seq_gap_on_a_throwaway_document_does_not_stop_saving(tmp_path):
    with serve_in_subprocess(tmp_path, extra_args=QUICK_UNLOAD) as bridge:
        mallory, theirs = await attacker_on(bridge, "throwaway")
        gap = crafting.rewrite(honest_change(theirs, "x", 1).bytes, seq=5)
        assert (await send_changes(mallory, "throwaway", [gap], [crafting.change_hash(gap)]))["code"] == "bad_sync"
        await mallory.close()
        await wait_unloaded(bridge)  # where the error used to escape and stop group commit
        await bystanders_converge(bridge, ["later-1", "later-2"], "after-unload")
        assert health(bridge).json()["status"] == "ok"


@pytest.mark.parametrize("probes", [2**32 - 1, 10**7])
async def test_bloom_filter_with_absurd_probe_count_is_refused(tmp_path, probes):
    with serve_in_subprocess(tmp_path) as bridge:
        async with BridgeClient(bridge.ws_url, peer="honest") as client:
            doc = await client.open("bloom")
            with doc.change() as d:
                d["x"] = 1
            await doc.flush(timeout=10)
            mallory = await RawPeer.connect(bridge.ws_url, peer="mallory")
            await mallory.send({"t": "open", "doc": "bloom"})
            attack = crafting.sync_message(have=[([], crafting.bloom(1, 10, probes))])
            assert len(attack) <= 20
            await mallory.send({"t": "sync", "doc": "bloom", "data": attack})
            error = await mallory.recv_until(lambda f: f["t"] == "error")
            assert error["code"] == "bad_sync" and "probes" in error["msg"]
            with anyio.fail_after(10):
                await bystanders_converge(bridge, ["bloom", "other"], "bystander")
        assert bridge.process.poll() is None


async def test_an_op_count_bomb_is_refused_without_expanding_it(tmp_path):
    with serve_in_subprocess(tmp_path) as bridge:
        mallory, _ = await attacker_on(bridge, "bomb")
        bomb = crafting.change(actor=b"\x01" * 16, columns=crafting.null_puts(4_000_000))
        assert len(bomb) < 300
        error = await send_changes(mallory, "bomb", [bomb], [crafting.change_hash(bomb)])
        assert error["code"] == "bad_sync" and ("ops" in error["msg"] or "rows" in error["msg"])
        await bystanders_converge(bridge, ["bomb"], "bystander")


# --- bad records in the store ---------------------------------------------------


def database(data_dir) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "bridge.sqlite3", isolation_level=None)


async def write_keys(bridge: RunningBridge, doc_id: str, keys: range) -> None:
    async with BridgeClient(bridge.ws_url, peer="writer") as client:
        doc = await client.open(doc_id)
        for i in keys:
            with doc.change() as d:
                d[f"k{i}"] = i
        await doc.flush(timeout=10)


async def test_a_garbage_change_row_loses_nothing_else_and_is_reported(tmp_path):
    with serve_in_subprocess(tmp_path) as bridge:
        await write_keys(bridge, "rows", range(30))
    with database(tmp_path) as db:
        db.execute("INSERT INTO changes (doc_id, hash, data) VALUES ('rows', ?, ?)", (b"\x07" * 32, b"\x85oJ\x83garbage"))
    with serve_in_subprocess(tmp_path) as restarted:
        content = view(restarted, "rows").json()
        assert [content.get(f"k{i}") for i in range(30)] == list(range(30))
        report = health(restarted).json()
        assert report["status"] == "degraded" and any("rows" in p for p in report["problems"])
        await bystanders_converge(restarted, ["rows"], "after")


@pytest.mark.parametrize("compactions", [1, 2])
async def test_a_truncated_snapshot_falls_back_and_loses_nothing(tmp_path, compactions):
    with serve_in_subprocess(tmp_path, extra_args=QUICK_UNLOAD) as bridge:
        for round_ in range(compactions):
            await write_keys(bridge, "snap", range(round_ * 100, (round_ + 1) * 100))
            await wait_unloaded(bridge)  # each unload writes a snapshot
    with database(tmp_path) as db:
        gen, data = db.execute("SELECT gen, data FROM snapshots WHERE doc_id = 'snap' ORDER BY gen DESC").fetchone()
        assert gen == compactions
        db.execute("UPDATE snapshots SET data = ? WHERE doc_id = 'snap' AND gen = ?", (data[: len(data) // 2], gen))
    with serve_in_subprocess(tmp_path) as restarted:
        content = view(restarted, "snap").json()
        assert [content.get(f"k{i}") for i in range(compactions * 100)] == list(range(compactions * 100))
        assert health(restarted).json()["status"] == "degraded"


async def test_a_document_whose_snapshots_all_fail_is_refused_not_emptied(tmp_path):
    with serve_in_subprocess(tmp_path, extra_args=QUICK_UNLOAD) as bridge:
        await write_keys(bridge, "lost", range(20))
        await wait_unloaded(bridge)
    with database(tmp_path) as db:
        db.execute("UPDATE snapshots SET data = x'856f4a83' WHERE doc_id = 'lost'")
        db.execute("DELETE FROM changes WHERE doc_id = 'lost'")
    with serve_in_subprocess(tmp_path) as restarted:
        assert view(restarted, "lost").status_code == 503
        peer = await RawPeer.connect(restarted.ws_url)
        await peer.send({"t": "open", "doc": "lost"})
        error = await peer.recv_until(lambda f: f["t"] == "error")
        assert error["code"] == "unavailable"
        report = health(restarted).json()
        assert any("lost" in p for p in report["problems"])
        await bystanders_converge(restarted, ["fine"], "bystander")
    with database(tmp_path) as db:  # never written over
        assert db.execute("SELECT data FROM snapshots WHERE doc_id = 'lost'").fetchone()[0] == b"\x85oJ\x83"


async def test_http_post_and_beacon_changes_go_through_the_same_checks(tmp_path):
    with serve_in_subprocess(tmp_path) as bridge:
        await write_keys(bridge, "posted", range(3))
        base = core.Document.load(httpx.get(f"{bridge.http_url}/docs/posted", params={"format": "automerge"}).content)
        good = honest_change(base, "good", 1)
        poison = crafting.rewrite(honest_change(base, "poison", 2).bytes, time=-(2**63))
        url = f"{bridge.http_url}/docs/posted/changes"
        refused = httpx.post(url, content=good.bytes + poison, timeout=10)
        assert refused.status_code == 400 and "timestamp" in refused.json()["msg"]
        bomb = crafting.change(actor=b"\x02" * 16, columns=crafting.null_puts(4_000_000))
        assert httpx.post(url, content=bomb, timeout=10).status_code == 400
        gap = crafting.rewrite(honest_change(core.Document(), "gap", 1).bytes, seq=7)
        assert httpx.post(url, content=gap, timeout=10).status_code == 400
        content = view(bridge, "posted").json()
        assert content == {"k0": 0, "k1": 1, "k2": 2, "good": 1}, "the valid change is merged, nothing of the rest"
        now = core.Document.load(httpx.get(f"{bridge.http_url}/docs/posted", params={"format": "automerge"}).content)
        ok = httpx.post(url, content=honest_change(now, "later", 3).bytes, timeout=10)
        assert ok.status_code == 200
        await bystanders_converge(bridge, ["posted"], "bystander")


async def test_a_store_with_corrupted_pages_refuses_to_serve_instead_of_acknowledging(tmp_path):
    from .storage.test_sqlite import corrupt_middle_pages

    with serve_in_subprocess(tmp_path) as bridge:
        for n in range(4):
            await write_keys(bridge, f"doc{n}", range(n * 100, (n + 1) * 100))
    with database(tmp_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_middle_pages(tmp_path / "bridge.sqlite3")
    refused = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and "backup" in lines[0], refused.stderr
