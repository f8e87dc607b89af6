// Bad server input, from a scripted fake server (the `ws` package on
// 127.0.0.1:0): garbage, text frames, unknown message types, wrong field
// types, frames before `welcome`, bad Automerge data, refusing close codes.
// The client must report an `error` event and carry on (or, for 4400, 4401,
// 4403, 1009 and a wrong protocol version, stop for good: status "failed")
// — never throw or hang.

import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import { after, afterEach, test } from "node:test";
import { emptySyncMessage, startFakeServer } from "./fake.mjs";
import { Clients, nextEvent, record, staysTrue, waitFor, waitStatus, within } from "./helpers.mjs";

const clients = new Clients();
const fakes = [];

// Anything thrown outside a test's own promise chain would otherwise only
// show up as a vague failure of the whole file.
const stray = [];
const onStray = (e) => stray.push(e);
process.on("uncaughtException", onStray);
process.on("unhandledRejection", onStray);

afterEach(async () => {
  await clients.closeAll(200); // the fake does not answer flushes unless a test does
  for (const f of fakes.splice(0)) await f.close();
  assert.deepEqual(stray, [], "no uncaught exceptions or unhandled rejections");
});
after(() => {
  process.off("uncaughtException", onStray);
  process.off("unhandledRejection", onStray);
});

/** Quick reconnects, so "it did not reconnect" windows can be short. */
const FAST = { reconnect: { baseDelay: 20, maxDelay: 100 }, openTimeout: 2000, autoFlushDelay: false };

async function fakeServer(onConnection, peerOptions) {
  const fake = await startFakeServer(onConnection, peerOptions);
  fakes.push(fake);
  return fake;
}

/** A well-formed relayed ephemeral message, used as an "everything before this was handled" marker. */
function marker(peer, n) {
  peer.send({ t: "eph", doc: "marker", from: "fake", data: encode({ marker: n }) });
}

test("garbage, text, unknown types and malformed messages: an error event each, and the client carries on", async () => {
  const fake = await fakeServer((peer) => peer.handshake());
  const c = clients.make(fake.url, { ...FAST, peerId: "victim" });
  await waitStatus(c, "saved");
  const peer = await fake.peer(0);
  const errors = record(c, ["error"]);

  const bad = [
    ["garbage bytes", (p) => p.sendBytes(Buffer.from([0xc1, 0xff, 0x00, 0x13]))],
    ["truncated MessagePack", (p) => p.sendBytes(encode({ t: "saved", doc: "d", heads: [] }).subarray(0, 5))],
    ["a text frame", (p) => p.sendText(JSON.stringify({ t: "welcome" }))],
    ["an unknown message type", (p) => p.send({ t: "frobnicate", doc: "d", data: new Uint8Array([1]) })],
    ["not a map", (p) => p.send([1, 2, 3])],
    ["a map without t", (p) => p.send({ doc: "d" })],
    ["t that is not a string", (p) => p.send({ t: 7 })],
    ["wrong field types", (p) => p.send({ t: "saved", doc: 5, heads: "nope" })],
    ["heads that are not 32 bytes", (p) => p.send({ t: "saved", doc: "d", heads: [new Uint8Array(3)] })],
    ["sync without data", (p) => p.send({ t: "sync", doc: "d" })],
    ["flushed with a string id", (p) => p.send({ t: "flushed", id: "one", docs: {} })],
  ];
  for (const [i, [what, sendIt]] of bad.entries()) {
    const before = errors.of("error").length;
    const seen = nextEvent(c, "ephemeral", { filter: (e) => e.value?.marker === i });
    sendIt(peer);
    marker(peer, i);
    await within(seen, undefined, `the client still reading frames after ${what}`);
    const now = errors.of("error").slice(before);
    assert.equal(now.length, 1, `exactly one error event for ${what} (got ${now.map((e) => e.message)})`);
    assert.equal(now[0].name, "BridgeError");
    assert.equal(now[0].code, "protocol", `${what}: ${now[0].message}`);
  }
  // Still the same connection, still online.
  assert.equal(fake.peers.length, 1);
  assert.equal(c.status, "saved");
  const doc = await c.open("after-garbage");
  assert.equal((await peer.expect("open")).doc, "after-garbage");
  assert.equal(doc.closed, false);
});

