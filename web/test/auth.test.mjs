// Per-document authorization against a real bridge running token auth
// (`serve --auth-secret`): tokens minted here with node:crypto (mintToken).
// A writer and a read-only reader converge live; the reader's local edits
// throw ReadOnlyError before touching its document; a document the token
// does not cover rejects open() with ForbiddenError; 4401 is fatal without a
// token function and survived with one; a token function refreshes the token
// (`auth` frames) before it expires, on the same connection.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  BridgeError,
  ForbiddenError,
  NotFoundError,
  ReadOnlyError,
  UnauthorizedError,
} from "../dist/client.js";
import { startProxy } from "./fake.mjs";
import {
  mintToken,
  nextEvent,
  plain,
  record,
  staysTrue,
  useBridge,
  waitEqual,
  waitFor,
  waitStatus,
  within,
} from "./helpers.mjs";

// The server refuses HS256 secrets shorter than 32 characters.
const SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret";
const env = useBridge({ extraArgs: ["--auth-secret", SECRET] });

const token = (claims) => mintToken(SECRET, claims);

// Whatever happens, no token reaches the console.
const minted = new Set();
const mint = (claims) => {
  const t = token(claims);
  minted.add(t);
  return t;
};
const consoleLines = [];
for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = console[level];
  console[level] = (...args) => {
    consoleLines.push(args.map(String).join(" "));
    original.apply(console, args);
  };
}
after(() => {
  for (const line of consoleLines) {
    for (const t of minted) assert.ok(!line.includes(t), `a token was logged: ${line}`);
  }
});

test("a writer and a read-only reader converge live; the reader's doc says readOnly", async () => {
  const { clients } = env;
  const writer = await clients.online(env.bridge.wsUrl, { token: mint({ sub: "writer", write: ["live-*"] }) });
  const reader = await clients.online(env.bridge.wsUrl, { token: mint({ sub: "reader", read: ["live-*"] }) });
  assert.equal(writer.welcome.identity, "writer");
  assert.equal(reader.welcome.identity, "reader");

  const w = await writer.open("live-1");
  w.change((d) => {
    d.text = "first";
    d.items = [];
  });
  await w.flush();
  // open() resolves after `opened`: the access is known at once.
  const r = await reader.open("live-1");
  assert.equal(w.access, "write");
  assert.equal(w.readOnly, false);
  assert.equal(r.access, "read");
  assert.equal(r.readOnly, true);
  assert.deepEqual(plain(r.value), { text: "first", items: [] }, "the reader got the document");

  // Live: the writer's next edits reach the reader without it asking.
  const changes = record(r, ["change"]);
  for (let i = 0; i < 3; i++) {
    w.change((d) => {
      d.items.push(`item ${i}`);
    });
  }
  await waitEqual(() => plain(r.value), plain(w.value), "the reader to converge");
  assert.ok(changes.of("change").every((c) => c.origin === "remote"));
  assert.ok(changes.of("change").length > 0);
  await waitStatus(writer, "saved");
  assert.equal(reader.status, "saved", "the reader has nothing unsaved");
});

test("a read-only doc's change() throws ReadOnlyError and leaves the document untouched", async () => {
  const { clients } = env;
  const writer = await clients.online(env.bridge.wsUrl, { token: mint({ sub: "writer", write: ["ro-*"] }) });
  const w = await writer.open("ro-1");
  w.change((d) => {
    d.n = 1;
  });
  await w.flush();

  const reader = await clients.online(env.bridge.wsUrl, { token: mint({ sub: "reader", read: ["ro-*"] }) });
  const errors = record(reader, ["error"]);
  const r = await reader.open("ro-1");
  const before = { value: r.value, heads: r.heads };
  const docEvents = record(r, ["change"]);
  let ran = false;
  assert.throws(
    () =>
      r.change((d) => {
        ran = true;
        d.n = 2;
      }),
    (e) => e instanceof ReadOnlyError && e instanceof BridgeError && e.code === "read_only" && e.doc === "ro-1",
  );
  assert.equal(ran, false, "the change function never ran");
  assert.equal(r.value, before.value, "same document object");
  assert.deepEqual(r.heads, before.heads);
  assert.equal(r.unsaved, false);
  assert.deepEqual(docEvents.events, []);
  assert.equal(reader.status, "saved");

  // Nothing went out either: the server's copy is the writer's, and the
  // server never had a change of ours to refuse.
  await r.flush();
  assert.deepEqual(await serverDoc("ro-1", mint({ sub: "check", read: ["ro-*"] })), { n: 1 });
  assert.deepEqual(errors.of("error"), []);

  // The document is still live for the reader.
  w.change((d) => {
    d.n = 3;
  });
  await waitEqual(() => plain(r.value), { n: 3 }, "the reader to see the writer's edit");
});

