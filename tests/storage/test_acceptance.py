"""The storage acceptance suite (bridge/storage/acceptance.py) for every backend."""

from __future__ import annotations

import pytest

from bridge.storage import open_store
from bridge.storage.acceptance import *  # noqa: F403 (the test_* functions)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'bridge.sqlite3'}"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()