test("an unknown message type is reported, not acted on", async () => {
  const fake = await fakeServer((peer) => peer.handshake());
  const c = clients.make(fake.url, FAST);
  await waitStatus(c, "saved");
  const peer = await fake.peer(0);
  const err = nextEvent(c, "error");
  peer.send({ t: "presence-v2", doc: "x", who: ["a"] });
  const e = await err;
  assert.equal(e.code, "protocol");
  assert.match(e.message, /presence-v2/);
  const seen = nextEvent(c, "ephemeral");
  marker(peer, 0);
  await seen;
  assert.equal(c.status, "saved");
  assert.equal(fake.peers.length, 1, "no reconnect");
});

test("frames before welcome are reported; a malformed welcome times the handshake out and the client retries", async () => {
  const fake = await fakeServer(async (peer) => {
    await peer.expect("hello");
    if (fake.peers.length === 1) {
      peer.send({ t: "saved", doc: "d", heads: [] }); // not welcomed yet
      peer.send({ t: "welcome", v: "one", peer: "fake" }); // v must be an int
    } else {
      peer.welcome();
    }
  });
  const c = clients.make(fake.url, { ...FAST, handshakeTimeout: 800 });
  const errors = record(c, ["error"]);
  await waitStatus(c, "saved");
  const messages = errors.of("error").map((e) => `${e.code}: ${e.message}`);
  assert.ok(messages.some((m) => /protocol: .*before welcome/.test(m)), `a frame before welcome is an error: ${messages}`);
  assert.ok(messages.some((m) => /protocol: .*\bv\b/.test(m)), `the malformed welcome is an error: ${messages}`);
  assert.equal(fake.peers.length, 2);
  // The client dropped the first socket itself, as a handshake timeout.
  assert.equal((await within(fake.peers[0].closed, undefined, "first socket closed")).code, 4408);
});

test("bad Automerge data in a sync message: a document error event, and the document keeps working", async () => {
  // The fake answers `open` with a real, empty sync message, so the initial sync completes.
  const fake = await fakeServer((peer) => peer.handshake());
  const c = clients.make(fake.url, FAST);
  const doc = await within(c.open("bad-sync"), undefined, "open");
  assert.equal(doc.synced, true);
  const peer = await fake.peer(0);
  const docErr = nextEvent(doc, "error");
  peer.send({ t: "sync", doc: "bad-sync", data: new Uint8Array([0x42, 1, 2, 3, 4, 5]) });
  const e = await docErr;
  assert.equal(e.code, "sync");
  assert.equal(e.doc, "bad-sync");
  // A sync message for a document we never opened is ignored.
  peer.send({ t: "sync", doc: "never-opened", data: new Uint8Array([0x42]) });
  // The document is still usable and still syncing.
  const syncs = peer.frames.filter((f) => f.t === "sync").length;
  doc.change((d) => {
    d.ok = true;
  });
  await waitFor(() => peer.frames.filter((f) => f.t === "sync").length > syncs, undefined, "a sync frame for the change");
  assert.equal(doc.value.ok, true);
  assert.equal(c.status, "saving");
});

