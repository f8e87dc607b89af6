// Shared by the Node drivers: output, statistics, clients for both servers.
//
// BridgePeer speaks the bridge's wire protocol v1 directly (MessagePack frames
// over `ws`, @automerge/automerge sync messages): no project JS involved.
// repoClient() is a stock @automerge/automerge-repo Repo with a WebSocket
// client adapter and no storage, what an app would use against the reference.
import * as Automerge from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";

export { Automerge };

export const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
export const now = () => performance.now();
/** Milliseconds since the epoch, sub-ms resolution: comparable across driver processes on one machine. */
export const absNow = () => performance.timeOrigin + performance.now();

/**
 * Tell the harness this driver is set up, then wait for its "go" line: with
 * several driver processes, every one starts measuring at the same moment.
 */
export function ready(extra = {}) {
  out({ event: "ready", ...extra });
  return new Promise((resolve) => {
    process.stdin.once("data", () => {
      process.stdin.pause();
      resolve();
    });
  });
}
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Exit once everything written to stdout has been handed to the pipe (a large result line must not be cut). */
export function exit(code = 0) {
  process.stdout.write("", () => process.exit(code));
}

/** Parse `--name value` pairs into an object (values stay strings). */
export function options(argv = process.argv.slice(2)) {
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) opts[argv[i].replace(/^--/, "")] = argv[i + 1];
  return opts;
}

