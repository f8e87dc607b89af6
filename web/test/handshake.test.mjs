// Protocol handshake against a real bridge: hello -> welcome, status
// "connecting" -> "saved" / "saving", and a fresh session per connection.

import assert from "node:assert/strict";
import { test } from "node:test";
import { startBridge } from "./bridge.mjs";
import { useBridge, nextEvent, record, waitFor, waitStatus } from "./helpers.mjs";

const env = useBridge();

test("a new client is connecting, gets welcome from the server, then is saved", async () => {
  const client = env.clients.make(env.bridge.wsUrl, { peerId: "handshake-peer" });
  assert.equal(client.status, "connecting");
  assert.equal(client.welcome, null);
  const rec = record(client, ["welcome", "status"]);

  const welcome = await nextEvent(client, "welcome");
  await waitStatus(client, "saved");

  // The welcome is the server's: its peer id is the one /healthz reports.
  assert.equal(welcome.peer, env.bridge.peer);
  assert.match(welcome.session, /^[0-9a-f]{16}$/);
  assert.deepEqual(welcome.caps, []);
  assert.equal(typeof welcome.limits.max_frame_bytes, "number");
  assert.deepEqual(client.welcome, welcome);
  // welcome first, then status leaves "connecting"; nothing else in between.
  assert.deepEqual(rec.events.map(([name, arg]) => (name === "status" ? arg : name)), ["welcome", "saved"]);
  assert.equal(client.peerId, "handshake-peer");
});

test("a change goes saving -> saved once the server has it durable", async () => {
  const client = await env.clients.online(env.bridge.wsUrl, { autoFlushDelay: 0 });
  const doc = await client.open("hs-doc");
  assert.equal(client.status, "saved");
  const statuses = record(client, ["status"]);

  doc.change((d) => {
    d.greeting = "hello";
  });
  assert.equal(client.status, "saving");
  assert.equal(doc.unsaved, true);
  await waitStatus(client, "saved");
  assert.equal(doc.unsaved, false);
  assert.deepEqual(statuses.of("status"), ["saving", "saved"]);
  // "saved" is a promise about the server's disk.
  assert.equal((await env.bridge.durable("hs-doc", doc.heads)).durable, true);
});

test("every connection gets its own session; the server's peer stays the same", async () => {
  const a = env.clients.make(env.bridge.wsUrl);
  const b = env.clients.make(env.bridge.wsUrl);
  const [wa, wb] = await Promise.all([nextEvent(a, "welcome"), nextEvent(b, "welcome")]);
  assert.equal(wa.peer, wb.peer);
  assert.notEqual(wa.session, wb.session);
});

test("a client started before the server comes up connects once it is there", async () => {
  const late = await startBridge();
  await late.stop();
  try {
    const client = env.clients.make(late.wsUrl);
    // Nobody listens: the client goes offline and keeps trying.
    await waitStatus(client, "offline");
    assert.equal(client.ephemeral("x", { hi: 1 }), false, "ephemeral() is refused while offline");
    await late.start();
    await waitStatus(client, "saved");
    assert.equal(client.welcome.peer, late.peer);
  } finally {
    await env.clients.closeAll();
    await late.dispose();
  }
});

test("open() resolves with the server's state after the initial sync", async () => {
  const writer = await env.clients.online(env.bridge.wsUrl);
  const w = await writer.open("hs-state");
  w.change((d) => {
    d.n = 42;
    d.items = ["a", "b"];
  });
  await w.flush();

  const reader = env.clients.make(env.bridge.wsUrl); // still connecting when open() is called
  const r = await reader.open("hs-state");
  assert.equal(r.synced, true);
  assert.deepEqual(r.heads, w.heads);
  assert.equal(r.value.n, 42);
  assert.deepEqual([...r.value.items], ["a", "b"]);
  await waitFor(() => reader.status === "saved", undefined, "reader saved");
});
