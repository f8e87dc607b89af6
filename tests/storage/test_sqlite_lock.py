"""One writer per SQLite store: a second store, or a second bridge, refuses to open."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from bridge.storage import AppendChanges, StoreLocked
from bridge.storage.sqlite import SQLiteStore
from bridge.testing import serve_in_subprocess

pytestmark = pytest.mark.anyio



async def test_a_second_store_on_the_same_file_refuses_until_the_first_closes(tmp_path):
    path = tmp_path / "bridge.sqlite3"
    first = SQLiteStore(path)
    await first.open()

    second = SQLiteStore(path)
    with pytest.raises(StoreLocked) as refused:
        await second.open()
    assert refused.value.path == str(path)
    assert refused.value.lock_path == str(path) + ".lock"
    assert str(path) in str(refused.value) and "another bridge" in str(refused.value)
    # The refused store holds nothing and the first one still works.
    await second.close()
    await first.commit([AppendChanges("a", [(b"\x01" * 32, b"change")])])
    assert (await first.load("a")).change_bytes == [b"change"]

    await first.close()
    third = SQLiteStore(path)
    await third.open()
    assert (await third.load("a")).change_bytes == [b"change"]
    with pytest.raises(StoreLocked):
        await SQLiteStore(path).open()
    await third.close()


async def test_a_store_reopens_after_close_and_stores_on_other_files_are_independent(tmp_path):
    store = SQLiteStore(tmp_path / "one.sqlite3")
    await store.open()
    other = SQLiteStore(tmp_path / "two.sqlite3")
    await other.open()
    await store.close()
    await store.open()
    await store.close()
    await other.close()


def test_a_second_bridge_on_the_same_data_dir_exits_with_one_line(tmp_path):
    data_dir = tmp_path / "data"
    with serve_in_subprocess(data_dir) as first:
        second = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith("automerge-bridge: ") and str(data_dir) in lines[0]
        assert "in use by another bridge" in lines[0] and "bridge.sqlite3.lock" in lines[0]
        assert "Traceback" not in second.stderr

        # The first bridge is unharmed.
        health = httpx.get(f"{first.http_url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert first.process.poll() is None
