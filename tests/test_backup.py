"""backup, restore, export and import through the CLI, against a real
serving bridge and real SQLite files."""

from __future__ import annotations

import subprocess
import sys

import anyio
import httpx
import pytest
from automerge import core

from bridge.client import BridgeClient
from bridge.testing import serve_in_subprocess

pytestmark = pytest.mark.anyio


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True, timeout=120)


def refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


async def test_backup_while_serving_holds_every_flushed_change_and_restores(tmp_path):
    data, copy = tmp_path / "data", tmp_path / "copy.sqlite3"
    flushed: dict[str, int] = {}
    with serve_in_subprocess(data) as bridge:
        async with BridgeClient(bridge.ws_url) as client:
            docs = [await client.open(f"doc-{i}") for i in range(3)]

            async def write(doc, until: anyio.Event) -> None:
                n = 0
                while not until.is_set():
                    n += 1
                    with doc.change() as d:
                        d["n"] = n
                    await doc.flush()
                    flushed[doc.id] = n

            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for doc in docs:
                    tg.start_soon(write, doc, stop)
                with anyio.fail_after(10):
                    while min(flushed.get(d.id, 0) for d in docs) < 5:
                        await anyio.sleep(0.01)
                before = dict(flushed)  # flushed before the backup started
                done = await anyio.to_thread.run_sync(cli, "backup", "--data-dir", str(data), str(copy))
                stop.set()
            assert done.returncode == 0, done.stderr
            assert "3 documents" in done.stdout
            refused(cli("backup", "--data-dir", str(data), str(copy)), "exists", "--force")
            refused(cli("restore", "--data-dir", str(data), str(copy)), "serving")

    restored = tmp_path / "restored"
    done = cli("restore", "--data-dir", str(restored), str(copy))
    assert done.returncode == 0, done.stderr
    with serve_in_subprocess(restored) as bridge, httpx.Client() as http:
        for doc_id, n in before.items():
            assert http.get(f"{bridge.http_url}/docs/{doc_id}").json()["n"] >= n

    # Restoring over an existing database keeps it aside.
    done = cli("restore", "--data-dir", str(data), str(copy))
    assert done.returncode == 0 and "kept as" in done.stdout, done
    assert [p.name for p in data.iterdir() if "before-restore" in p.name]


def test_restore_refuses_what_is_not_a_healthy_bridge_database(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a database at all" * 100)
    refused(cli("restore", "--data-dir", str(tmp_path / "d"), str(tmp_path / "junk")), "junk")
    import sqlite3

    with sqlite3.connect(tmp_path / "other.sqlite3") as conn:
        conn.execute("CREATE TABLE notes (x)")
    refused(cli("restore", "--data-dir", str(tmp_path / "d"), str(tmp_path / "other.sqlite3")), "not a bridge database")
    assert not (tmp_path / "d" / "bridge.sqlite3").exists()


async def test_export_while_serving_and_import_into_another_directory(tmp_path):
    source, target, out = tmp_path / "source", tmp_path / "target", tmp_path / "out"
    with serve_in_subprocess(source) as bridge:
        async with BridgeClient(bridge.ws_url) as client:
            heads = {}
            for doc_id, value in (("a", "first"), ("b.c:d~e", "second")):
                doc = await client.open(doc_id)
                with doc.change() as d:
                    d["v"] = value
                heads[doc_id] = await doc.flush()
        done = cli("export", "--data-dir", str(source), str(out))  # while serving: read-only
        assert done.returncode == 0 and "exported 2 documents" in done.stdout, done
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a.automerge", "b.c:d~e.automerge"]
    assert core.Document.load((out / "a.automerge").read_bytes()).get_heads() == heads["a"]

    done = cli("import", "--data-dir", str(target), *(str(out / name) for name in files))
    assert done.returncode == 0, done.stderr
    done = cli("import", "--data-dir", str(target), "--doc-id", "copy-of-a", str(out / "a.automerge"))
    assert done.returncode == 0, done.stderr
    with serve_in_subprocess(target) as bridge, httpx.Client() as http:
        assert http.get(f"{bridge.http_url}/docs/a").json() == {"v": "first"}
        assert http.get(f"{bridge.http_url}/docs/b.c:d~e").json() == {"v": "second"}
        assert http.get(f"{bridge.http_url}/docs/copy-of-a").json() == {"v": "first"}
        # Importing behind a serving bridge's back is refused: its copies would not hear of it.
        refused(cli("import", "--data-dir", str(target), str(out / "a.automerge")), "serving", "POST")


def test_a_corrupt_or_hostile_file_imports_nothing(tmp_path):
    good = core.Document()
    with good.transaction() as tx:
        tx.put(core.ROOT, "ok", core.ScalarType.Str, "yes")
    (tmp_path / "good.automerge").write_bytes(good.save())
    (tmp_path / "bad.automerge").write_bytes(b"\x85\x6f\x4a\x83" + b"garbage" * 50)
    refused(cli("import", "--data-dir", str(tmp_path / "d"), str(tmp_path / "good.automerge"),
                str(tmp_path / "bad.automerge")), "bad", "nothing imported")
    # Checked before anything is written: not even the good file went in.
    done = cli("export", "--data-dir", str(tmp_path / "d"), str(tmp_path / "out"))
    assert done.returncode == 0 and "exported 0 documents" in done.stdout, done
    refused(cli("import", "--data-dir", str(tmp_path / "d"), "--doc-id", "x", str(tmp_path / "good.automerge"),
                str(tmp_path / "bad.automerge")), "one FILE")
    refused(cli("export", "--data-dir", str(tmp_path / "d"), str(tmp_path / "out"), "../escape"), "not a document id")
