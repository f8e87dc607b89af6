// flush() semantics against a real bridge: it resolves only once the server
// holds the heads durably (checked with GET /docs/{id}/durable and
// GET /docs/{id}, and by a proxy that delays the client's sync frames), it
// survives going offline, and a server flush_timeout rejects it.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { startBridge } from "./bridge.mjs";
import { startProxy } from "./fake.mjs";
import { Clients, nextEvent, plain, record, track, waitFor, waitStatus, within } from "./helpers.mjs";

let bridge;
const clients = new Clients();
const cleanups = [];

before(async () => {
  bridge = await startBridge();
});
afterEach(async () => {
  await clients.closeAll();
  for (const fn of cleanups.splice(0)) await fn();
});
after(() => bridge?.dispose());

test("each flush resolves with its heads already durable on the server", async () => {
  const proxy = await startProxy(bridge.wsUrl);
  cleanups.push(() => proxy.close());
  // No background flushes: every `flush` frame on the wire is ours.
  const c = await clients.online(proxy.url, { autoFlushDelay: false });
  const doc = await c.open("fl-each");
  const docSaved = record(doc, ["saved"]);
  for (let i = 0; i < 15; i++) {
    doc.change((d) => {
      d[`k${i}`] = i;
      d.list ??= [];
      d.list.push(i);
    });
    assert.equal(doc.unsaved, true);
    const heads = doc.heads;
    await doc.flush();
    // At the moment flush resolves, the server has already said "flushed"
    // for exactly this request, with heads that include ours...
    const request = proxy.sent("flush").at(-1);
    assert.deepEqual(request.docs, { "fl-each": heads });
    const answer = proxy.received("flushed").find((f) => f.id === request.id);
    assert.ok(answer, `a flushed frame for request ${request.id} arrived before flush() resolved`);
    for (const h of heads) assert.ok(answer.docs["fl-each"].includes(h), "flushed covers our heads");
    // ...and the server's own view agrees.
    const durable = await bridge.durable("fl-each", heads);
    assert.equal(durable.durable, true, `heads of change ${i} durable`);
    assert.equal(doc.unsaved, false);
  }
  assert.deepEqual(await bridge.doc("fl-each"), plain(doc.value));
  assert.ok(docSaved.of("saved").length >= 1, "the doc said saved");
  assert.equal(c.status, "saved");
});

test("flush does not resolve while the server lacks the change, and does once it has it", async () => {
  const proxy = await startProxy(bridge.wsUrl);
  cleanups.push(() => proxy.close());
  const c = await clients.online(proxy.url, { autoFlushDelay: false });
  const watcher = await clients.online(bridge.wsUrl);
  const doc = await c.open("fl-held");
  const other = await watcher.open("fl-held");
  doc.change((d) => {
    d.first = "durable";
  });
  await doc.flush();

  // The server gets our flush request, but not the change it is about.
  proxy.hold((msg) => msg.t === "sync");
  doc.change((d) => {
    d.second = "held back";
  });
  const heads = doc.heads;
  const flushed = track(doc.flush());
  await waitFor(() => proxy.sent("flush").some((f) => f.docs["fl-held"]?.[0] === heads[0]), undefined, "flush request sent");
  // Round trips through the server after the flush request: once the watcher
  // has our ephemeral message and we have its answer, the server has read
  // our flush frame and had every chance to (wrongly) answer it.
  const ping = nextEvent(watcher, "ephemeral", { filter: (e) => e.value?.ping === 1 });
  assert.equal(doc.ephemeral({ ping: 1 }), true);
  await ping;
  const pong = nextEvent(c, "ephemeral", { filter: (e) => e.value?.pong === 1 });
  other.ephemeral({ pong: 1 });
  await pong;
  assert.equal(flushed.settled, false, "flush must not resolve before the server has the change");
  assert.equal((await bridge.durable("fl-held", heads)).durable, false);
  assert.equal(doc.unsaved, true);
  assert.equal(c.status, "saving");

  proxy.release();
  await within(flushed.promise, undefined, "flush once the change reached the server");
  assert.equal((await bridge.durable("fl-held", heads)).durable, true);
  assert.deepEqual(await bridge.doc("fl-held"), { first: "durable", second: "held back" });
  await waitFor(() => other.value.second === "held back", undefined, "watcher got the change");
});

test("client.flush() covers every open document; nothing to flush resolves at once", async () => {
  const c = await clients.online(bridge.wsUrl, { autoFlushDelay: false });
  const empty = await c.open("fl-empty");
  assert.deepEqual(empty.heads, []);
  await within(empty.flush(), 1000, "flush of an empty doc");
  const docs = await Promise.all(["fl-m1", "fl-m2", "fl-m3"].map((id) => c.open(id)));
  docs.forEach((d, i) =>
    d.change((x) => {
      x.i = i;
    }),
  );
  await c.flush();
  for (const [i, d] of docs.entries()) {
    assert.equal((await bridge.durable(d.id, d.heads)).durable, true, `${d.id} durable`);
    assert.deepEqual(await bridge.doc(d.id), { i });
  }
  await waitStatus(c, "saved");
});

test("flush while offline resolves after the client reconnects, not before", async () => {
  const c = await clients.online(bridge.wsUrl, { autoFlushDelay: false });
  const doc = await c.open("fl-offline");
  doc.change((d) => {
    d.before = 1;
  });
  await doc.flush();

  await bridge.kill9();
  await waitStatus(c, "offline");
  doc.change((d) => {
    d.offline = 2;
  });
  const heads = doc.heads;
  const flushed = track(doc.flush());
  const all = track(c.flush());
  // Let the client fail to reconnect at least once, then check it is still waiting.
  const statuses = record(c, ["status"]);
  await waitFor(() => statuses.of("status").join().startsWith("connecting,offline"), undefined, "a failed reconnect attempt");
  assert.equal(flushed.settled, false);
  assert.equal(all.settled, false);

  await bridge.start();
  await within(flushed.promise, undefined, "doc.flush() after reconnect");
  await within(all.promise, undefined, "client.flush() after reconnect");
  assert.equal((await bridge.durable("fl-offline", heads)).durable, true);
  assert.deepEqual(await bridge.doc("fl-offline"), { before: 1, offline: 2 });
  await waitStatus(c, "saved");
});

test("flush rejects with the server's flush_timeout when the change never arrives", async () => {
  const quick = await startBridge({ extraArgs: ["--flush-timeout", "0.5"] });
  const proxy = await startProxy(quick.wsUrl);
  cleanups.push(() => proxy.close(), () => quick.dispose());
  const c = await clients.online(proxy.url, { autoFlushDelay: false });
  const errors = record(c, ["error"]);
  const doc = await c.open("fl-timeout");
  proxy.hold((msg) => msg.t === "sync");
  doc.change((d) => {
    d.lost = "in transit";
  });
  await assert.rejects(within(doc.flush(), undefined, "flush_timeout"), (e) => {
    assert.equal(e.name, "BridgeError");
    assert.equal(e.code, "flush_timeout");
    assert.equal(typeof e.id, "number");
    return true;
  });
  assert.equal(doc.unsaved, true, "still unsaved after a failed flush");
  assert.ok(errors.of("error").some((e) => e.code === "flush_timeout"), "the failure is also an error event");
  proxy.release();
  await within(doc.flush(), undefined, "flush after the change got through");
  assert.deepEqual(await quick.doc("fl-timeout"), { lost: "in transit" });
});
