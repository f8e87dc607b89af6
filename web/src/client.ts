// BridgeClient: one WebSocket connection to an automerge-bridge server
// (wire protocol v1), reconnecting with backoff, carrying any number of open
// documents, flush requests and ephemeral messages.

import { decode as decodeMsgpack, encode as encodeMsgpack } from "@msgpack/msgpack";
import { Automerge } from "./automerge.js";
import { installPageHooks, sendBeacon, type PageHooks } from "./browser.js";
import { Connection, type ConnectionState } from "./connection.js";
import { BridgeDoc, type DocHost } from "./doc.js";
import { Emitter } from "./emitter.js";
import { BridgeError, ForbiddenError, NotFoundError, bridgeError } from "./errors.js";
import { PendingFlushes } from "./flushes.js";
import { LocalCopy } from "./local-copy.js";
import { defaultStore, type UnsavedStore } from "./persistence.js";
import {
  PROTOCOL_VERSION,
  assertDocId,
  type ClientMessage,
  type ErrorMsg,
  type OpenedMsg,
  type FlushedMsg,
  type HelloMsg,
  type HexHeads,
  type ServerMessage,
  type ServerEphMsg,
  type WelcomeMsg,
} from "./protocol.js";
import { defaultFetch, defaultWebSocket, probeUpgrade, type WebSocketConstructor } from "./transport.js";
import { httpBaseOf, randomId, withTimeout } from "./util.js";

/**
 * "connecting": no session yet (first connect or reconnecting);
 * "offline": disconnected, waiting to reconnect (edits are kept);
 * "saving": connected, some local change is not durable yet;
 * "saved": connected, everything local is durable on the server;
 * "failed": given up for good after a fatal error (see the `error` event);
 * "closed": `close()` was called.
 */
export type ClientStatus = "connecting" | "offline" | "saving" | "saved" | "failed" | "closed";

/** A token, or a function giving the current one (called for every `hello`, may be async). */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** Refresh a token this long before it expires, at most (or at 80% of its lifetime when that is later). */
const REFRESH_LEAD_MS = 30_000;
/** Never ask the token function again sooner than this after the last time (a function that keeps giving the same token). */
const MIN_REFRESH_MS = 1_000;

export interface BridgeClientOptions {
  /**
   * Sent in `hello`; also appended as `?token=` to the sendBeacon URL. A
   * function is asked again for every connection, and, when the server says
   * the token expires (`welcome.expires_in`), before it does (at the later of
   * 30 s before and 80% of its lifetime): the fresh token goes out in an
   * `auth` frame, the connection stays. After a 4401 refusal the client asks
   * the function once and reconnects if it gives a different token; if that
   * one is refused too, or with a plain string, 4401 is fatal
   * (UnauthorizedError). The token is never logged.
   */
  token?: TokenSource;
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
  /**
   * `fetch` for the upgrade probe: when a socket fails before it ever opened
   * and the WebSocket does not tell the HTTP status (browsers), the client
   * GETs the socket URL over http(s) (and `/healthz` beside it) to tell a
   * wrong URL (fatal) from a server that is down (retry). Default: the
   * global fetch; `false`: never probe.
   */
  fetch?: typeof fetch | false;
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
  /** The server's own peer id. */
  peer: string;
  session: string;
  caps: string[];
  limits: Record<string, unknown>;
  /** Who the server takes this connection for (other peers see it as `from` of our ephemeral messages). */
  identity?: string;
  /** Seconds (from the welcome) until the token expires, when it does. */
  expiresIn?: number;
}