for (const [code, name] of [
  [4400, "protocol"],
  [4401, "unauthorized"],
  [4403, "forbidden"],
  [1009, "too_big"],
]) {
  test(`close ${code} (${name}): an error event, pending work rejected, and no reconnect`, async () => {
    const fake = await fakeServer(async (peer) => {
      await peer.expect("hello");
      peer.close(code, name);
    });
    const c = clients.make(fake.url, { ...FAST, token: "wrong" });
    const err = nextEvent(c, "error");
    const opening = c.open("refused"); // sent before the server says no
    const e = await err;
    assert.equal(e.name, "BridgeError");
    assert.equal(e.code, name);
    assert.equal(e.closeCode, code);
    await assert.rejects(within(opening, undefined, "open() settles"), { code: name });
    assert.equal(c.status, "failed");
    const hello = fake.peers[0].frames[0];
    assert.deepEqual(hello, { t: "hello", v: [1], peer: c.peerId, caps: [], token: "wrong" });
    // With 20 ms backoff a reconnect would come at once; none does.
    await staysTrue(() => fake.peers.length === 1, 500, "no reconnect after a refusal");
    assert.equal(c.status, "failed");
    // Nothing that needs the server works any more, and it says why.
    await assert.rejects(within(c.open("later"), undefined, "open() after a refusal"), { code: name });
    await assert.rejects(within(c.flush(), undefined, "client.flush() after a refusal"), { code: name });
    assert.equal(c.ephemeral("refused", { x: 1 }), false);
    await within(c.close(), 3000, "close() after a refusal");
    assert.equal(c.status, "closed");
  });
}

for (const [code, name] of [[1011, "server_error"]]) {
  test(`close ${code}: an error event "${name}", then the client reconnects`, async () => {
    const fake = await fakeServer(async (peer) => {
      await peer.expect("hello");
      if (fake.peers.length === 1) peer.close(code, "go away");
      else peer.welcome();
    });
    const c = clients.make(fake.url, FAST);
    const e = await nextEvent(c, "error");
    assert.equal(e.code, name);
    assert.equal(e.closeCode, code);
    await waitStatus(c, "saved");
    assert.equal(fake.peers.length, 2);
  });
}

for (const code of [1001, 4409, 4429]) {
  test(`close ${code}: no error, the client reconnects and re-opens its documents`, async () => {
    const fake = await fakeServer(async (peer) => {
      await peer.handshake();
      if (fake.peers.length === 1) {
        await peer.expect("open");
        peer.close(code, "come back later");
      }
    });
    const c = clients.make(fake.url, FAST);
    const errors = record(c, ["error"]);
    await c.open("reopened");
    const second = await fake.peer(1);
    assert.equal((await second.expect("open")).doc, "reopened");
    await waitStatus(c, "saved");
    assert.deepEqual(errors.of("error"), []);
  });
}

test("close() while the socket is still connecting or handshaking returns at once", async () => {
  const fake = await fakeServer(() => {}); // never welcomes
  const early = clients.make(fake.url, FAST);
  await within(early.close(), 2000, "close() right after construction");
  assert.equal(early.status, "closed");
  // (Whether the aborted socket above ever reached the server is up to timing.)
  const handshaking = clients.make(fake.url, FAST);
  await waitFor(
    () => fake.peers.some((p) => p.frames.some((f) => f.t === "hello" && f.peer === handshaking.peerId)),
    undefined,
    "hello from the second client",
  );
  await within(handshaking.close(), 2000, "close() while waiting for welcome");
  assert.equal(handshaking.status, "closed");
  const connections = fake.peers.length;
  await staysTrue(() => fake.peers.length === connections, 200, "no reconnect after close()");
});

test("a welcome for another protocol version stops the client for good", async () => {
  const fake = await fakeServer((peer) => peer.handshake({ v: 2 }));
  const c = clients.make(fake.url, FAST);
  const e = await nextEvent(c, "error");
  assert.equal(e.code, "version");
  await waitStatus(c, "failed");
  await staysTrue(() => fake.peers.length === 1, 400, "no reconnect after a version mismatch");
});

test("a server that drops the connection without a close frame: offline, then back", async () => {
  const fake = await fakeServer(
    async (peer) => {
      await peer.handshake();
      const open = await peer.expect("open");
      // The first connection dies before the document is synced; the second answers.
      if (fake.peers.length === 1) peer.ws.terminate();
      else peer.send({ t: "sync", doc: open.doc, data: emptySyncMessage() });
    },
    { answerOpen: false },
  );
  const c = clients.make(fake.url, FAST);
  const statuses = record(c, ["status"]);
  const doc = await within(c.open("dropped"), undefined, "open() across the drop");
  await waitFor(() => doc.synced, undefined, "synced on the second connection");
  assert.ok(statuses.of("status").includes("offline"), `went offline: ${statuses.of("status")}`);
  assert.equal(fake.peers.length, 2);
  assert.ok(fake.peers[1].frames.some((f) => f.t === "open" && f.doc === "dropped"), "the document was re-opened");
});

