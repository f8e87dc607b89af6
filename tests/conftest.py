from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param

# `bridge_server` and `wait_durable` come from the package's own pytest plugin
# (bridge.testing), the same fixtures users get.
