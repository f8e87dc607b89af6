// BridgeClient: one WebSocket connection to an automerge-bridge server
// (wire protocol v1), reconnecting with backoff, carrying any number of open
// documents, flush requests and ephemeral messages.

import { decode as decodeMsgpack, encode as encodeMsgpack } from "@msgpack/msgpack";
import { Automerge } from "./automerge.js";
import { installPageHooks, sendBeacon, type PageHooks } from "./browser.js";
import { BridgeDoc, type DocHost } from "./doc.js";
import { Emitter } from "./emitter.js";
import { BridgeError } from "./errors.js";
import { LocalCopy } from "./local-copy.js";
import { defaultStore, type UnsavedStore } from "./persistence.js";
import {
  PROTOCOL_VERSION,
  ProtocolError,
  assertDocId,
  decodeServerMessage,
  encodeClientMessage,
  type ClientMessage,
  type ErrorMsg,
  type FlushedMsg,
  type HelloMsg,
  type HexHeads,
  type ServerMessage,
  type ServerEphMsg,
  type WelcomeMsg,
} from "./protocol.js";
import { OPEN, defaultWebSocket, frameBytes, type WebSocketConstructor, type WebSocketLike } from "./transport.js";

export type ClientStatus = "connecting" | "offline" | "saving" | "saved";

export interface BridgeClientOptions {
  /** Sent in `hello`; also appended as `?token=` to the sendBeacon URL. */
  token?: string;
  /** Our peer id in `hello` (default: random). */
  peerId?: string;
  /** Capabilities announced in `hello` (default: none). */
  caps?: string[];
  /** Prompt before the page unloads while anything is unsaved (browsers). */
  warnOnUnsaved?: boolean;
  /** Where unsaved edits are kept: default IndexedDB when present; `false` for none. */
  storage?: UnsavedStore | false;
  /** WebSocket constructor; required in Node 20 (e.g. the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Base URL for HTTP routes (sendBeacon); default derived from the sync URL. */
  httpBase?: string;
  /** Send unsaved changes with navigator.sendBeacon on pagehide (default true). */
  beacon?: boolean;
  /** Max ms `open()` waits for the initial sync before resolving with local state (default 10000). */
  openTimeout?: number;
  /** Max ms from socket open to `welcome` before giving up on the socket (default 10000). */
  handshakeTimeout?: number;
  /** Max ms `close()` waits for the final flush (default 10000). */
  closeTimeout?: number;
  /** Ms after the last local change before asking the server to confirm durability (default 1000); false: never. */
  autoFlushDelay?: number | false;
  /** Reconnect backoff: delay doubles per failed attempt from baseDelay to maxDelay, with jitter. */
  reconnect?: { baseDelay?: number; maxDelay?: number };
}

export interface EphemeralEvent {
  doc: string;
  /** The sending peer. */
  from: string;
  /** The raw payload. */
  data: Uint8Array;
  /** The payload decoded as MessagePack (what `ephemeral()` sends for non-bytes), or undefined. */
  value: unknown;
}

export interface WelcomeInfo {
  peer: string;
  session: string;
  caps: string[];
  limits: Record<string, unknown>;
}

export interface ClientEvents {
  status: ClientStatus;
  error: BridgeError;
  ephemeral: EphemeralEvent;
  welcome: WelcomeInfo;
}

interface PendingFlush {
  docs: Record<string, HexHeads>;
  internal: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

type Connection = "connecting" | "online" | "offline";

const DEFAULTS = {
  openTimeout: 10_000,
  handshakeTimeout: 10_000,
  closeTimeout: 10_000,
  autoFlushDelay: 1_000,
  baseDelay: 250,
  maxDelay: 15_000,
};

export class BridgeClient extends Emitter<ClientEvents> {
  /** The sync WebSocket URL. */
  readonly url: string;
  /** Base URL of the server's HTTP routes. */
  readonly httpBase: string;
  /** Our peer id (the server's answer in `welcome` once connected). */
  peerId: string;
  /** What the server said in its latest `welcome`. */
  welcome: WelcomeInfo | null = null;

  readonly #opts: BridgeClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #store: UnsavedStore | null;
  readonly #owner = randomId();
  readonly #scope: string;
  readonly #host: DocHost;
  readonly #hooks: PageHooks;

  #ws: WebSocketLike | null = null;
  #conn: Connection = "connecting";
  #status: ClientStatus = "connecting";
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #socketGone: (() => void)[] = [];

