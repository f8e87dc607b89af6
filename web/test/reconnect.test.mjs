// Reconnect against a real bridge that is killed with SIGKILL and started
// again on the same port and data directory: clients go offline, come back
// by themselves, edits made meanwhile sync, nothing flushed before is lost.

import assert from "node:assert/strict";
import { test } from "node:test";
import { useBridge, MemoryStore, nextEvent, plain, record, track, waitEqual, waitFor, waitStatus, within } from "./helpers.mjs";

const env = useBridge();

test("kill -9 and restart: clients reconnect by themselves, offline edits sync, flushed edits survive", async () => {
  const a = await env.clients.online(env.bridge.wsUrl, { peerId: "rc-a" });
  const b = await env.clients.online(env.bridge.wsUrl, { peerId: "rc-b" });
  const da = await a.open("rc-doc");
  const db = await b.open("rc-doc");
  da.change((d) => {
    d.before = "flushed before the crash";
    d.log = ["a0"];
  });
  await da.flush();
  await waitFor(() => db.value.before, undefined, "b has a's first edit");
  const sessionBefore = a.welcome.session;
  const aStatus = record(a, ["status", "welcome"]);

  await env.bridge.kill9();
  await Promise.all([waitStatus(a, "offline"), waitStatus(b, "offline")]);
  assert.equal(da.synced, false);

  // Both edit while the server is gone: concurrently, on the same list.
  da.change((d) => {
    d.log.push("a-offline");
    d.fromA = "while offline";
  });
  db.change((d) => {
    d.log.push("b-offline");
    d.fromB = "while offline";
  });
  assert.equal(da.unsaved, true);
  assert.equal(a.hasUnsavedChanges, true);
  assert.equal(a.status, "offline", "unsaved edits do not hide that we are offline");

  await env.bridge.start();
  // Back by themselves, without anyone calling anything.
  await Promise.all([waitStatus(a, "saved"), waitStatus(b, "saved")]);
  assert.notEqual(a.welcome.session, sessionBefore, "a new session on the restarted server");
  const seen = aStatus.of("status");
  assert.ok(seen.includes("connecting"), `status went through connecting: ${seen}`);
  assert.equal(seen.at(-1), "saved");

  // Both converge on everything, and the server has all of it durably.
  await waitFor(() => da.value.fromB && db.value.fromA, undefined, "offline edits crossed over");
  await waitEqual(() => plain(db.value), plain(da.value), "a and b converged");
  assert.deepEqual([...da.value.log].sort(), ["a-offline", "a0", "b-offline"]);
  assert.equal((await env.bridge.durable("rc-doc", da.heads)).durable, true);
  const server = await env.bridge.doc("rc-doc");
  assert.equal(server.before, "flushed before the crash");
  assert.deepEqual(server, plain(da.value));
});

test("flush, kill -9 at once, restart: every flushed edit is there (5 rounds)", async () => {
  const c = await env.clients.online(env.bridge.wsUrl, { autoFlushDelay: false });
  const doc = await c.open("rc-rounds");
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 20; i++) {
      doc.change((d) => {
        d[`r${round}_${i}`] = i;
        if (!d.text) d.text = "";
        d.text += String(round);
      });
    }
    await doc.flush();
    await env.bridge.kill9(); // nothing gets a chance to finish writing
    await env.bridge.start();
    const server = await env.bridge.doc("rc-rounds");
    for (let i = 0; i < 20; i++) assert.equal(server[`r${round}_${i}`], i, `round ${round} edit ${i} survived`);
    assert.equal(server.text, "0".repeat(20) + [...Array(round)].map((_, r) => String(r + 1).repeat(20)).join(""));
    await waitStatus(c, "saved");
  }
  assert.deepEqual(await env.bridge.doc("rc-rounds"), plain(doc.value));
});

test("a graceful restart (SIGTERM) also brings the client back with its edits", async () => {
  const c = await env.clients.online(env.bridge.wsUrl);
  const doc = await c.open("rc-graceful");
  doc.change((d) => {
    d.one = 1;
  });
  await doc.flush();
  await env.bridge.stop();
  await waitStatus(c, "offline");
  doc.change((d) => {
    d.two = 2;
  });
  await env.bridge.start();
  await within(doc.flush(), undefined, "flush after the restart");
  assert.deepEqual(await env.bridge.doc("rc-graceful"), { one: 1, two: 2 });
  await waitStatus(c, "saved");
});

test("open() while the server is down resolves with local state and syncs later", async () => {
  const c = await env.clients.online(env.bridge.wsUrl);
  const seed = await c.open("rc-seed");
  seed.change((d) => {
    d.seeded = true;
  });
  await seed.flush();

  await env.bridge.kill9();
  await waitStatus(c, "offline");
  const doc = await within(c.open("rc-late-open"), undefined, "open while offline");
  assert.equal(doc.synced, false);
  doc.change((d) => {
    d.madeOffline = "yes";
  });
  const flushed = track(doc.flush());
  const synced = nextEvent(doc, "synced");
  await env.bridge.start();
  await within(flushed.promise, undefined, "flush of a doc opened offline");
  await synced;
  assert.deepEqual(await env.bridge.doc("rc-late-open"), { madeOffline: "yes" });
  assert.deepEqual(await env.bridge.doc("rc-seed"), { seeded: true });
});

test("edits kept in local storage by a client that could not save reach the server through the next one", async () => {
  const store = new MemoryStore();
  const first = await env.clients.online(env.bridge.wsUrl, { storage: store });
  const doc = await first.open("rc-stored");
  doc.change((d) => {
    d.saved = "online";
  });
  await doc.flush();
  await waitFor(() => store.size === 0, undefined, "local copy cleared once durable");

  await env.bridge.kill9();
  await waitStatus(first, "offline");
  doc.change((d) => {
    d.unsaved = "made offline, never sent";
  });
  await waitFor(() => store.size > 0, undefined, "unsaved edit kept locally");
  // The "tab" goes away while offline: close gives up on flushing after its timeout.
  await assert.rejects(first.close({ timeout: 200 }), { code: "timeout" });
  assert.equal(first.status, "closed");
  assert.ok(store.size > 0, "unsaved edits stay in local storage");

  await env.bridge.start();
  const second = await env.clients.online(env.bridge.wsUrl, { storage: store });
  const again = await second.open("rc-stored");
  assert.equal(again.value.unsaved, "made offline, never sent");
  await within(again.flush(), undefined, "flush of the restored edits");
  assert.deepEqual(await env.bridge.doc("rc-stored"), { saved: "online", unsaved: "made offline, never sent" });
  await waitStatus(second, "saved");
  await waitFor(() => store.size === 0, undefined, "local copy cleared once the restored edits are durable");
});
