"""The demo page as a visitor sees it: what the status says when something
is unreachable, the invitation to a second tab, the phone layout, no 404s."""

from __future__ import annotations

from bridge.testing import serve_in_subprocess

from polling import eventually  # e2e/polling.py
from test_browser import open_demo


def status(page) -> str:
    return page.inner_text("#status")


def test_offline_says_which_side_and_how_many_edits_wait(context, bridge):
    page = open_demo(context, bridge, "which-side")
    eventually(lambda: status(page) == "saved", what="saved")
    context.set_offline(True)
    eventually(lambda: status(page).startswith("offline: no network"), what="the browser's own network")
    page.click("#text")
    page.keyboard.type("ab")
    eventually(lambda: "2 edits waiting" in status(page), what="the count of waiting edits")
    context.set_offline(False)
    eventually(lambda: status(page) == "saved", timeout=30, what="saved again")


def test_a_server_that_went_away_is_named_as_such(context, tmp_path):
    with serve_in_subprocess(tmp_path / "data") as first:
        port = first.port
        page = open_demo(context, first, "server-gone")
        eventually(lambda: status(page) == "saved", what="saved")
        first.process.kill()
        first.process.wait()
        page.click("#text")
        page.keyboard.type("x")
        eventually(lambda: status(page).startswith("server unreachable") and "1 edit waiting" in status(page),
                   what="the server named as the side that is gone")
    with serve_in_subprocess(tmp_path / "data", port=port):
        eventually(lambda: status(page) == "saved", timeout=30, what="saved once the server is back")


def test_a_new_document_is_saved_before_anything_is_typed_and_invites_a_second_tab(context, bridge):
    page = open_demo(context, bridge, "fresh-doc")
    eventually(lambda: status(page) == "saved", what="saved, not saving")
    invite = page.get_attribute("#invite", "href")
    assert invite.endswith("/#fresh-doc")
    second = context.new_page()
    second.goto(invite)
    second.wait_for_selector("#text:not([disabled])", timeout=15_000)
    page.click("#text")
    page.keyboard.type("hello")
    eventually(lambda: second.input_value("#text") == "hello", what="the second tab to follow")


def test_on_a_phone_the_status_stays_on_one_line_and_nothing_404s(context, bridge):
    failed = []
    page = context.new_page()
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{bridge.http_url}/#phone")
    page.wait_for_selector("#text:not([disabled])", timeout=15_000)
    context.set_offline(True)
    page.click("#text")
    page.keyboard.type("abc")
    eventually(lambda: "waiting" in status(page), what="the long status text")
    box = page.locator("#status").bounding_box()
    line = page.evaluate("() => parseFloat(getComputedStyle(document.getElementById('status')).lineHeight) || 20")
    assert box["height"] < 2 * line + 8, box  # one line: padding and border, not two lines of text
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    context.set_offline(False)
    assert page.evaluate("() => document.querySelector('link[rel=icon]').href").endswith("/favicon.svg")
    assert failed == []