  #docs = new Map<string, BridgeDoc<any>>();
  #opening = new Map<string, Promise<BridgeDoc<any>>>();
  #closingDocs = new Map<string, Promise<void>>();
  #flushes = new Map<number, PendingFlush>();
  #nextFlushId = 1;

  #closing: Promise<void> | null = null;
  #closed = false;
  #fatal: BridgeError | null = null;

  constructor(url: string, options: BridgeClientOptions = {}) {
    super();
    const parsed = new URL(url);
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(`BridgeClient needs a ws: or wss: URL, got ${url}`);
    }
    const WS = options.WebSocket ?? defaultWebSocket();
    if (!WS) throw new TypeError("no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package's)");
    this.url = url;
    this.#opts = options;
    this.#WebSocket = WS;
    this.peerId = options.peerId ?? `peer-${randomId()}`;
    this.httpBase = (options.httpBase ?? httpBaseOf(parsed)).replace(/\/+$/, "");
    this.#scope = `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
    this.#store = options.storage === false ? null : (options.storage ?? defaultStore());
    this.#host = this.#makeHost();
    this.#hooks = installPageHooks(
      { pagehide: () => this.#onPageHide(), online: () => this.#reconnectNow() },
      options.warnOnUnsaved ?? false,
    );
    this.#connect();
  }

  /** "connecting" | "offline" | "saving" | "saved". */
  get status(): ClientStatus {
    return this.#status;
  }

