"""The README's Python examples run as written (against a real bridge)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import anyio
import httpx
import pytest

from bridge.testing import serve_in_task, serve_in_thread

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def example(name: str) -> str:
    blocks = re.findall(r"```python\n(# readme-example: ([\w-]+)\n.*?)```", README, re.S)
    return {label: code for code, label in blocks}[name]


def test_remote_example(bridge_server):
    code = example("remote").replace("ws://127.0.0.1:8080/sync", bridge_server.ws_url)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "'status': 'paid'" in output.getvalue()
    view = httpx.get(f"{bridge_server.http_url}/docs/invoice-42").json()
    assert view == {"status": "paid", "lines": [{"sku": "A1", "qty": 2}]}


def test_local_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(example("local"), "README.md", "exec"), namespace)

    async def run() -> None:
        async with serve_in_task(namespace["app"]) as running:
            await namespace["mark_paid"]("invoice-7")
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{running.http_url}/docs/invoice-7")).json() == {"status": "paid"}

    anyio.run(run)
    assert (tmp_path / "data" / "bridge.sqlite3").exists()


def test_mount_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(example("mount"), "README.md", "exec"), namespace)
    with serve_in_thread(namespace["app"]) as running:
        assert httpx.get(f"{running.http_url}/bridge/healthz").json()["status"] == "ok"


def test_lifespan_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(example("lifespan"), "README.md", "exec"), namespace)
    with pytest.raises(RuntimeError, match="has not started"):
        namespace["bridge_app"].state.hub.subscribe  # noqa: B018 - before start-up
    with serve_in_thread(namespace["app"]) as running:
        assert httpx.get(f"{running.http_url}/bridge/docs/settings").json() == {"started": True}


def test_hooks_example_keeps_the_apps_table_in_step(tmp_path, monkeypatch):
    import sqlite3

    from bridge.client import BridgeClient
    from tests.waiting import eventually

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(example("hooks"), "README.md", "exec"), namespace)

    def row():
        try:
            with contextlib.closing(sqlite3.connect(tmp_path / "app.sqlite3")) as db:
                return db.execute("SELECT status, total FROM invoices WHERE id = 'invoice-9'").fetchone()
        except sqlite3.OperationalError:  # the table is not there yet
            return None

    async def run(url: str) -> None:
        async with BridgeClient(url) as client:
            doc = await client.open("invoice-9")
            with doc.change() as d:
                d["status"], d["total"] = "sent", 12.5
            await doc.flush()
            await eventually(lambda: row() == ("sent", 12.5), timeout=10)
            with doc.change() as d:
                d["status"] = "paid"
            await doc.flush()
            await eventually(lambda: row() == ("paid", 12.5), timeout=10)

    with serve_in_thread(namespace["app"]) as running:
        anyio.run(run, f"ws://127.0.0.1:{running.port}/bridge/sync")


def test_the_readme_lists_every_limit_with_its_default_flag_and_variable():
    from bridge.cli import BOUND_OPTIONS, LIMIT_OPTIONS, shown_default

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("`")[1]: line for line in readme.splitlines() if line.startswith("| ") and "`--" in line}
    for option in LIMIT_OPTIONS + BOUND_OPTIONS:
        assert option.flag in rows, f"{option.flag} is missing from the README's limits table"
        row = rows[option.flag]
        assert f"`{option.env}`" in row
        assert row.split(" | ")[1] == shown_default(option), f"{option.flag}: the README's default is stale"
        assert option.help.split(" [env")[0] in row, f"{option.flag}: the README's text differs from --help"


SECRET = "readme-secret-" + "z" * 30


def test_mint_examples_make_tokens_the_bridge_accepts(tmp_path, monkeypatch):
    """The Python (PyJWT) and Node (node:crypto) minting examples."""
    import json
    import subprocess

    from bridge.tokens import TokenAuth

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(example("mint"), "README.md", "exec"), {"__name__": "readme"})
    blocks = dict((label, code) for code, label in re.findall(r"```js\n(// readme-example: ([\w-]+)\n.*?)```", README, re.S))
    (tmp_path / "mint.mjs").write_text(blocks["mint-node"])
    node = subprocess.run(["node", "mint.mjs"], capture_output=True, text=True, check=True, cwd=tmp_path)
    auth = TokenAuth(secret=SECRET)
    for printed in (output.getvalue().strip(), node.stdout.strip()):
        principal = auth.verify(printed)
        assert principal.identity == "alice"
        assert [principal.access(d) for d in ("invoice-9", "catalog", "payroll")] == ["write", "read", None]
        assert json.loads(json.dumps(principal.docs))  # plain data


def test_fastapi_hook_example(tmp_path, monkeypatch):
    import websockets
    from bridge.protocol import native as m

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(example("fastapi-hook"), "README.md", "exec"), namespace)

    async def run(url: str) -> None:
        cookie = {"Cookie": "session=c2Vzc2lvbg"}
        async with websockets.connect(f"{url}/bridge/sync", additional_headers=cookie) as ws:
            await ws.send(m.encode(m.Hello(v=[1], peer="tab")))
            assert m.decode_server(await ws.recv()).identity == "alice"
            for doc in ("alice-notes", "shared-board", "bob-notes"):
                await ws.send(m.encode(m.Open(doc=doc)))
            answers = []
            with anyio.fail_after(10):
                while len(answers) < 3:
                    message = m.decode_server(await ws.recv())
                    if isinstance(message, (m.Opened, m.Error)):
                        answers.append((message.doc, getattr(message, "access", None) or message.code))
        # Alice writes hers; a shared one does not exist and she may not create it; Bob's is not hers.
        assert answers == [("alice-notes", "write"), ("shared-board", "not_found"), ("bob-notes", "forbidden")]
        async with websockets.connect(f"{url}/bridge/sync") as ws:  # no session cookie
            await ws.send(m.encode(m.Hello(v=[1], peer="stranger")))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4401

    with serve_in_thread(namespace["app"]) as running:
        anyio.run(run, f"ws://127.0.0.1:{running.port}")
