"""The demo page against a bridge with token auth: the token comes in the
page's URL (``?token=...``). Read access only: a live view that cannot edit,
not even from page JS. No access: the page says "forbidden"."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from bridge.tokens import mint

from polling import eventually  # e2e/polling.py


def open_page(context, bridge, doc_id: str, token: str | None, state: str = "ready", console: list | None = None):
    """The demo for ``doc_id`` with ``token`` in its URL, once its body says ``state``."""
    page = context.new_page()
    if console is not None:
        page.on("console", lambda msg: console.append(msg.text))
        page.on("pageerror", lambda exc: console.append(str(exc)))
    query = f"?token={quote(token)}" if token else ""
    page.goto(f"{bridge.http_url}/{query}#{doc_id}")
    page.wait_for_selector(f"body[data-state='{state}']", timeout=15_000)
    return page


def server_doc(bridge, secret: str, doc_id: str) -> dict | None:
    token = mint(secret, sub="e2e-check", read=["*"], ttl=60)
    answer = httpx.get(f"{bridge.http_url}/docs/{doc_id}", headers={"Authorization": f"Bearer {token}"})
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return answer.json()


def test_read_only_page_sees_edits_live_and_cannot_change_the_document(context, auth_bridge, auth_secret):
    doc_id = "ro-page"
    writer_token = mint(auth_secret, sub="writer", write=[doc_id], ttl=600)
    reader_token = mint(auth_secret, sub="reader", read=["ro-*"], ttl=600)
    console: list[str] = []
    writer = open_page(context, auth_bridge, doc_id, writer_token, console=console)
    writer.click("#text")
    writer.keyboard.type("hello")
    writer.evaluate("() => window.bridgeClient.flush()")

    reader = open_page(context, auth_bridge, doc_id, reader_token, console=console)
    # The read-only mode: a badge, an editor that does not edit, no to-do form.
    assert reader.get_attribute("body", "data-access") == "read"
    assert reader.is_visible("#access")
    assert "read-only" in reader.inner_text("#access")
    assert reader.is_visible("#readonly-note")
    assert reader.get_attribute("#text", "readonly") is not None
    assert not reader.is_editable("#text")
    assert reader.is_disabled("#todo-title") and reader.is_disabled("#todo-add")
    assert writer.get_attribute("body", "data-access") == "write"
    assert writer.is_hidden("#access")
    eventually(lambda: reader.input_value("#text") == "hello", what="the reader to show the document")

    # Live: the writer's edits appear in the reader.
    writer.keyboard.type(" world")
    writer.fill("#todo-title", "a to-do")
    writer.click("#todo-add")
    eventually(lambda: reader.input_value("#text") == "hello world", what="the writer's text, live")
    eventually(lambda: reader.locator("#todos li .title").all_inner_texts() == ["a to-do"], what="the to-do, live")
    assert reader.is_disabled("#todos li input[type=checkbox]")

    # Typing into the reader does nothing.
    reader.click("#text")
    reader.keyboard.type("typed by the reader")
    assert reader.input_value("#text") == "hello world"

    # Nor does the client's own change API, called from page JS.
    outcome = reader.evaluate(
        """() => {
            const { client, doc, docId } = window.bridgeDemo;
            const before = JSON.stringify(doc.value);
            const heads = doc.heads.join();
            const tries = [
                () => doc.change((d) => { d.text = "hacked"; }),
                () => client.docs.get(docId).change((d) => { d.todos.splice(0, 1); }),
                () => window.bridgeClient.docs.get(docId).change((d) => { d.evil = true; }),
            ];
            const errors = tries.map((f) => {
                try { f(); return null; } catch (e) { return { name: e.name, code: e.code, doc: e.doc }; }
            });
            return {
                errors,
                readOnly: doc.readOnly,
                access: doc.access,
                unchanged: JSON.stringify(doc.value) === before && doc.heads.join() === heads,
                unsaved: doc.unsaved,
            };
        }"""
    )
    assert outcome["errors"] == [{"name": "BridgeError", "code": "read_only", "doc": doc_id}] * 3, outcome
    assert outcome["readOnly"] is True and outcome["access"] == "read"
    assert outcome["unchanged"] is True, "the local document was not touched"
    assert outcome["unsaved"] is False
    assert reader.get_attribute("#status", "data-status") == "saved"

    # The server has the writer's document only, and the writer saw nothing else.
    writer.evaluate("() => window.bridgeClient.flush()")
    doc = server_doc(auth_bridge, auth_secret, doc_id)
    assert doc["text"] == "hello world"
    assert [t["title"] for t in doc["todos"]] == ["a to-do"]
    assert "evil" not in doc
    assert writer.input_value("#text") == "hello world"

    # Still live after all that.
    writer.click("#text")
    writer.keyboard.press("End")
    writer.keyboard.type("!")
    eventually(lambda: reader.input_value("#text") == "hello world!", what="a later edit, live")

    for line in console:
        assert writer_token not in line and reader_token not in line, f"a token was logged: {line}"


def test_page_without_access_shows_forbidden(context, auth_bridge, auth_secret):
    secret_doc = "payroll"
    owner = mint(auth_secret, sub="owner", write=[secret_doc], ttl=600)
    owner_page = open_page(context, auth_bridge, secret_doc, owner)
    owner_page.click("#text")
    owner_page.keyboard.type("salaries")
    owner_page.evaluate("() => window.bridgeClient.flush()")

    outsider = mint(auth_secret, sub="outsider", read=["public-*"], write=["mine-*"], ttl=600)
    console: list[str] = []
    page = open_page(context, auth_bridge, secret_doc, outsider, state="forbidden", console=console)
    assert page.is_visible("#notice")
    assert "Forbidden" in page.inner_text("#notice-title")
    assert page.is_hidden("main"), "no (empty) document is shown"
    assert page.is_disabled("#text")
    assert page.input_value("#text") == ""
    assert page.evaluate("() => window.bridgeDemo.doc") is None
    assert page.evaluate("() => window.bridgeDemo.state") == "forbidden"
    # The connection itself is fine (other documents could be opened on it).
    assert page.evaluate("() => window.bridgeClient.status") in ("saved", "saving")
    assert server_doc(auth_bridge, auth_secret, secret_doc)["text"] == "salaries"
    for line in console:
        assert outsider not in line, f"the token was logged: {line}"


def test_page_without_a_token_asks_for_one(context, auth_bridge):
    page = open_page(context, auth_bridge, "anything", None, state="unauthorized")
    assert page.is_visible("#notice")
    assert "?token=" in page.inner_text("#notice-text")
    assert page.is_hidden("main")
    assert page.evaluate("() => window.bridgeClient.status") == "failed"
