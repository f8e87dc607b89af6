// A WebSocket URL the server answers with an HTTP error (wrong path: the
// bridge's server says 403 or 404 to the upgrade) is fatal: an `error`
// event, open() and flush() rejected, status "failed", within a second or
// two, and no endless retrying. With the `ws` package the client sees the
// HTTP status; a browser's WebSocket hides it, so there the client probes
// the URL over HTTP (simulated here by a WebSocket that hides the error).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";
import { startBridge, freePort } from "./bridge.mjs";
import { Clients, nextEvent, record, staysTrue, waitStatus, within } from "./helpers.mjs";

let bridge;
const clients = new Clients();
before(async () => {
  bridge = await startBridge();
});
after(async () => {
  await clients.closeAll(200);
  await bridge?.dispose();
});

const FAST = { reconnect: { baseDelay: 20, maxDelay: 100 }, autoFlushDelay: false };

/**
 * A WebSocket that behaves like a browser's: an error event carries no
 * message, so the HTTP status of a failed upgrade is unknown. `failFirst`
 * sockets go to a port nobody listens on (fail before open, like a proxy
 * hiccup), whatever the URL.
 */
function browserLike({ failFirst = 0, deadUrl } = {}) {
  let made = 0;
  return class BrowserLikeWebSocket {
    #ws;
    constructor(url) {
      made++;
      this.#ws = new WebSocket(made <= failFirst ? deadUrl : url);
      this.#ws.on("error", () => {}); // handled through onerror below
    }
    get binaryType() {
      return this.#ws.binaryType;
    }
    set binaryType(v) {
      this.#ws.binaryType = v;
    }
    get readyState() {
      return this.#ws.readyState;
    }
    set onopen(h) {
      this.#ws.onopen = h;
    }
    set onmessage(h) {
      this.#ws.onmessage = h;
    }
    set onclose(h) {
      this.#ws.onclose = h;
    }
    set onerror(h) {
      this.#ws.onerror = () => h({ type: "error" });
    }
    send(data) {
      this.#ws.send(data);
    }
    close(code, reason) {
      this.#ws.close(code, reason);
    }
    static get made() {
      return made;
    }
  };
}

async function assertFatal(c, status) {
  const started = Date.now();
  const errors = record(c, ["error"]);
  const opening = c.open("never");
  const e = await nextEvent(c, "error", { timeout: 3000 });
  assert.equal(e.name, "BridgeError");
  assert.equal(e.code, "http_error");
  if (status !== undefined) assert.equal(e.httpStatus, status);
  assert.match(e.message, /HTTP \d{3}/);
  await assert.rejects(within(opening, 3000, "open() settles"), { code: "http_error" });
  await assert.rejects(within(c.flush(), 1000, "flush() settles"), { code: "http_error" });
  assert.ok(Date.now() - started < 2500, `fatal within 2.5 s (took ${Date.now() - started} ms)`);
  assert.equal(c.status, "failed");
  assert.equal(errors.of("error").length, 1, "one error event");
  return e;
}

test("ws package: a wrong path is fatal with the HTTP status", async () => {
  const url = bridge.wsUrl.replace(/\/sync$/, "/wrong/sync");
  const c = clients.make(url, FAST);
  const e = await assertFatal(c);
  assert.ok(e.httpStatus >= 400 && e.httpStatus < 500, `a 4xx: ${e.httpStatus}`);
  await within(c.close(), 2000, "close()");
  assert.equal(c.status, "closed");
});

test("ws package: a 404 from a plain HTTP server is fatal; a 503 is retried", async () => {
  let answer = 404;
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    res.writeHead(answer).end("no");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const url = `ws://127.0.0.1:${server.address().port}/sync`;
    await assertFatal(clients.make(url, FAST), 404);
    answer = 503;
    hits = 0;
    const retrying = clients.make(url, FAST);
    const errors = record(retrying, ["error"]);
    await staysTrue(() => retrying.status !== "failed", 500, "a 503 is not fatal");
    assert.ok(hits >= 2, `retried (${hits} attempts)`);
    assert.deepEqual(errors.of("error"), []);
    await retrying.close({ timeout: 100 });
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test("browser-like WebSocket: a wrong path is found fatal by the HTTP probe", async () => {
  const url = bridge.wsUrl.replace(/\/sync$/, "/wrong/sync");
  const c = clients.make(url, { ...FAST, WebSocket: browserLike() });
  await assertFatal(c, 404);
});

test("browser-like WebSocket: failures before open at the right URL are retried (probe: /healthz answers)", async () => {
  const dead = `ws://127.0.0.1:${await freePort()}/sync`;
  const WS = browserLike({ failFirst: 2, deadUrl: dead });
  const c = clients.make(bridge.wsUrl, { ...FAST, WebSocket: WS });
  const errors = record(c, ["error"]);
  await waitStatus(c, "saved");
  assert.equal(WS.made, 3);
  assert.deepEqual(errors.of("error"), []);
  const doc = await c.open("probe-ok");
  doc.change((d) => {
    d.ok = true;
  });
  await within(doc.flush(), undefined, "flush");
});

test("browser-like WebSocket: a server that is down is retried, not fatal", async () => {
  const url = `ws://127.0.0.1:${await freePort()}/sync`;
  const c = clients.make(url, { ...FAST, WebSocket: browserLike() });
  const errors = record(c, ["error"]);
  await waitStatus(c, "offline");
  await staysTrue(() => c.status !== "failed", 500, "not fatal while the server is down");
  assert.deepEqual(errors.of("error"), []);
});

test("fetch: false turns the probe off", async () => {
  const url = bridge.wsUrl.replace(/\/sync$/, "/wrong/sync");
  const c = clients.make(url, { ...FAST, WebSocket: browserLike(), fetch: false });
  await waitStatus(c, "offline");
  await staysTrue(() => c.status !== "failed", 400, "no probe, no verdict");
});
