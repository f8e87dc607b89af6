"""A real Chromium against a real bridge process: no edit is lost."""

from __future__ import annotations

import random
import string
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest

from bridge.client import BridgeClient
from bridge.testing import serve_in_subprocess, wait_until_durable

from polling import eventually  # e2e/polling.py

TRIALS = 12  # edit-then-close trials per variant (with and without flush)


def open_demo(context, bridge, doc_id: str):
    page = context.new_page()
    page.goto(f"{bridge.http_url}/#{doc_id}")
    page.wait_for_selector("#text:not([disabled])", timeout=15_000)
    return page


def server_text(bridge, doc_id: str) -> str:
    answer = httpx.get(f"{bridge.http_url}/docs/{doc_id}")
    return answer.json().get("text", "") if answer.status_code == 200 else ""


def random_text(n: int) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def test_two_pages_converge_on_concurrent_text_and_list_edits(context, bridge):
    a, b = open_demo(context, bridge, "converge"), open_demo(context, bridge, "converge")
    a.click("#text")
    b.click("#text")
    a.keyboard.type("alpha ")
    b.keyboard.type("bravo ")
    a.keyboard.type("charlie")
    a.fill("#todo-title", "from a")
    a.click("#todo-add")
    b.fill("#todo-title", "from b")
    b.click("#todo-add")

    def converged() -> bool:
        text_a, text_b = a.input_value("#text"), b.input_value("#text")
        return text_a == text_b and all(w in text_a for w in ("alpha", "bravo", "charlie"))

    eventually(converged, what="both text areas to converge")
    eventually(lambda: a.locator("#todos li").count() == b.locator("#todos li").count() == 2, what="to-dos")
    assert sorted(a.locator("#todos li .title").all_inner_texts()) == ["from a", "from b"]
    eventually(lambda: server_text(bridge, "converge") == a.input_value("#text"), what="the server")


@pytest.mark.parametrize("how", ["flush", "no-flush"])
def test_typing_then_closing_at_once_loses_nothing(context, bridge, how):
    """Type, then close the tab at once — after flush() or without it
    (pagehide's sendBeacon and IndexedDB are what keep the edits then)."""
    lost = 0
    for trial in range(TRIALS):
        doc_id = f"close-{how}-{trial}"
        typed = random_text(24)
        page = open_demo(context, bridge, doc_id)
        page.click("#text")
        page.keyboard.type(typed)
        if how == "flush":
            page.evaluate("() => window.bridgeClient.flush()")
            # flush() resolved: the server has it durably, right now.
            assert server_text(bridge, doc_id) == typed
        page.close()
        try:
            eventually(lambda: server_text(bridge, doc_id) == typed, timeout=5, what="the edits")
        except AssertionError:
            reopened = open_demo(context, bridge, doc_id)  # IndexedDB brings them back
            eventually(lambda: server_text(bridge, doc_id) == typed, what="restore on reload")
            reopened.close()
        lost += len(typed) - len(server_text(bridge, doc_id))
    print(f"{how}: {TRIALS} trials, {TRIALS * 24} characters typed, {lost} lost")
    assert lost == 0


def test_edits_that_never_reached_the_server_come_back_from_indexeddb(context, bridge):
    """The worst case: the socket never got through and the beacon failed.
    The edits live in IndexedDB and reach the server on the next load."""
    blocked = True

    def sync_socket(ws):
        if not blocked:
            ws.connect_to_server()
        # else: a socket that opens and never answers — the server sees nothing

    context.route_web_socket("**/sync", sync_socket)
    # A beacon the browser refuses to queue (it returns false then).
    context.add_init_script("navigator.sendBeacon = () => false;")
    lost = 0
    # Each load waits out the client's 10 s open timeout on the dead socket.
    for trial in range(3):
        doc_id = f"idb-{trial}"
        typed = random_text(24)
        page = context.new_page()
        page.goto(f"{bridge.http_url}/#{doc_id}")
        page.wait_for_selector("#text:not([disabled])", timeout=15_000)
        page.click("#text")
        page.keyboard.type(typed)
        assert server_text(bridge, doc_id) == "", "the socket must not reach the server"
        page.close()
        assert server_text(bridge, doc_id) == "", "the beacon must not reach the server"
        blocked = False
        reopened = open_demo(context, bridge, doc_id)
        eventually(lambda: server_text(bridge, doc_id) == typed, what="restore from IndexedDB")
        assert reopened.input_value("#text") == typed
        reopened.close()
        blocked = True
        lost += len(typed) - len(server_text(bridge, doc_id))
    assert lost == 0


def test_offline_edits_sync_after_coming_back(context, bridge):
    a, b = open_demo(context, bridge, "offline"), open_demo(context, bridge, "offline")
    a.click("#text")
    a.keyboard.type("online ")
    eventually(lambda: b.input_value("#text") == "online ", what="first sync")
    context.set_offline(True)
    eventually(lambda: a.evaluate("() => window.bridgeClient.status") == "offline", what="the page to go offline")
    a.keyboard.type("offline")
    assert b.input_value("#text") == "online "
    context.set_offline(False)
    eventually(lambda: b.input_value("#text") == "online offline", timeout=30, what="offline edits to sync")
    eventually(lambda: server_text(bridge, "offline") == "online offline", what="the server")