  /** True while any open document has changes not yet durable on the server. */
  get hasUnsavedChanges(): boolean {
    for (const d of this.#docs.values()) if (d.unsaved) return true;
    return false;
  }

  /** Open documents by id. */
  get docs(): ReadonlyMap<string, BridgeDoc<any>> {
    return this.#docs;
  }

  /**
   * Open a document: merge any unsaved local state kept from earlier, start
   * syncing, and resolve once the initial sync finished (or at once when
   * offline, or after `openTimeout`, with what is local). Opening an open
   * document returns the same object.
   */
  open<T = any>(docId: string): Promise<BridgeDoc<T>> {
    assertDocId(docId);
    if (this.#closing) return Promise.reject(new BridgeError("closed", "client is closed"));
    const existing = this.#opening.get(docId);
    if (existing) return existing as Promise<BridgeDoc<T>>;
    const p = this.#open<T>(docId);
    this.#opening.set(docId, p);
    p.catch(() => {
      if (this.#opening.get(docId) === p) this.#opening.delete(docId);
    });
    return p;
  }

  /**
   * Send an ephemeral (never stored) message to the other peers on a
   * document. Bytes are sent as they are; anything else as MessagePack.
   * Returns false (and sends nothing) while not connected.
   */
  ephemeral(docId: string, data: Uint8Array | unknown): boolean {
    assertDocId(docId);
    if (this.#conn !== "online") return false;
    const bytes = data instanceof Uint8Array ? data : encodeMsgpack(data);
    this.#send({ t: "eph", doc: docId, data: bytes });
    return true;
  }

  /** Resolve once every open document's current heads are durable on the server. */
  async flush(): Promise<void> {
    const docs: Record<string, HexHeads> = {};
    for (const [id, d] of this.#docs) {
      const heads = d.heads;
      if (heads.length) docs[id] = heads;
    }
    if (Object.keys(docs).length) await this.#requestFlush(docs, false);
  }

  /**
   * Flush everything (bounded by `timeout`, default `closeTimeout`), send
   * `bye` and close the socket. Rejects after closing if the final flush
   * failed; unsaved state then stays in local storage.
   */
  close(opts: { timeout?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(opts.timeout ?? this.#opts.closeTimeout ?? DEFAULTS.closeTimeout);
    return this.#closing;
  }

  // ------------------------------------------------------------ documents

  async #open<T>(id: string): Promise<BridgeDoc<T>> {
    await this.#closingDocs.get(id);
    let value = Automerge.init<T>();
    let restored = false;
    const local = this.#store
      ? new LocalCopy(this.#store, this.#scope, id, this.#owner, (e) => this.#storageError(e, id))
      : null;
    if (local) {
      try {
        for (const chunk of await local.restore()) {
          try {
            value = Automerge.loadIncremental(value, chunk);
            restored = true;
          } catch (e) {
            this.#storageError(e, id);
          }
        }
      } catch (e) {
        this.#storageError(e, id);
      }
    }
    if (this.#closing) throw new BridgeError("closed", "client is closed");
    const doc = new BridgeDoc<T>(this.#host, id, value, local, restored);
    this.#docs.set(id, doc);
    if (this.#conn === "online") doc._attach();
    this.#updateStatus();
    try {
      await this.#waitForOpen(doc);
    } catch (e) {
      this.#release(doc, this.#conn === "online");
      throw e;
    }
    return doc;
  }

  #waitForOpen(doc: BridgeDoc<any>): Promise<void> {
    if (doc.synced || this.#conn === "offline") return Promise.resolve();
    const timeout = this.#opts.openTimeout ?? DEFAULTS.openTimeout;
    return new Promise<void>((resolve, reject) => {
      const finish = (err?: unknown): void => {
        clearTimeout(timer);
        offStatus();
        const fatal = err ?? this.#fatal;
        if (fatal) reject(fatal);
        else resolve();
      };
      const timer = setTimeout(() => finish(), timeout);
      const offStatus = this.on("status", (s) => {
        if (s === "offline") finish();
      });
      doc.whenSynced().then(() => finish(), finish);
    });
  }

  #closeDoc(doc: BridgeDoc<any>): Promise<void> {
    const pending = this.#closingDocs.get(doc.id);
    if (pending) return pending;
    if (this.#docs.get(doc.id) !== doc) return Promise.resolve();
    this.#opening.delete(doc.id);
    const p = (async () => {
      const heads = doc.heads;
      if (doc.unsaved && this.#conn === "online" && heads.length) {
        const timeout = this.#opts.closeTimeout ?? DEFAULTS.closeTimeout;
        await withTimeout(this.#requestFlush({ [doc.id]: heads }, true), timeout).catch(() => {});
      }
      this.#release(doc, true);
    })().finally(() => this.#closingDocs.delete(doc.id));
    this.#closingDocs.set(doc.id, p);
    return p;
  }

  #release(doc: BridgeDoc<any>, sendClose: boolean): void {
    if (this.#docs.get(doc.id) === doc) {
      this.#docs.delete(doc.id);
      if (sendClose && this.#conn === "online") this.#send({ t: "close", doc: doc.id });
    }
    doc._release();
    this.#updateStatus();
  }

  #makeHost(): DocHost {
    const self = this;
    return {
      get online() {
        return self.#conn === "online";
      },
      get autoFlushDelay() {
        const d = self.#opts.autoFlushDelay;
        return d === undefined ? DEFAULTS.autoFlushDelay : d;
      },
      send: (msg) => this.#send(msg),
      requestFlush: (docs, internal) => this.#requestFlush(docs, internal),
      ephemeral: (doc, data) => this.ephemeral(doc, data),
      closeDoc: (doc) => this.#closeDoc(doc),
      docStateChanged: () => this.#updateStatus(),
    };
  }

  // ------------------------------------------------------------ flush

  #requestFlush(docs: Record<string, HexHeads>, internal: boolean): Promise<void> {
    if (this.#fatal) return Promise.reject(this.#fatal);
    if (this.#closed) return Promise.reject(new BridgeError("closed", "client is closed"));
    const id = this.#nextFlushId++;
    return new Promise<void>((resolve, reject) => {
      this.#flushes.set(id, { docs, internal, resolve, reject });
      if (this.#conn === "online") this.#send({ t: "flush", id, docs });
    });
  }

  #onFlushed(msg: FlushedMsg): void {
    const pending = this.#flushes.get(msg.id);
    if (!pending) return;
    this.#flushes.delete(msg.id);
    for (const [id, heads] of Object.entries(pending.docs)) this.#docs.get(id)?._flushed(heads);
    for (const [id, heads] of Object.entries(msg.docs)) this.#docs.get(id)?._flushed(heads);
    pending.resolve();
  }

  #failFlushes(err: BridgeError): void {
    const all = [...this.#flushes.values()];
    this.#flushes.clear();
    for (const f of all) f.reject(err);
  }

  // ------------------------------------------------------------ connection

  #connect(): void {
    this.#reconnectTimer = undefined;
    if (this.#closed || this.#fatal) return;
    this.#setConnection("connecting");
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.url);
    } catch (e) {
      this.#report(new BridgeError("connect", `cannot open WebSocket: ${String(e)}`, { cause: e }));
      this.#setConnection("offline");
      this.#scheduleReconnect(false);
      return;
    }
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev: { data: unknown }) => this.#onFrame(ws, ev.data);
    ws.onclose = (ev: { code?: number; reason?: string }) => this.#onClose(ws, ev.code ?? 1006, ev.reason ?? "");
    ws.onerror = () => {}; // a close event follows
  }

  #onOpen(ws: WebSocketLike): void {
    if (ws !== this.#ws) return;
    const hello: HelloMsg = {
      t: "hello",
      v: [PROTOCOL_VERSION],
      peer: this.peerId,
      caps: this.#opts.caps ?? [],
    };
    if (this.#opts.token !== undefined) hello.token = this.#opts.token;
    this.#sendOn(ws, hello);
    const timeout = this.#opts.handshakeTimeout ?? DEFAULTS.handshakeTimeout;
    this.#handshakeTimer = setTimeout(() => this.#abandon(ws, 4408, "handshake timeout"), timeout);
  }

  #onWelcome(ws: WebSocketLike, msg: WelcomeMsg): void {
    clearTimeout(this.#handshakeTimer);
    if (msg.v !== PROTOCOL_VERSION) {
      this.#fatal = new BridgeError("version", `server speaks protocol v${msg.v}, this client v${PROTOCOL_VERSION}`);
      this.#report(this.#fatal);
      this.#failFlushes(this.#fatal);
      this.#abandon(ws, 1000, "unsupported protocol version");
      return;
    }
    this.#attempt = 0;
    this.welcome = { peer: msg.peer, session: msg.session, caps: msg.caps, limits: msg.limits };
    if (msg.peer) this.peerId = msg.peer;
    this.#conn = "online";
    for (const doc of this.#docs.values()) doc._attach();
    for (const [id, f] of this.#flushes) this.#send({ t: "flush", id, docs: f.docs });
    this.#updateStatus();
    this.emit("welcome", this.welcome);
  }

  #onFrame(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.#ws) return;
    const bytes = frameBytes(data);
    if (!bytes) {
      this.#report(new BridgeError("protocol", "server sent a non-binary frame"));
      return;
    }
    let msg: ServerMessage | null;
    try {
      msg = decodeServerMessage(bytes);
    } catch (e) {
      const detail = e instanceof ProtocolError ? e.message : String(e);
      this.#report(new BridgeError("protocol", `bad frame from server: ${detail}`, { cause: e }));
      return;
    }
    if (!msg) return; // a message type from a newer protocol: ignore
    if (msg.t === "welcome") return this.#onWelcome(ws, msg);
    if (msg.t === "error") return this.#onServerError(msg);
    if (this.#conn !== "online") {
      this.#report(new BridgeError("protocol", `server sent ${msg.t} before welcome`));
      return;
    }
    switch (msg.t) {
      case "sync":
        this.#docs.get(msg.doc)?._receiveSync(msg.data);
        return;
      case "saved":
        this.#docs.get(msg.doc)?._saved(msg.heads);
        return;
      case "flushed":
        this.#onFlushed(msg);
        return;
      case "eph":
        this.#onEphemeral(msg);
        return;
    }
  }

  #onServerError(msg: ErrorMsg): void {
    const extra: { doc?: string; id?: number } = {};
    if (msg.doc !== undefined) extra.doc = msg.doc;
    if (msg.id !== undefined) extra.id = msg.id;
    const err = new BridgeError(msg.code, msg.msg, extra);
    let internal = false;
    if (msg.id !== undefined) {
      const pending = this.#flushes.get(msg.id);
      if (pending) {
        this.#flushes.delete(msg.id);
        internal = pending.internal;
        pending.reject(err);
      }
    } else if (msg.doc !== undefined) {
      this.#docs.get(msg.doc)?._error(err);
    }
    if (!internal) this.emit("error", err);
  }

  #onEphemeral(msg: ServerEphMsg): void {
    let value: unknown;
    try {
      value = decodeMsgpack(msg.data);
    } catch {
      value = undefined;
    }
    this.emit("ephemeral", { doc: msg.doc, from: msg.from, data: msg.data, value });
  }

  #onClose(ws: WebSocketLike, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#handshakeTimer);
    for (const doc of this.#docs.values()) doc._detach();
    const waiters = this.#socketGone;
    this.#socketGone = [];
    for (const w of waiters) w();
    if (this.#closed || this.#fatal) {
      this.#setConnection("offline");
      return;
    }
    if (code === 4401 || code === 4403) {
      const what = code === 4401 ? "unauthorized" : "forbidden";
      this.#fatal = new BridgeError(what, reason || `server closed the connection: ${what}`, { closeCode: code });
      this.#failFlushes(this.#fatal);
      this.#setConnection("offline");
      this.#report(this.#fatal);
      return;
    }
    if (code === 4400 || code === 1009 || code === 1011) {
      const what = code === 4400 ? "protocol" : code === 1009 ? "too_big" : "server_error";
      this.#report(new BridgeError(what, reason || `server closed the connection (${code})`, { closeCode: code }));
    }
    this.#setConnection("offline");
    // 1001 (server going away) and 4409 (too slow, resync): come back at once,
    // with jitter so a restarting server is not hit by everyone together.
    this.#scheduleReconnect(code === 1001 || code === 4409);
  }

  /** Drop a socket now (without waiting for its close event). */
  #abandon(ws: WebSocketLike, code: number, reason: string): void {
    try {
      ws.close(code >= 3000 || code === 1000 ? code : 1000, reason);
    } catch {
      // already closed
    }
    this.#onClose(ws, code, reason);
  }

  #scheduleReconnect(quick: boolean): void {
    clearTimeout(this.#reconnectTimer);
    const base = this.#opts.reconnect?.baseDelay ?? DEFAULTS.baseDelay;
    const max = this.#opts.reconnect?.maxDelay ?? DEFAULTS.maxDelay;
    const delay = quick && this.#attempt === 0 ? Math.random() * base : backoff(this.#attempt, base, max);
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  #reconnectNow(): void {
    if (this.#reconnectTimer === undefined || this.#closed || this.#fatal) return;
    clearTimeout(this.#reconnectTimer);
    this.#connect();
  }

  #send(msg: ClientMessage): void {
    if (this.#ws && this.#conn === "online") this.#sendOn(this.#ws, msg);
  }

  #sendOn(ws: WebSocketLike, msg: ClientMessage): void {
    if (ws.readyState !== OPEN) return;
    try {
      ws.send(encodeClientMessage(msg));
    } catch (e) {
      this.#report(new BridgeError("send", `cannot send ${msg.t}: ${String(e)}`, { cause: e }));
    }
  }

  // ------------------------------------------------------------ status

  #setConnection(conn: Connection): void {
    this.#conn = conn;
    this.#updateStatus();
  }

  #updateStatus(): void {
    const unsaved = this.hasUnsavedChanges;
    this.#hooks.setUnsaved(unsaved);
    const status: ClientStatus = this.#conn !== "online" ? this.#conn : unsaved ? "saving" : "saved";
    if (status === this.#status) return;
    this.#status = status;
    this.emit("status", status);
  }

  #report(err: BridgeError): void {
    this.emit("error", err);
  }

  #storageError(e: unknown, doc: string): void {
    this.#report(new BridgeError("storage", `local storage failed for ${doc}: ${String(e)}`, { doc, cause: e }));
  }

  // ------------------------------------------------------------ leaving

  #onPageHide(): void {
    if (this.#opts.beacon === false) return;
    for (const doc of this.#docs.values()) {
      const payload = doc._beaconPayload();
      if (!payload) continue;
      let url = `${this.httpBase}/docs/${encodeURIComponent(doc.id)}/changes`;
      if (this.#opts.token !== undefined) url += `?token=${encodeURIComponent(this.#opts.token)}`;
      sendBeacon(url, payload);
      doc._local?.update();
    }
  }

  async #close(timeout: number): Promise<void> {
    let failure: unknown = null;
    if (!this.#fatal) {
      try {
        await Promise.all([...this.#closingDocs.values()]);
        await withTimeout(this.flush(), timeout);
      } catch (e) {
        failure = e;
      }
    }
    const ws = this.#ws;
    const online = this.#conn === "online";
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#hooks.remove();
    const docs = [...this.#docs.values()];
    for (const doc of docs) this.#release(doc, false);
    this.#opening.clear();
    this.#failFlushes(new BridgeError("closed", "client is closed"));
    if (ws) {
      const gone = new Promise<void>((resolve) => this.#socketGone.push(resolve));
      if (online) this.#sendOn(ws, { t: "bye" });
      // The server answers bye by closing with 1000; don't wait forever.
      const timer = setTimeout(() => this.#abandon(ws, 1000, "bye"), online ? 2000 : 0);
      await gone;
      clearTimeout(timer);
    }
    this.#setConnection("offline");
    await Promise.all(docs.map((d) => d._local?.idle()));
    if (failure) throw failure;
  }
}

// ------------------------------------------------------------ helpers

function httpBaseOf(url: URL): string {
  const scheme = url.protocol === "wss:" ? "https:" : "http:";
  const path = url.pathname.replace(/\/sync\/?$/, "");
  return `${scheme}//${url.host}${path}`;
}

/** Exponential backoff with "equal jitter": half fixed, half random. */
function backoff(attempt: number, base: number, max: number): number {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return cap / 2 + (Math.random() * cap) / 2;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  if (!Number.isFinite(ms)) return p;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BridgeError("timeout", `timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

function randomId(): string {
  const bytes = new Uint8Array(8);
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
