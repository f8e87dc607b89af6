// client.close() against a real bridge, watched through a recording proxy:
// it flushes every open document, waits for `flushed`, says `bye`, and the
// server closes the socket with 1000; afterwards the client is inert.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { startBridge } from "./bridge.mjs";
import { startProxy } from "./fake.mjs";
import { Clients, nextEvent, record, staysTrue, waitStatus, within } from "./helpers.mjs";

let bridge;
let proxy;
const clients = new Clients();

before(async () => {
  bridge = await startBridge();
  proxy = await startProxy(bridge.wsUrl);
});
afterEach(() => clients.closeAll());
after(async () => {
  await proxy?.close();
  await bridge?.dispose();
});

/** The frames of the proxy's last connection, from its last hello on. */
function lastConnection() {
  const start = proxy.frames.findLastIndex((f) => f.dir === "c2s" && f.msg.t === "hello");
  return proxy.frames.slice(start);
}

test("close() flushes every document, then says bye, and the server closes with 1000", async () => {
  // No background flushes: only close() asks for one.
  const c = await clients.online(proxy.url, { autoFlushDelay: false, peerId: "closer" });
  const [d1, d2] = await Promise.all([c.open("cl-1"), c.open("cl-2")]);
  d1.change((d) => {
    d.text = "typed and closed";
  });
  d2.change((d) => {
    d.n = 2;
  });
  const heads = { "cl-1": d1.heads, "cl-2": d2.heads };
  const closedEvents = [nextEvent(d1, "closed"), nextEvent(d2, "closed")];
  await within(c.close(), undefined, "client.close()");

  // Durable before close() resolved, in the server's own words.
  for (const [id, h] of Object.entries(heads)) {
    assert.equal((await bridge.durable(id, h)).durable, true, `${id} durable after close()`);
  }
  assert.deepEqual(await bridge.doc("cl-1"), { text: "typed and closed" });
  assert.deepEqual(await bridge.doc("cl-2"), { n: 2 });

  // On the wire: one flush covering both documents, its flushed, then bye,
  // then the server's normal close; nothing from the client after bye.
  const frames = lastConnection();
  const line = frames.map((f) => (f.dir === "close" ? `close:${f.by}:${f.code}` : `${f.dir}:${f.msg.t}`));
  const flushAt = line.indexOf("c2s:flush");
  const flush = frames[flushAt].msg;
  assert.deepEqual(flush.docs, heads);
  const flushedAt = frames.findIndex((f) => f.dir === "s2c" && f.msg.t === "flushed" && f.msg.id === flush.id);
  const byeAt = line.indexOf("c2s:bye");
  assert.ok(flushAt >= 0 && flushedAt > flushAt && byeAt > flushedAt, `flush -> flushed -> bye: ${line}`);
  assert.equal(line.lastIndexOf("c2s:bye"), byeAt, "one bye");
  assert.ok(!line.slice(byeAt + 1).some((l) => l.startsWith("c2s:")), `nothing sent after bye: ${line}`);
  const serverClose = frames.find((f) => f.dir === "close" && f.by === "server");
  assert.equal(serverClose?.code, 1000, `server closed normally after bye: ${line}`);

  // Afterwards: offline, documents closed, nothing works and nothing reconnects.
  await Promise.all(closedEvents);
  assert.equal(c.status, "closed");
  assert.equal(d1.closed, true);
  assert.equal(c.docs.size, 0);
  assert.throws(() => d1.change((d) => (d.x = 1)), { code: "closed" });
  await assert.rejects(c.open("cl-3"), { code: "closed" });
  assert.equal(c.ephemeral("cl-1", { x: 1 }), false);
  assert.equal(await c.close(), undefined, "close() again is harmless");
  const hellos = proxy.sent("hello").length;
  await staysTrue(() => proxy.sent("hello").length === hellos, 300, "no reconnect after close()");
});

test("close() with nothing unsaved just says bye", async () => {
  const c = await clients.online(proxy.url, { peerId: "idle-closer" });
  await c.open("cl-idle");
  await within(c.close(), undefined, "client.close()");
  const line = lastConnection().map((f) => (f.dir === "close" ? `close:${f.by}:${f.code}` : `${f.dir}:${f.msg.t}`));
  assert.ok(!line.includes("c2s:flush"), `no flush needed: ${line}`);
  assert.ok(line.includes("c2s:bye"), `bye: ${line}`);
  assert.ok(line.includes("close:server:1000"), `server closed with 1000: ${line}`);
});

test("doc.close() flushes that document and sends close for it; the connection stays", async () => {
  const c = await clients.online(proxy.url, { autoFlushDelay: false, peerId: "doc-closer" });
  const [keep, done] = await Promise.all([c.open("cl-keep"), c.open("cl-done")]);
  done.change((d) => {
    d.last = "edit";
  });
  const heads = done.heads;
  await within(done.close(), undefined, "doc.close()");
  assert.equal((await bridge.durable("cl-done", heads)).durable, true);
  const frames = lastConnection();
  const flushAt = frames.findIndex((f) => f.dir === "c2s" && f.msg.t === "flush" && f.msg.docs["cl-done"]);
  const closeAt = frames.findIndex((f) => f.dir === "c2s" && f.msg.t === "close" && f.msg.doc === "cl-done");
  assert.ok(flushAt >= 0 && closeAt > flushAt, "flush, then close {doc}");
  assert.equal(c.status, "saved");
  keep.change((d) => {
    d.still = "open";
  });
  await keep.flush();
  assert.deepEqual(await bridge.doc("cl-keep"), { still: "open" });
});

test("close() while the server is down rejects after its timeout instead of hanging", async () => {
  const c = await clients.online(bridge.wsUrl, { autoFlushDelay: false });
  const doc = await c.open("cl-down");
  doc.change((d) => {
    d.v = 1;
  });
  await doc.flush();
  await bridge.kill9();
  try {
    await waitStatus(c, "offline");
    doc.change((d) => {
      d.v = 2;
    });
    const errors = record(c, ["error"]);
    const started = Date.now();
    await assert.rejects(within(c.close({ timeout: 300 }), 5000, "close() offline"), { code: "timeout" });
    assert.ok(Date.now() - started < 4000, "bounded by its timeout");
    assert.equal(c.status, "closed");
    assert.equal(doc.closed, true);
    assert.deepEqual(errors.of("error"), []);
  } finally {
    await bridge.start();
  }
  assert.deepEqual(await bridge.doc("cl-down"), { v: 1 }, "the flushed edit survived; the unsaved one never arrived");
});
