// Several documents on one connection: edits stay in their own document,
// both converge with a second client, and closing one leaves the other
// syncing.

import assert from "node:assert/strict";
import { test } from "node:test";
import { useBridge, nextEvent, plain, waitEqual, waitFor, waitStatus } from "./helpers.mjs";

const env = useBridge();

test("two documents on one connection stay separate and both converge with a second client", async () => {
  const a = await env.clients.online(env.bridge.wsUrl);
  const welcomes = [];
  a.on("welcome", (w) => welcomes.push(w));
  const [notes, todo] = await Promise.all([a.open("md-notes"), a.open("md-todo")]);
  assert.deepEqual([...a.docs.keys()].sort(), ["md-notes", "md-todo"]);
  assert.equal(a.open("md-notes") instanceof Promise, true);
  assert.equal(await a.open("md-notes"), notes, "opening an open document returns the same object");

  notes.change((d) => {
    d.text = "first note";
  });
  todo.change((d) => {
    d.items = [{ title: "milk", done: false }];
  });
  assert.equal(notes.value.items, undefined);
  assert.equal(todo.value.text, undefined);
  await a.flush(); // both documents, one request

  assert.deepEqual(await env.bridge.doc("md-notes"), { text: "first note" });
  assert.deepEqual(await env.bridge.doc("md-todo"), { items: [{ title: "milk", done: false }] });

  // A second client on both documents gets both, each with its own content.
  const b = await env.clients.online(env.bridge.wsUrl);
  const [bNotes, bTodo] = await Promise.all([b.open("md-notes"), b.open("md-todo")]);
  assert.deepEqual(plain(bNotes.value), { text: "first note" });
  assert.deepEqual(plain(bTodo.value), { items: [{ title: "milk", done: false }] });

  // Concurrent edits on both sides of both documents.
  const aNotesChanges = [];
  const aTodoChanges = [];
  notes.on("change", (e) => aNotesChanges.push(e));
  todo.on("change", (e) => aTodoChanges.push(e));
  bTodo.change((d) => {
    d.items.push({ title: "eggs", done: false });
  });
  todo.change((d) => {
    d.items[0].done = true;
  });
  bNotes.change((d) => {
    d.author = "b";
  });

  const want = {
    notes: { text: "first note", author: "b" },
    todo: { items: [{ title: "milk", done: true }, { title: "eggs", done: false }] },
  };
  for (const [label, doc] of [["a notes", notes], ["b notes", bNotes]]) {
    await waitEqual(() => plain(doc.value), want.notes, `${label} converged`);
  }
  for (const [label, doc] of [["a todo", todo], ["b todo", bTodo]]) {
    await waitEqual(() => plain(doc.value), want.todo, `${label} converged`);
  }
  assert.deepEqual(notes.heads, bNotes.heads);
  assert.deepEqual(todo.heads, bTodo.heads);
  // Remote changes arrived on the right document only, and say so.
  assert.ok(aNotesChanges.some((e) => e.origin === "remote"));
  assert.ok(aNotesChanges.every((e) => e.value.items === undefined));
  assert.ok(aTodoChanges.some((e) => e.origin === "remote"));
  assert.ok(aTodoChanges.every((e) => e.value.text === undefined));

  await Promise.all([a.flush(), b.flush()]);
  assert.deepEqual(await env.bridge.doc("md-notes"), want.notes);
  assert.deepEqual(await env.bridge.doc("md-todo"), want.todo);
  assert.equal(welcomes.length, 0, "all of it on the one connection");
});

test("closing one document leaves the others on the connection syncing", async () => {
  const a = await env.clients.online(env.bridge.wsUrl);
  const b = await env.clients.online(env.bridge.wsUrl);
  const [a1, a2] = await Promise.all([a.open("md-close-1"), a.open("md-close-2")]);
  const [b1, b2] = await Promise.all([b.open("md-close-1"), b.open("md-close-2")]);

  a1.change((d) => {
    d.v = "last word";
  });
  const closed = nextEvent(a1, "closed");
  await a1.close(); // flushes what is unsaved first
  await closed;
  assert.equal(a1.closed, true);
  assert.equal(a.docs.has("md-close-1"), false);
  assert.deepEqual(await env.bridge.doc("md-close-1"), { v: "last word" });
  assert.throws(() => a1.change((d) => (d.v = "too late")), { code: "closed" });
  await waitFor(() => b1.value.v === "last word", undefined, "b sees a's last word on doc 1");

  // The other document still syncs both ways.
  b2.change((d) => {
    d.still = "here";
  });
  await waitFor(() => a2.value.still === "here", undefined, "a still receives doc 2");
  // ...and the closed one no longer receives anything.
  b1.change((d) => {
    d.after = "close";
  });
  a2.change((d) => {
    d.marker = 1;
  });
  await waitFor(() => b2.value.marker === 1, undefined, "b receives doc 2 from a");
  await b.flush();
  assert.equal(a1.value.after, undefined);
  await waitStatus(a, "saved"); // a's own `saved` may still be on its way

  // Re-opening a closed document gives a fresh, synced object.
  const again = await a.open("md-close-1");
  assert.notEqual(again, a1);
  assert.deepEqual(plain(again.value), { v: "last word", after: "close" });
  await waitStatus(a, "saved");
});
