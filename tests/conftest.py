from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    """asyncio for every async test; a module that must also hold on trio
    (the Python client) parametrizes ``anyio_backend`` itself."""
    return "asyncio"

# `bridge_server` and `wait_durable` come from the package's own pytest plugin
# (bridge.testing), the same fixtures users get.