def test_server_restart_during_editing_loses_nothing(context, tmp_path):
    data = tmp_path / "restart-data"
    with serve_in_subprocess(data) as first:
        port = first.port
        page = open_demo(context, first, "restart")
        page.click("#text")
        page.keyboard.type("before ")
        first.process.kill()  # kill -9, mid-session
        first.process.wait()
        page.keyboard.type("during ")
    with serve_in_subprocess(data, port=port) as second:
        eventually(lambda: page.evaluate("() => window.bridgeClient.status") in ("saving", "saved"), timeout=30,
                   what="the page to reconnect by itself")
        page.keyboard.type("after")
        eventually(lambda: server_text(second, "restart") == "before during after", timeout=30, what="the server")
        page.evaluate("() => window.bridgeClient.flush()")
        assert server_text(second, "restart") == "before during after"


def test_edit_from_a_python_service_appears_in_the_page(context, bridge):
    page = open_demo(context, bridge, "from-python")
    page.click("#text")
    page.keyboard.type("browser")
    page.evaluate("() => window.bridgeClient.flush()")

    async def service_edit() -> list[bytes]:
        async with BridgeClient(bridge.ws_url, peer="python-service") as client:
            doc = await client.open("from-python")
            with doc.change() as d:
                d["text"].insert(0, "python+")
            await doc.flush()
            return doc.heads

    # Playwright's sync API owns this thread's event loop: the service runs in its own.
    with ThreadPoolExecutor(1) as pool:
        heads = pool.submit(anyio.run, service_edit).result(timeout=30)
    wait_until_durable(bridge, "from-python", heads)
    eventually(lambda: page.input_value("#text") == "python+browser", what="the page to show the service's edit")


def test_indicator_goes_saving_then_saved(context, bridge):
    page = open_demo(context, bridge, "indicator")
    eventually(lambda: page.get_attribute("#status", "data-status") == "saved", what="initial saved")
    page.evaluate(
        """() => { window.seen = []; window.bridgeClient.on("status", s => window.seen.push(s)); }"""
    )
    page.click("#text")
    page.keyboard.type("x")
    eventually(lambda: page.evaluate("() => window.seen.includes('saving')"), what="saving")
    eventually(lambda: page.get_attribute("#status", "data-status") == "saved", what="saved")
    seen = page.evaluate("() => window.seen")
    assert seen.index("saving") < len(seen) - 1 - seen[::-1].index("saved")


def test_presence_shows_who_is_here_by_name(context, bridge):
    a, b = open_demo(context, bridge, "presence"), open_demo(context, bridge, "presence")
    a.fill("#name", "Ada")
    b.fill("#name", "Grace")
    eventually(lambda: "Grace" in a.inner_text("#people") and "Ada" in b.inner_text("#people"), what="names")
    b.close()
    eventually(lambda: "Grace" not in a.inner_text("#people"), what="Grace to leave")


def test_warn_on_unsaved_prompts_only_while_something_is_unsaved(browser, context, bridge):
    dialogs = []

    def answer(dialog):
        dialogs.append(dialog.type)
        dialog.accept()

    saved_page = open_demo(context, bridge, "warn-saved")
    saved_page.on("dialog", answer)
    saved_page.click("#text")
    saved_page.keyboard.type("safe")
    saved_page.evaluate("() => window.bridgeClient.flush()")
    with saved_page.expect_event("close"):
        saved_page.close(run_before_unload=True)
    assert dialogs == [], "nothing unsaved: no prompt"

    # A socket that never reaches the server keeps the next edits unsaved.
    cut_off = browser.new_context()
    cut_off.route_web_socket("**/sync", lambda ws: None)
    cut_off.add_init_script("navigator.sendBeacon = () => false;")
    page = cut_off.new_page()
    page.on("dialog", answer)
    page.goto(f"{bridge.http_url}/#warn-unsaved")
    page.wait_for_selector("#text:not([disabled])", timeout=15_000)
    page.click("#text")
    page.keyboard.type("unsaved")
    with page.expect_event("close"):  # the handler accepts the prompt, then it closes
        page.close(run_before_unload=True)
    assert dialogs == ["beforeunload"]
    cut_off.close()


def test_the_demo_works_under_a_mount_prefix(context, tmp_path):
    """`Mount("/bridge", app)`: the page's script and socket paths are relative."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from bridge import create_app
    from bridge.testing import serve_in_thread

    bridge_app = create_app(data_dir=tmp_path / "data")
    parent = Starlette(routes=[Mount("/bridge", bridge_app)], lifespan=bridge_app.router.lifespan_context)
    with serve_in_thread(parent) as running:
        page = context.new_page()
        page.goto(f"{running.http_url}/bridge/#mounted")
        page.wait_for_selector("#text:not([disabled])", timeout=15_000)
        page.click("#text")
        page.keyboard.type("under a prefix")

        def saved() -> bool:
            answer = httpx.get(f"{running.http_url}/bridge/docs/mounted")
            return answer.status_code == 200 and answer.json().get("text") == "under a prefix"

        eventually(saved, what="the edit to reach the mounted bridge")