/** Exit with an error line if the driver outlives its bound. */
export function deadline(seconds) {
  setTimeout(() => {
    out({ event: "error", error: `driver timed out after ${seconds}s` });
    process.exit(4);
  }, seconds * 1000).unref();
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: timeout`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run `fn(item)` over `items` with at most `limit` in flight. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Bytes that crossed one client's TCP socket (WebSocket frames + handshake). */
export const socketBytes = (ws) => {
  const s = ws?._socket;
  return s ? { read: s.bytesRead, written: s.bytesWritten } : { read: 0, written: 0 };
};

/** CPU of this process, as % of one core, since `start` (process.cpuUsage()). */
export function cpuPercent(start, startedAt) {
  const used = process.cpuUsage(start);
  return (100 * (used.user + used.system)) / 1000 / (now() - startedAt);
}

// --- the bridge, raw protocol v1 --------------------------------------------

export class BridgePeer {
  constructor(url, peer) {
    this.url = url;
    this.peer = peer;
    this.docs = new Map(); // docId -> { doc, sync, saved, onChange }
    this.flushes = new Map(); // id -> resolve
    this.nextFlush = 1;
    this.bytesIn = 0; // payload bytes of frames, both ways
    this.bytesOut = 0;
    this.framesIn = {}; // frames received, by type
    this.applyMs = 0; // time spent applying sync messages and answering them
    this.applied = 0;
  }

  connect() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url, { perMessageDeflate: false });
      this.ws.binaryType = "nodebuffer";
      this.ws.on("open", () => this.send({ t: "hello", v: [1], peer: this.peer, caps: [] }));
      this.ws.on("error", reject);
      this.ws.on("close", (code) => this.onClose?.(code));
      this.ws.on("message", (raw) => {
        this.bytesIn += raw.length;
        const msg = decode(raw);
        this.framesIn[msg.t] = (this.framesIn[msg.t] ?? 0) + 1;
        if (msg.t === "welcome") resolve(this);
        else this.receive(msg);
      });
    });
  }

  send(msg) {
    const frame = encode(msg);
    this.bytesOut += frame.length;
    this.ws.send(frame);
  }

  /** Open a document; resolves once it holds the server's durable heads. */
  open(docId, onChange = null) {
    const entry = { doc: Automerge.init(), sync: Automerge.initSyncState(), saved: null, onChange, waiters: [] };
    this.docs.set(docId, entry);
    this.send({ t: "open", doc: docId });
    this.pump(docId);
    return new Promise((resolve) => {
      entry.waiters.push(() => {
        if (entry.saved === null) return false;
        const heads = new Set(Automerge.getHeads(entry.doc));
        if (!entry.saved.every((h) => heads.has(h))) return false;
        resolve(entry);
        return true;
      });
    });
  }

  change(docId, fn) {
    const entry = this.docs.get(docId);
    entry.doc = Automerge.change(entry.doc, fn);
    this.pump(docId);
    return entry.doc;
  }

  pump(docId) {
    const entry = this.docs.get(docId);
    for (;;) {
      const [sync, message] = Automerge.generateSyncMessage(entry.doc, entry.sync);
      entry.sync = sync;
      if (!message) break;
      this.send({ t: "sync", doc: docId, data: message });
    }
  }

  /** Resolves when the server says every current head of `docId` is durable. */
  flush(docId) {
    const id = this.nextFlush++;
    const heads = Automerge.getHeads(this.docs.get(docId).doc).map((h) => Buffer.from(h, "hex"));
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      this.send({ t: "flush", id, docs: { [docId]: heads } });
    });
  }

  receive(msg) {
    const entry = msg.doc !== undefined ? this.docs.get(msg.doc) : null;
    if (msg.t === "sync" && entry) {
      const before = entry.doc;
      const t0 = performance.now();
      [entry.doc, entry.sync] = Automerge.receiveSyncMessage(entry.doc, entry.sync, msg.data);
      this.pump(msg.doc);
      this.applyMs += performance.now() - t0;
      this.applied += 1;
      if (entry.doc !== before && entry.onChange) entry.onChange(entry.doc);
    } else if (msg.t === "saved" && entry) {
      entry.saved = msg.heads.map((h) => Buffer.from(h).toString("hex"));
    } else if (msg.t === "flushed") {
      this.flushes.get(msg.id)?.(msg.docs);
      this.flushes.delete(msg.id);
    } else if (msg.t === "error") {
      out({ event: "error", error: msg });
    }
    if (entry) entry.waiters = entry.waiters.filter((w) => !w());
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN) this.send({ t: "bye" });
    this.ws.close();
  }
}

// --- the reference: automerge-repo clients -----------------------------------

export async function repoClient(url, name) {
  // A long retry interval: the adapter opens a second socket when the first
  // has not opened within it, which a busy server would otherwise provoke.
  const adapter = new WebSocketClientAdapter(url, 30000);
  const repo = new Repo({ network: [adapter], peerId: `${name}-${process.pid}` });
  await withTimeout(adapter.whenReady(), 30000, `${name} connect`);
  await repo.networkSubsystem.whenReady();
  return { repo, adapter, close: () => closeRepo(repo, adapter) };
}

/** Shut a Repo down; a socket still connecting must not crash the process. */
export async function closeRepo(repo, adapter) {
  adapter.socket?.on?.("error", () => {});
  await repo.shutdown().catch(() => {});
}

/** Find a document (the server must have it, see waitOnServer). */
export const repoFind = (repo, docUrl) => withTimeout(repo.find(docUrl), 60000, `find ${docUrl}`);

/**
 * Wait until the server can hand out `docUrl`: a Repo that was told
 * "unavailable" keeps saying so, so each probe is a fresh client.
 */
export async function waitOnServer(url, docUrl, tries = 100) {
  for (let i = 0; ; i++) {
    const { repo, close } = await repoClient(url, `probe-${i}`);
    try {
      await repo.find(docUrl);
      return;
    } catch (err) {
      if (i >= tries) throw err;
      await sleep(50);
    } finally {
      await close();
    }
  }
}

export const hexHeads = (doc) => Automerge.getHeads(doc);

/** Wait until the server hands out every one of `docUrls` (fresh probe client per round). */
export async function waitAllOnServer(url, docUrls, rounds = 100) {
  let missing = docUrls;
  for (let i = 0; missing.length; i++) {
    if (i >= rounds) throw new Error(`${missing.length} documents never reached the server`);
    const { repo, close } = await repoClient(url, `probe-all-${i}`);
    const found = await Promise.allSettled(missing.map((u) => repo.find(u)));
    missing = missing.filter((_, k) => found[k].status !== "fulfilled");
    await close();
    if (missing.length) await sleep(100);
  }
}

// automerge-repo can reject promises nobody holds (e.g. a find whose answer
// arrives after its caller gave up): report them, don't die.
process.on("unhandledRejection", (err) => out({ event: "error", error: `unhandled: ${err?.message ?? err}` }));
