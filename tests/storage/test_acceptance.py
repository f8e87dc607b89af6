"""The storage acceptance suite (bridge/storage/acceptance.py) for every backend."""

from __future__ import annotations

import pytest

from bridge.storage import open_store
from bridge.storage.acceptance import *  # noqa: F403 (the test_* functions)



@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'bridge.sqlite3'}"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()


def test_stores_are_found_by_url_scheme():
    from bridge.storage import register_store
    from bridge.storage.memory import MemoryStore
    from bridge.storage.sqlite import SQLiteStore

    assert isinstance(open_store("memory:"), MemoryStore)
    assert isinstance(open_store("sqlite:///tmp/x.sqlite3"), SQLiteStore)
    for bad in ["nope://x", "sqlite://relative", "plain-path"]:
        with pytest.raises(ValueError):
            open_store(bad)
    made = []
    register_store("custom", lambda url: made.append(url) or MemoryStore())
    assert isinstance(open_store("custom://anything"), MemoryStore) and made == ["custom://anything"]
