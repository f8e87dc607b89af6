// Bounded waiting and client bookkeeping for the Node client tests.
// Every wait here has a deadline and fails with a message saying what it
// waited for; no test sleeps and then hopes.

import { after, afterEach, before } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { WebSocket } from "ws";
import { BridgeClient } from "../dist/client.js";
import { startBridge } from "./bridge.mjs";

export { Automerge, BridgeClient, BridgeError, MemoryStore } from "../dist/client.js";

/** Default deadline for one wait; generous, because CI machines are busy. */
export const WAIT = 10_000;

/**
 * Poll `predicate` (sync or async) every `interval` ms until it returns a
 * truthy value, and return that value. Fails after `timeoutMs` with `what`
 * and the predicate's last result or exception.
 */
export async function waitFor(predicate, timeoutMs = WAIT, what = predicate.toString(), interval = 10) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? `${last.name}: ${last.message}` : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Wait until `get()` deep-equals `expected`; the failure shows the last value seen. */
export async function waitEqual(get, expected, what = "value", timeoutMs = WAIT) {
  let last;
  try {
    await waitFor(async () => isDeepStrictEqual((last = await get()), expected), timeoutMs, what);
  } catch (e) {
    throw new Error(`${e.message}\n  expected: ${JSON.stringify(expected)}\n  last:     ${JSON.stringify(last)}`);
  }
}

/**
 * Assert that `predicate` holds for the whole of `ms` (checked every
 * `interval` ms). This is the one place a test spends fixed time: proving
 * that something does *not* happen needs a window.
 */
export async function staysTrue(predicate, ms, what = predicate.toString(), interval = 10) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!(await predicate())) throw new Error(`${what} stopped holding`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
export function within(promise, ms = WAIT, what = "promise") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next `event` from an Emitter (BridgeClient, BridgeDoc) for which `filter` holds. */
export function nextEvent(emitter, event, { filter = () => true, timeout = WAIT } = {}) {
  let off;
  const p = new Promise((resolve) => {
    off = emitter.on(event, (arg) => {
      if (!filter(arg)) return;
      off();
      resolve(arg);
    });
  });
  return within(p, timeout, `event "${event}"`).finally(() => off());
}

/** Record every event of the given names: `rec.events` is [[name, arg], ...]. */
export function record(emitter, names) {
  const events = [];
  const offs = names.map((name) => emitter.on(name, (arg) => events.push([name, arg])));
  return {
    events,
    of: (name) => events.filter(([n]) => n === name).map(([, a]) => a),
    stop: () => offs.forEach((off) => off()),
  };
}

/** Wait until `client.status` is one of `statuses`. */
export function waitStatus(client, statuses, timeout = WAIT) {
  const want = [].concat(statuses);
  return waitFor(() => want.includes(client.status), timeout, `client status in ${want} (is ${client.status})`);
}

/** Track a promise's outcome without awaiting it. */
export function track(promise) {
  const t = { settled: false, resolved: false, rejected: false, value: undefined, error: undefined, promise };
  promise.then(
    (v) => Object.assign(t, { settled: true, resolved: true, value: v }),
    (e) => Object.assign(t, { settled: true, rejected: true, error: e }),
  );
  return t;
}

/** Options every test client gets: the `ws` WebSocket, no local storage, quick reconnects. */
export const CLIENT_DEFAULTS = {
  WebSocket,
  storage: false,
  reconnect: { baseDelay: 50, maxDelay: 400 },
};

/**
 * Creates BridgeClients and closes whatever is left of them at the end
 * (`await clients.closeAll()` in after/afterEach), bounded, ignoring errors.
 */
export class Clients {
  #all = new Set();

  make(url, options = {}) {
    const client = new BridgeClient(url, { ...CLIENT_DEFAULTS, ...options });
    this.#all.add(client);
    return client;
  }

  /** A client that is online (welcomed). */
  async online(url, options = {}) {
    const client = this.make(url, options);
    await waitStatus(client, ["saved", "saving"]);
    return client;
  }

  /** Close every client made here; `timeout` bounds each one's final flush. */
  async closeAll(timeout = 1000) {
    const all = [...this.#all];
    this.#all.clear();
    await Promise.all(all.map((c) => c.close({ timeout }).catch(() => {})));
  }
}

/** Plain JSON copy of an Automerge document (Text becomes a string), as GET /docs/{id} returns it. */
export function plain(value) {
  return JSON.parse(JSON.stringify(value));
}

/**
 * One real bridge for the test file and a Clients tracker closed after each
 * test: `const env = useBridge();` then `env.bridge`, `env.clients`.
 */
export function useBridge(options) {
  const env = { bridge: undefined, clients: new Clients() };
  before(async () => {
    env.bridge = await startBridge(options);
  });
  afterEach(() => env.clients.closeAll());
  after(() => env.bridge?.dispose());
  return env;
}

// ------------------------------------------------------------ tokens

import { createHmac } from "node:crypto"; // (imports are hoisted: this one sits with the code that uses it)

/**
 * A bridge token (HS256 JWT) minted with node:crypto alone, the same claims
 * as Python's `bridge.tokens.mint`: `sub`, `iat`, `exp` (now + `ttl` seconds,
 * rounded up; `ttl: null` for none), `docs` ({pattern: "read" | "write"},
 * write winning), and `admin` when true. The secret must be the server's
 * `--auth-secret` (at least 32 characters).
 *
 *   const token = mintToken(SECRET, { sub: "alice", write: ["invoice-*"], read: ["catalog"], ttl: 3600 });
 */
export function mintToken(secret, { sub, read = [], write = [], ttl = 3600, admin = false, now = Date.now() / 1000 } = {}) {
  const b64url = (data) => Buffer.from(data).toString("base64url");
  const docs = {};
  for (const pattern of read) docs[pattern] = "read";
  for (const pattern of write) docs[pattern] = "write";
  const claims = { sub, iat: Math.floor(now), docs };
  if (ttl !== null && ttl !== undefined) claims.exp = Math.ceil(now + ttl);
  if (admin) claims.admin = true;
  const signingInput = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", secret).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}