test("open() of a document the token does not cover rejects with ForbiddenError; the connection stays", async () => {
  const { clients } = env;
  const c = await clients.online(env.bridge.wsUrl, { token: mint({ sub: "limited", write: ["mine-*"] }) });
  const errors = record(c, ["error"]);
  await assert.rejects(within(c.open("theirs-1"), undefined, "open() of a forbidden doc"), (e) => {
    assert.ok(e instanceof ForbiddenError, `ForbiddenError, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.code, "forbidden");
    assert.equal(e.doc, "theirs-1");
    return true;
  });
  assert.equal(c.docs.has("theirs-1"), false, "no document is left behind");
  assert.ok(errors.of("error").some((e) => e instanceof ForbiddenError), "the error event says it too");
  // Nothing of it was sent: the server has no such document either.
  assert.equal(await serverDoc("theirs-1", mint({ sub: "admin", read: ["*"] })), null);

  // Same connection, other documents work.
  const welcome = c.welcome;
  const mine = await c.open("mine-1");
  mine.change((d) => {
    d.ok = true;
  });
  await mine.flush();
  assert.equal(c.welcome, welcome, "no reconnect");
  assert.equal(c.status, "saved");
  // Asking again rejects again (nothing cached as open).
  await assert.rejects(c.open("theirs-1"), ForbiddenError);
});

test("open() of an unknown document with read access only rejects with NotFoundError", async () => {
  const c = await env.clients.online(env.bridge.wsUrl, { token: mint({ sub: "looker", read: ["nf-*"] }) });
  await assert.rejects(within(c.open("nf-missing"), undefined, "open()"), (e) => e instanceof NotFoundError && e.code === "not_found");
  assert.equal(c.docs.has("nf-missing"), false);
  assert.equal(c.status, "saved");
});

test("4401 without a token is fatal: UnauthorizedError, status failed, no reconnect", async () => {
  const proxy = await startProxy(env.bridge.wsUrl);
  try {
    const c = env.clients.make(proxy.url);
    const e = await nextEvent(c, "error");
    assert.ok(e instanceof UnauthorizedError, `UnauthorizedError, got ${e?.constructor?.name}`);
    assert.equal(e.code, "unauthorized");
    assert.equal(e.closeCode, 4401);
    await waitStatus(c, "failed");
    await assert.rejects(c.open("anything"), UnauthorizedError);
    const hellos = () => proxy.frames.filter((f) => f.dir === "c2s" && f.msg.t === "hello").length;
    await staysTrue(() => hellos() === 1, 600, "no second connection");
  } finally {
    await proxy.close();
  }
});

test("4401 with a static token that is refused (bad signature) is fatal at once", async () => {
  const c = env.clients.make(env.bridge.wsUrl, {
    token: mintToken("another-secret-another-secret-another", { sub: "mallory", write: ["*"] }),
  });
  const e = await nextEvent(c, "error");
  assert.ok(e instanceof UnauthorizedError);
  await waitStatus(c, "failed");
});

test("4401 with a token function: a fresh token is fetched once; refused again, fatal", async () => {
  let calls = 0;
  const c = env.clients.make(env.bridge.wsUrl, {
    // A different (and always refused) token each time.
    token: async () => mintToken("another-secret-another-secret-another", { sub: `try-${++calls}`, write: ["*"] }),
  });
  const errors = record(c, ["error"]);
  await waitStatus(c, "failed");
  assert.equal(calls, 2, "asked for the first token, then once for a fresh one");
  const fatal = errors.of("error").filter((e) => e instanceof UnauthorizedError);
  assert.equal(fatal.length, 1, "one error: the fatal one");
  assert.equal(fatal[0].closeCode, 4401);
  await staysTrue(() => calls === 2 && c.status === "failed", 500, "no more attempts");
});

test("a static token that expires during the connection: 4401, fatal", async () => {
  const c = await env.clients.online(env.bridge.wsUrl, { token: mint({ sub: "brief", write: ["exp-*"], ttl: 2 }) });
  // exp is rounded up to the second.
  assert.ok(c.welcome.expiresIn > 0 && c.welcome.expiresIn <= 3, `expires_in ${c.welcome.expiresIn}`);
  await c.open("exp-1");
  const e = await nextEvent(c, "error", { timeout: 8000 });
  assert.ok(e instanceof UnauthorizedError, `UnauthorizedError, got ${e?.constructor?.name}: ${e?.message}`);
  assert.equal(e.closeCode, 4401);
  await waitStatus(c, "failed");
});

test("a token function refreshes the token before it expires: the connection outlives it", async () => {
  const proxy = await startProxy(env.bridge.wsUrl);
  try {
    const TTL = 3;
    let calls = 0;
    const c = await env.clients.online(proxy.url, {
      token: () => {
        calls++;
        return mint({ sub: "refresher", write: ["refresh-*"], ttl: TTL });
      },
    });
    const welcomes = record(c, ["welcome", "error", "status"]);
    assert.ok(c.welcome.expiresIn > 0 && c.welcome.expiresIn <= TTL + 1, `expires_in ${c.welcome.expiresIn}`);
    const doc = await c.open("refresh-1");
    const started = Date.now();
    // Edit through two and a half token lifetimes.
    let i = 0;
    while (Date.now() - started < 2.5 * TTL * 1000) {
      doc.change((d) => {
        d.n = ++i;
      });
      await new Promise((r) => setTimeout(r, 250));
    }
    await within(doc.flush(), undefined, "flush after the first token expired");
    assert.deepEqual(await serverDoc("refresh-1", mint({ sub: "check", read: ["*"] })), { n: i });
    assert.deepEqual(welcomes.of("welcome"), [], "never reconnected");
    assert.deepEqual(welcomes.of("error"), [], "no errors");
    assert.ok(!welcomes.of("status").includes("connecting"), `status stayed up: ${welcomes.of("status")}`);
    const auths = proxy.frames.filter((f) => f.dir === "c2s" && f.msg.t === "auth");
    assert.ok(auths.length >= 2, `at least two refreshes in 7.5 s of 3 s tokens, got ${auths.length}`);
    assert.ok(calls >= 3, `hello + refreshes asked the function: ${calls}`);
    assert.equal(proxy.frames.filter((f) => f.dir === "c2s" && f.msg.t === "hello").length, 1);
    assert.ok(!proxy.frames.some((f) => f.dir === "close"), "nobody closed the connection");
  } finally {
    await proxy.close();
  }
});

/** GET /docs/{id} with a token (JSON), or null for 404. */
async function serverDoc(docId, bearer) {
  const res = await fetch(`${env.bridge.httpUrl}/docs/${encodeURIComponent(docId)}`, {
    headers: { authorization: `Bearer ${bearer}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`GET /docs/${docId}: ${res.status} ${await res.text()}`);
  return res.json();
}

test("a refreshed token that changes the access: readOnly follows (`access` event); one that drops it closes the doc", async () => {
  // Minted when asked for: write, then read, then access to other documents only.
  const grants = [
    { write: ["shift-*"], ttl: 2 },
    { read: ["shift-*"], ttl: 2 },
    { read: ["other-*"], ttl: 60 },
  ];
  let calls = 0;
  const c = await env.clients.online(env.bridge.wsUrl, {
    token: () => mint({ sub: "shifty", ...grants[Math.min(calls++, grants.length - 1)] }),
  });
  const errors = record(c, ["error", "welcome"]);
  const doc = await c.open("shift-1");
  assert.equal(doc.readOnly, false);
  doc.change((d) => {
    d.v = 1;
  });
  await doc.flush();

  // First refresh (~1.6 s): read-only from now on, on the same connection.
  assert.equal(await nextEvent(doc, "access", { timeout: 8000 }), "read");
  assert.equal(doc.readOnly, true);
  assert.throws(() => doc.change((d) => void (d.v = 2)), ReadOnlyError);
  assert.equal(doc.value.v, 1);

  // Second refresh: no access at all: the server closes the document, so does the client.
  const refused = nextEvent(doc, "error", { timeout: 8000 });
  const closed = nextEvent(doc, "closed", { timeout: 8000 });
  const e = await refused;
  assert.ok(e instanceof ForbiddenError, `ForbiddenError, got ${e?.constructor?.name}`);
  await closed;
  assert.equal(c.docs.has("shift-1"), false);
  assert.deepEqual(errors.of("welcome"), [], "all on one connection");
  assert.equal(calls, 3, "hello, then two refreshes");
  assert.equal(c.status, "saved");
  await assert.rejects(c.open("shift-1"), ForbiddenError);
});
