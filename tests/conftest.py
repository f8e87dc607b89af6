from __future__ import annotations

import pytest

from bridge import create_app
from bridge.testing import serve_in_thread


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture
def asyncio_only():
    return "asyncio"


@pytest.fixture
def bridge_server(tmp_path):
    """A real bridge (SQLite in tmp_path) on a free port, in its own thread."""
    with serve_in_thread(create_app(data_dir=tmp_path, web_dir=None)) as running:
        yield running