export interface ClientEvents {
  status: ClientStatus;
  error: BridgeError;
  ephemeral: EphemeralEvent;
  welcome: WelcomeInfo;
}

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
  /** Our peer id, sent in `hello`; other peers see it as `from` of our ephemeral messages. */
  readonly peerId: string;
  /** What the server said in its latest `welcome`. */
  welcome: WelcomeInfo | null = null;

  readonly #opts: BridgeClientOptions;
  readonly #conn: Connection;
  readonly #store: UnsavedStore | null;
  readonly #owner = randomId();
  readonly #scope: string;
  readonly #host: DocHost;
  readonly #hooks: PageHooks;
  /** The token sent in the latest `hello` or `auth`. */
  #token: string | undefined;
  /** A fresh token fetched after a 4401, for the next `hello`. */
  #pendingToken: string | undefined;
  /** Token refresh while welcomed: the timer, the token's expiry (Date.now() ms), its lifetime at the welcome. */
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #expiresAt = 0;
  #tokenLifetime = 0;
  /** Counts welcomes and drops: a refresh started on an earlier socket sends nothing. */
  #session = 0;

  #status: ClientStatus = "connecting";

  #docs = new Map<string, BridgeDoc<any>>();
  #opening = new Map<string, Promise<BridgeDoc<any>>>();
  #closingDocs = new Map<string, Promise<void>>();
  #flushes = new PendingFlushes();

  #closing: Promise<void> | null = null;
  #closed = false;

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
    this.peerId = options.peerId ?? `peer-${randomId()}`;
    this.httpBase = (options.httpBase ?? httpBaseOf(parsed)).replace(/\/+$/, "");
    this.#scope = `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
    this.#store = options.storage === false ? null : (options.storage ?? defaultStore());
    this.#host = this.#makeHost();
    const probeFetch = options.fetch === false ? undefined : (options.fetch ?? defaultFetch());
    this.#conn = new Connection(
      url,
      WS,
      {
        handshakeTimeout: options.handshakeTimeout ?? DEFAULTS.handshakeTimeout,
        baseDelay: options.reconnect?.baseDelay ?? DEFAULTS.baseDelay,
        maxDelay: options.reconnect?.maxDelay ?? DEFAULTS.maxDelay,
      },
      {
        hello: () => this.#hello(),
        refreshToken: () => this.#refreshToken(),
        ...(probeFetch ? { probe: () => probeUpgrade(url, probeFetch) } : {}),
        welcome: (msg) => this.#onWelcome(msg),
        message: (msg) => this.#onMessage(msg),
        down: () => {
          this.#session++;
          this.#stopRefresh();
          this.#docs.forEach((doc) => doc._detach());
        },
        state: () => this.#updateStatus(),
        error: (err) => this.emit("error", err),
        fatal: (err) => {
          this.#flushes.rejectAll(err);
          this.emit("error", err);
        },
      },
    );
    this.#hooks = installPageHooks(
      {
        pagehide: () => this.#onPageHide(),
        online: () => this.#conn.reconnectNow(),
        offline: () => this.#conn.networkLost(),
      },
      options.warnOnUnsaved ?? false,
    );
    this.#conn.start();
  }

  /** "connecting" | "offline" | "saving" | "saved" | "failed" | "closed" (see ClientStatus). */
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
    if (this.#conn.fatal) return Promise.reject(this.#conn.fatal);
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
    if (!this.#online()) return false;
    const bytes = data instanceof Uint8Array ? data : encodeMsgpack(data);
    this.#send({ t: "eph", doc: docId, data: bytes });
    return true;
  }

  /**
   * Resolve once every open document's current heads are durable on the
   * server (at once when there is nothing to flush). Survives reconnects;
   * rejects after a fatal error or `close()`.
   */
  async flush(): Promise<void> {
    if (this.#conn.fatal) throw this.#conn.fatal;
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
    if (this.#online()) doc._attach();
    this.#updateStatus();
    try {
      await this.#waitForOpen(doc);
    } catch (e) {
      // Refused: the server did not open it, there is nothing to close there.
      this.#release(doc, this.#online() && !notOpened(e));
      throw e;
    }
    return doc;
  }

  #waitForOpen(doc: BridgeDoc<any>): Promise<void> {
    if (this.#conn.fatal) return Promise.reject(this.#conn.fatal);
    if (doc.synced || this.#conn.state === "offline") return Promise.resolve();
    const timeout = this.#opts.openTimeout ?? DEFAULTS.openTimeout;
    return new Promise<void>((resolve, reject) => {
      const finish = (err?: unknown): void => {
        clearTimeout(timer);
        offStatus();
        const fatal = err ?? this.#conn.fatal;
        if (fatal) reject(fatal);
        else resolve();
      };
      const timer = setTimeout(() => finish(), timeout);
      const offStatus = this.on("status", (s) => {
        if (s === "offline" || s === "failed" || s === "closed") finish();
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
      if (doc.unsaved && this.#online() && heads.length) {
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
      this.#opening.delete(doc.id); // opening it again opens it anew
      if (sendClose && this.#online()) this.#send({ t: "close", doc: doc.id });
    }
    doc._release();
    this.#updateStatus();
  }

  #makeHost(): DocHost {
    const self = this;
    return {
      get online() {
        return self.#online();
      },
      get autoFlushDelay() {
        const d = self.#opts.autoFlushDelay;
        return d === undefined ? DEFAULTS.autoFlushDelay : d;
      },
      get expectsOpened() {
        // Servers that answer `open` with `opened` say who we are in `welcome`.
        const w = self.welcome;
        return w !== null && (w.identity !== undefined || w.expiresIn !== undefined);
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
    if (this.#conn.fatal) return Promise.reject(this.#conn.fatal);
    if (this.#closed) return Promise.reject(new BridgeError("closed", "client is closed"));
    return this.#flushes.add(docs, internal, ({ id }) => this.#send({ t: "flush", id, docs }));
  }

  #onFlushed(msg: FlushedMsg): void {
    const req = this.#flushes.resolve(msg.id);
    if (!req) return;
    for (const [id, heads] of Object.entries(req.docs)) this.#docs.get(id)?._flushed(heads);
    for (const [id, heads] of Object.entries(msg.docs)) this.#docs.get(id)?._flushed(heads);
  }

  // ------------------------------------------------------------ connection

  #online(): boolean {
    return this.#conn.state === "online";
  }

  #send(msg: ClientMessage): void {
    this.#conn.send(msg);
  }

  #hello(): HelloMsg | Promise<HelloMsg> {
    const make = (token: string | undefined): HelloMsg => {
      this.#token = token;
      const hello: HelloMsg = { t: "hello", v: [PROTOCOL_VERSION], peer: this.peerId, caps: this.#opts.caps ?? [] };
      if (token !== undefined) hello.token = token;
      return hello;
    };
    const source = this.#opts.token;
    if (typeof source !== "function") return make(source);
    const pending = this.#pendingToken;
    if (pending !== undefined) {
      // Fetched just now, after a 4401: don't ask again.
      this.#pendingToken = undefined;
      return make(pending);
    }
    const token = source();
    return token instanceof Promise ? token.then(make) : make(token);
  }

  /** After 4401: is there a token different from the one refused? (Kept for the next `hello`.) */
  async #refreshToken(): Promise<boolean> {
    this.#pendingToken = undefined;
    const source = this.#opts.token;
    if (typeof source !== "function") return false;
    const fresh = await source();
    if (fresh === undefined || fresh === this.#token) return false;
    this.#pendingToken = fresh;
    return true;
  }

  /** Welcomed: re-open every document with a fresh sync state, re-send pending flushes. */
  #onWelcome(msg: WelcomeMsg): void {
    this.#session++;
    this.welcome = { peer: msg.peer, session: msg.session, caps: msg.caps, limits: msg.limits };
    if (msg.identity !== undefined) this.welcome.identity = msg.identity;
    if (msg.expires_in !== undefined) this.welcome.expiresIn = msg.expires_in;
    this.#startRefresh(msg.expires_in);
    for (const doc of this.#docs.values()) doc._attach();
    for (const { id, docs } of this.#flushes.all()) this.#send({ t: "flush", id, docs });
    this.emit("welcome", this.welcome);
  }

  // ------------------------------------------------------------ token refresh

  /** The server said when the token expires: with a token function, renew it before then. */
  #startRefresh(expiresIn: number | undefined): void {
    this.#stopRefresh();
    if (expiresIn === undefined || typeof this.#opts.token !== "function") return;
    const lifetime = Math.max(0, expiresIn * 1000);
    this.#tokenLifetime = lifetime;
    this.#expiresAt = Date.now() + lifetime;
    this.#scheduleRefresh(refreshDelay(lifetime));
  }

  #stopRefresh(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
  }

  #scheduleRefresh(delay: number): void {
    this.#stopRefresh();
    this.#refreshTimer = setTimeout(() => void this.#refresh(), delay);
  }

  /** Ask the token function for a fresh token and send it in `auth`, on the socket that was welcomed. */
  async #refresh(): Promise<void> {
    this.#refreshTimer = undefined;
    const source = this.#opts.token;
    if (typeof source !== "function" || !this.#online()) return;
    const session = this.#session;
    let fresh: string | undefined;
    try {
      fresh = await source();
    } catch (e) {
      if (session !== this.#session || this.#closed) return;
      this.emit("error", bridgeError("unauthorized", `cannot get a fresh token: ${String(e)}`, { cause: e }));
      // Try again while there is time; at expiry the server closes 4401,
      // and the reconnect asks the function once more.
      const left = this.#expiresAt - Date.now();
      if (left > 2 * MIN_REFRESH_MS) this.#scheduleRefresh(Math.max(MIN_REFRESH_MS, Math.min(5_000, left / 2)));
      return;
    }
    if (session !== this.#session || this.#closed || !this.#online()) return;
    if (fresh !== undefined && fresh !== this.#token) {
      const before = jwtExpiry(this.#token);
      const after = jwtExpiry(fresh);
      this.#token = fresh;
      this.#send({ t: "auth", token: fresh });
      // The new expiry: shifted by the difference of the two `exp` claims
      // (no clock of ours involved), else one more lifetime from now.
      this.#expiresAt =
        before !== undefined && after !== undefined
          ? this.#expiresAt + (after - before) * 1000
          : Date.now() + this.#tokenLifetime;
    }
    const left = this.#expiresAt - Date.now();
    if (left > MIN_REFRESH_MS) this.#scheduleRefresh(Math.max(MIN_REFRESH_MS, refreshDelay(left)));
  }

  #onMessage(msg: ServerMessage): void {
    switch (msg.t) {
      case "sync":
        this.#docs.get(msg.doc)?._receiveSync(msg.data);
        return;
      case "saved":
        this.#docs.get(msg.doc)?._saved(msg.heads);
        return;
      case "opened":
        this.#onOpened(msg);
        return;
      case "flushed":
        this.#onFlushed(msg);
        return;
      case "eph":
        this.#onEphemeral(msg);
        return;
      case "error":
        this.#onServerError(msg);
        return;
    }
  }

  #onServerError(msg: ErrorMsg): void {
    const extra: { doc?: string; id?: number } = {};
    if (msg.doc !== undefined) extra.doc = msg.doc;
    if (msg.id !== undefined) extra.id = msg.id;
    const err = bridgeError(msg.code, msg.msg, extra);
    let internal = false;
    if (msg.id !== undefined) {
      internal = this.#flushes.reject(msg.id, err)?.internal ?? false;
    } else if (msg.doc !== undefined) {
      const doc = this.#docs.get(msg.doc);
      doc?._error(err);
      // The server did not open it (or closed it: a refreshed token took the
      // access away): the document is closed here too.
      if (doc && notOpened(err)) this.#release(doc, false);
    }
    if (!internal) this.emit("error", err);
  }

  #onOpened(msg: OpenedMsg): void {
    this.#docs.get(msg.doc)?._opened(msg.access);
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

  // ------------------------------------------------------------ status

  #updateStatus(): void {
    const unsaved = this.hasUnsavedChanges;
    this.#hooks.setUnsaved(unsaved);
    const conn: ConnectionState = this.#conn.state;
    const status: ClientStatus = this.#closed ? "closed" : conn !== "online" ? conn : unsaved ? "saving" : "saved";
    if (status === this.#status) return;
    this.#status = status;
    this.emit("status", status);
  }

  #storageError(e: unknown, doc: string): void {
    this.emit("error", new BridgeError("storage", `local storage failed for ${doc}: ${String(e)}`, { doc, cause: e }));
  }

  // ------------------------------------------------------------ leaving

  #onPageHide(): void {
    if (this.#opts.beacon === false) return;
    for (const doc of this.#docs.values()) {
      const payload = doc._beaconPayload();
      if (!payload) continue;
      let url = `${this.httpBase}/docs/${encodeURIComponent(doc.id)}/changes`;
      const token = typeof this.#opts.token === "function" ? this.#token : this.#opts.token;
      if (token !== undefined) url += `?token=${encodeURIComponent(token)}`;
      sendBeacon(url, payload);
      doc._local?.update();
    }
  }

  async #close(timeout: number): Promise<void> {
    let failure: unknown = null;
    if (!this.#conn.fatal) {
      try {
        await Promise.all([...this.#closingDocs.values()]);
        await withTimeout(this.flush(), timeout);
      } catch (e) {
        failure = e;
      }
    }
    this.#closed = true;
    this.#stopRefresh();
    this.#hooks.remove();
    const docs = [...this.#docs.values()];
    for (const doc of docs) this.#release(doc, false);
    this.#opening.clear();
    this.#flushes.rejectAll(new BridgeError("closed", "client is closed"));
    await this.#conn.stop();
    this.#updateStatus();
    await Promise.all(docs.map((d) => d._local?.idle()));
    if (failure) throw failure;
  }
}

/** Errors that mean the server did not open the document (or no longer has it open). */
function notOpened(e: unknown): boolean {
  return e instanceof ForbiddenError || e instanceof NotFoundError;
}

/** When to renew a token that expires in `ms`: 30 s before, or at 80% of its lifetime when that is later. */
function refreshDelay(ms: number): number {
  return Math.max(0, Math.max(ms - REFRESH_LEAD_MS, ms * 0.8));
}

/** The `exp` claim (epoch seconds) of a JWT, or undefined for anything else. Nothing is verified. */
function jwtExpiry(token: string | undefined): number | undefined {
  const part = token?.split(".")[1];
  const atob = (globalThis as { atob?: (s: string) => string }).atob;
  if (!part || !atob) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims: unknown = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}
