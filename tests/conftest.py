from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    """asyncio for every async test; a module marked ``both_backends`` (the
    Python client, shared by asyncio and trio users) runs on trio too."""
    return "asyncio"


def pytest_generate_tests(metafunc):
    if "anyio_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("anyio_backend", ["asyncio", "trio"])


# `bridge_server` and `wait_durable` come from the package's own pytest plugin
# (bridge.testing), the same fixtures users get.