test("flush answers: a flushed for another id is ignored, an error for ours rejects it", async () => {
  const fake = await fakeServer((peer) => peer.handshake());
  const c = clients.make(fake.url, FAST);
  await waitStatus(c, "saved");
  const peer = await fake.peer(0);
  const doc = await within(c.open("fl-fake"), undefined, "open");
  doc.change((d) => {
    d.x = 1;
  });
  const heads = doc.heads;

  // First request: answered with a wrong id, then with an error for it.
  const first = doc.flush();
  const req1 = await peer.expect("flush");
  assert.deepEqual(req1.docs, { "fl-fake": heads });
  const settled1 = [];
  first.then(
    () => settled1.push("resolved"),
    (e) => settled1.push(e),
  );
  const seen = nextEvent(c, "ephemeral");
  peer.send({ t: "flushed", id: req1.id + 1000, docs: { "fl-fake": [] } });
  marker(peer, 0);
  await seen;
  assert.deepEqual(settled1, [], "a flushed for another request does not resolve ours");
  assert.equal(doc.unsaved, true);
  peer.send({ t: "error", code: "flush_timeout", msg: "not durable in time", id: req1.id });
  await assert.rejects(first, { code: "flush_timeout", id: req1.id });

  // Second request: answered properly.
  const second = doc.flush();
  const req2 = await peer.expect("flush");
  assert.notEqual(req2.id, req1.id);
  peer.send({ t: "flushed", id: req2.id, docs: { "fl-fake": heads.map((h) => Buffer.from(h, "hex")) } });
  await within(second, undefined, "flush answered");
  assert.equal(doc.unsaved, false);
  await waitStatus(c, "saved");

  // A server error that is about nothing in particular is still surfaced.
  const err = nextEvent(c, "error");
  peer.send({ t: "error", code: "rate_limited", msg: "slow down" });
  assert.equal((await err).code, "rate_limited");
});

test("4401 with a token function: reconnects at once when it gives a fresh token, fatal when it gives the same", async () => {
  const fake = await fakeServer(async (peer) => {
    const hello = await peer.expect("hello");
    if (hello.token === "fresh") peer.welcome();
    else peer.close(4401, "expired");
  });
  let token = "stale";
  const refreshed = clients.make(fake.url, {
    ...FAST,
    token: async () => {
      const t = token;
      token = "fresh"; // the app's auth code renewed it meanwhile
      return t;
    },
  });
  const errors = record(refreshed, ["error"]);
  await waitStatus(refreshed, "saved");
  assert.deepEqual(fake.peers.map((p) => p.frames[0]?.token), ["stale", "fresh"]);
  assert.deepEqual(errors.of("error"), [], "a refreshed token is not an error");

  const stuck = clients.make(fake.url, { ...FAST, token: () => "stale" });
  const e = await nextEvent(stuck, "error");
  assert.equal(e.code, "unauthorized");
  assert.equal(e.closeCode, 4401);
  await waitStatus(stuck, "failed");
});

test("a welcome followed by an unknown message type and unknown fields: ignored, the session carries on", async () => {
  const fake = await fakeServer((peer) => peer.handshake({ future: { x: 1 } }));
  const c = clients.make(fake.url, FAST);
  const doc = await within(c.open("fwd"), undefined, "open");
  const peer = await fake.peer(0);
  peer.send({ t: "announce-v9", doc: "fwd", data: new Uint8Array([1]) });
  peer.send({ t: "saved", doc: "fwd", heads: [], extra: "ignored" });
  const seen = nextEvent(c, "ephemeral");
  marker(peer, 1);
  await seen;
  assert.equal(doc.closed, false);
  assert.equal(c.status, "saved");
  assert.equal(fake.peers.length, 1, "no reconnect");
});
