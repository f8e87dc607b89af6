// One open document: its current Automerge value, its sync state with the
// server on the current connection, and what is known to be durable.

import { Automerge } from "./automerge.js";
import { Emitter } from "./emitter.js";
import { BridgeError, ReadOnlyError } from "./errors.js";
import type { LocalCopy } from "./local-copy.js";
import type { Access, ClientMessage, HexHeads } from "./protocol.js";

export type ChangeOrigin = "local" | "remote";

export interface DocChangeEvent<T> {
  /** The document after the change (same as `doc.value`). */
  value: Automerge.Doc<T>;
  /** What changed, as Automerge patches. */
  patches: Automerge.Patch[];
  /** "local" for `doc.change`, "remote" for changes that came from the server. */
  origin: ChangeOrigin;
}

export interface DocEvents<T> {
  change: DocChangeEvent<T>;
  /** Initial sync on the current connection finished: `value` has everything the server had. */
  synced: void;
  /** Every local change is durable on the server. */
  saved: void;
  /** A server error about this document. */
  error: BridgeError;
  /** The server said what we may do with the document (`opened`): on open, and when a token refresh changed it. */
  access: Access;
  /** The document was closed (by `doc.close()` or `client.close()`). */
  closed: void;
}

/** What a document needs from its client. @internal */
export interface DocHost {
  readonly online: boolean;
  readonly autoFlushDelay: number | false;
  /** Does the server answer `open` with `opened` (then the open is complete only once it came)? */
  readonly expectsOpened: boolean;
  send(msg: ClientMessage): void;
  requestFlush(docs: Record<string, HexHeads>, internal: boolean): Promise<void>;
  ephemeral(doc: string, data: unknown): boolean;
  closeDoc(doc: BridgeDoc<any>): Promise<void>;
  docStateChanged(): void;
}

const MAX_AUTO_FLUSH_BACKOFF = 30_000;

export class BridgeDoc<T = any> extends Emitter<DocEvents<T>> {
  readonly id: string;
  readonly #host: DocHost;
  readonly #local: LocalCopy | null;
  #value: Automerge.Doc<T>;
  /** Sync state on the current connection; null while not attached. */
  #sync: Automerge.SyncState | null = null;
  #synced = false;
  /** We hold everything the server announced on this connection (the initial sync is done but for `opened`). */
  #headsSynced = false;
  /** The server answered this connection's `open` (`opened`, or a `saved` from a server that sends no `opened`). */
  #answered = false;
  /** What the server said we may do, or undefined before it said (or from a server that does not say). */
  #access: Access | undefined;
  #closed = false;
  #released = false;
  /** Heads the server has said are durable (saved frontier plus flushed heads). */
  #durable = new Set<string>();
  /** Heads of the latest local change not yet known durable. */
  #target: HexHeads | null = null;
  /** State restored from local storage that has not been checked against the server yet. */
  #restoredPending: boolean;
  #syncWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  #autoFlushTimer: ReturnType<typeof setTimeout> | undefined;
  #autoFlushInFlight = false;
  #autoFlushBackoff = 0;

  /** @internal */
  constructor(host: DocHost, id: string, value: Automerge.Doc<T>, local: LocalCopy | null, restored: boolean) {
    super();
    this.#host = host;
    this.id = id;
    this.#value = value;
    this.#local = local;
    this.#restoredPending = restored;
    if (restored) {
      const heads = Automerge.getHeads(value);
      if (heads.length) this.#target = heads;
    }
    const self = this;
    local?.bind({
      get unsaved() {
        return self.unsaved;
      },
      get value() {
        return self.#value as Automerge.Doc<unknown>;
      },
    });
  }

  /** The current document. */
  get value(): Automerge.Doc<T> {
    return this.#value;
  }

  /** Current heads (hex change hashes). */
  get heads(): HexHeads {
    return Automerge.getHeads(this.#value);
  }

  /** True once the current connection's initial sync finished. */
  get synced(): boolean {
    return this.#synced;
  }

  /** True while some local change (or restored local state) is not known durable on the server. */
  get unsaved(): boolean {
    return this.#target !== null || this.#restoredPending;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * What the server lets this client do with the document: "write", "read",
   * or undefined before the server said (or a server without authorization).
   * Changes with the `access` event.
   */
  get access(): Access | undefined {
    return this.#access;
  }

  /**
   * True when the server gives this client read access only: the document
   * stays live (remote changes arrive), but `change()` throws ReadOnlyError.
   */
  get readOnly(): boolean {
    return this.#access === "read";
  }

  /**
   * Change the document, as `Automerge.change` does; the change is synced to
   * the server and kept locally until it is durable. Returns the new value.
   * Throws ReadOnlyError (leaving the document untouched) when `readOnly`.
   */
  change(fn: Automerge.ChangeFn<T>, message?: string): Automerge.Doc<T> {
    if (this.#closed) throw new BridgeError("closed", `document ${this.id} is closed`, { doc: this.id });
    if (this.readOnly) throw new ReadOnlyError(`document ${this.id} is read-only for this client`, { doc: this.id });
    const patches: Automerge.Patch[] = [];
    const opts: Automerge.ChangeOptions<T> = { patchCallback: (p) => void patches.push(...p) };
    if (message !== undefined) opts.message = message;
    const before = this.#value;
    const beforeHeads = Automerge.getHeads(before);
    const next = Automerge.change(before, opts, fn);
    const heads = Automerge.getHeads(next);
    this.#value = next;
    if (sameHeads(heads, beforeHeads)) return next; // nothing was changed
    this.#target = heads;
    this.emit("change", { value: next, patches, origin: "local" });
    this.#pump();
    this.#stateChanged();
    this.#scheduleAutoFlush(this.#host.autoFlushDelay || 0);
    return next;
  }

  /**
   * Resolve once the server has confirmed (`flushed`) that every current
   * head is durable. Survives reconnects; rejects on a server `error` for the
   * request (e.g. code "flush_timeout").
   */
  async flush(): Promise<void> {
    const heads = this.heads;
    if (!heads.length) return;
    await this.#host.requestFlush({ [this.id]: heads }, false);
  }

  /** Resolve when the initial sync on the current (or next) connection is done. */
  whenSynced(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    if (this.#closed) return Promise.reject(new BridgeError("closed", `document ${this.id} is closed`, { doc: this.id }));
    return new Promise((resolve, reject) => this.#syncWaiters.push({ resolve, reject }));
  }

  /** Send an ephemeral (presence) message about this document. Returns false when offline. */
  ephemeral(data: Uint8Array | unknown): boolean {
    return this.#host.ephemeral(this.id, data);
  }

  /**
   * Stop syncing. If online and something is unsaved, first waits (bounded)
   * for the server to make it durable; unsaved state stays in local storage.
   */
  close(): Promise<void> {
    this.#closed = true;
    return this.#host.closeDoc(this);
  }

  // ------------------------------------------------------------ called by the client

  /** @internal A connection was welcomed: open the doc with a fresh sync state. */
  _attach(): void {
    if (this.#released) return;
    this.#sync = Automerge.initSyncState();
    this.#synced = false;
    this.#headsSynced = false;
    this.#answered = false;
    this.#host.send({ t: "open", doc: this.id });
    this.#pump();
  }

  /** @internal The connection is gone. */
  _detach(): void {
    this.#sync = null;
    this.#synced = false;
    this.#headsSynced = false;
    this.#answered = false;
    clearTimeout(this.#autoFlushTimer);
    this.#autoFlushTimer = undefined;
  }

  /** @internal Stop for good (after closeDoc / client close). */
  _release(): void {
    if (this.#released) return;
    this._detach();
    this.#closed = true;
    this.#released = true;
    this._fail(new BridgeError("closed", `document ${this.id} is closed`, { doc: this.id }));
    this.#local?.update();
    this.emit("closed", undefined);
  }

  /** @internal */
  get _local(): LocalCopy | null {
    return this.#local;
  }

  /** @internal */
  _receiveSync(data: Uint8Array): void {
    if (!this.#sync) return;
    const patches: Automerge.Patch[] = [];
    const before = this.#value;
    let next: Automerge.Doc<T>;
    let sync: Automerge.SyncState;
    try {
      [next, sync] = Automerge.receiveSyncMessage(before, this.#sync, data, {
        patchCallback: (p) => void patches.push(...p),
      });
    } catch (e) {
      this.emit("error", new BridgeError("sync", `bad sync message for ${this.id}: ${String(e)}`, { doc: this.id, cause: e }));
      return;
    }
    this.#value = next;
    this.#sync = sync;
    if (next !== before && patches.length) this.emit("change", { value: next, patches, origin: "remote" });
    if (!this.#headsSynced && this.#hasAllOf(data)) {
      this.#headsSynced = true;
      this.#maybeSynced();
    }
    this.#recheck();
    this.#pump();
  }

  /** @internal The server's durable heads advanced. */
  _saved(heads: HexHeads): void {
    this.#durable = new Set(heads);
    this.#recheck();
    // `opened` comes before the first `saved`: a server that sent none sends none.
    if (this.#sync && !this.#answered) {
      this.#answered = true;
      this.#maybeSynced();
    }
  }

  /** @internal The server answered `open` (or re-stated the access after a token refresh). */
  _opened(access: Access): void {
    if (!this.#sync) return;
    const changed = access !== this.#access;
    this.#access = access;
    if (changed) {
      if (access === "read") {
        // Nothing of ours will ever be durable: stop asking.
        clearTimeout(this.#autoFlushTimer);
        this.#autoFlushTimer = undefined;
      }
      this.emit("access", access);
    }
    if (!this.#answered) {
      this.#answered = true;
      this.#maybeSynced();
    } else if (changed) this.#scheduleAutoFlush(0);
  }

  /** @internal These heads are durable. */
  _flushed(heads: HexHeads): void {
    for (const h of heads) this.#durable.add(h);
    this.#recheck();
  }

  /** @internal A server error about this doc: reject whoever waits for the initial sync. */
  _fail(err: BridgeError): void {
    const waiters = this.#syncWaiters;
    this.#syncWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  /** @internal */
  _error(err: BridgeError): void {
    // A refused change leaves the document open and syncing: the initial
    // sync goes on. Any other error about the document fails its open.
    if (!(err instanceof ReadOnlyError)) this._fail(err);
    this.emit("error", err);
  }

  /**
   * @internal Bytes for a last-resort `sendBeacon`: changes not known durable
   * (or the whole document when nothing is known durable), or null.
   */
  _beaconPayload(): Uint8Array | null {
    if (!this.unsaved) return null;
    const known = this.#knownDurable();
    const data = known.length ? Automerge.saveSince(this.#value as Automerge.Doc<unknown>, known) : Automerge.save(this.#value);
    return data.length ? data : null;
  }

  // ------------------------------------------------------------ internals

  #pump(): void {
    let state = this.#sync;
    if (!state || !this.#host.online) return;
    for (let i = 0; i < 64; i++) {
      const [next, msg]: [Automerge.SyncState, Uint8Array | null] = Automerge.generateSyncMessage(this.#value, state);
      this.#sync = state = next;
      if (!msg) return;
      this.#host.send({ t: "sync", doc: this.id, data: msg });
    }
  }

  /** Whether we now hold every head the server announced in `data`. */
  #hasAllOf(data: Uint8Array): boolean {
    try {
      return Automerge.hasHeads(this.#value as Automerge.Doc<unknown>, Automerge.decodeSyncMessage(data).heads);
    } catch {
      return false;
    }
  }

  /** Synced once we hold the server's heads and it answered the `open` (when it answers). */
  #maybeSynced(): void {
    if (this.#synced || !this.#headsSynced) return;
    if (!this.#answered && this.#host.expectsOpened) return;
    this.#markSynced();
  }

  #markSynced(): void {
    this.#synced = true;
    if (this.#restoredPending) {
      // Restored chunks may have waited for dependencies the server just sent.
      this.#restoredPending = false;
      const heads = this.heads;
      this.#target = heads.length ? heads : null;
      this.#recheck();
    }
    const waiters = this.#syncWaiters;
    this.#syncWaiters = [];
    for (const w of waiters) w.resolve();
    this.emit("synced", undefined);
    this.#stateChanged();
    this.#scheduleAutoFlush(0);
  }

  #knownDurable(): HexHeads {
    const doc = this.#value as Automerge.Doc<unknown>;
    return [...this.#durable].filter((h) => Automerge.hasHeads(doc, [h]));
  }

  /** Whether every change up to `heads` is in the history of the durable heads. */
  #covered(heads: HexHeads): boolean {
    if (heads.every((h) => this.#durable.has(h))) return true;
    const known = this.#knownDurable();
    if (!known.length) return false;
    const notDurable = new Set(Automerge.getChangesMetaSince(this.#value, known).map((c) => c.hash));
    return heads.every((h) => !notDurable.has(h));
  }

  #recheck(): void {
    if (this.#target === null || !this.#covered(this.#target)) return;
    this.#target = null;
    if (this.#restoredPending) return;
    clearTimeout(this.#autoFlushTimer);
    this.#autoFlushTimer = undefined;
    this.#autoFlushBackoff = 0;
    this.#stateChanged();
    this.emit("saved", undefined);
  }

  #stateChanged(): void {
    this.#local?.update();
    this.#host.docStateChanged();
  }

  /**
   * Ask the server for a flush of the current heads after `delay` ms unless
   * a `saved` covers them first; this makes "saved" status independent of
   * how often the server volunteers `saved` frames.
   */
  #scheduleAutoFlush(delay: number): void {
    if (this.#host.autoFlushDelay === false || this.#released || this.#autoFlushInFlight || this.readOnly) return;
    if (!this.unsaved || !this.#sync || !this.#synced) return;
    clearTimeout(this.#autoFlushTimer);
    this.#autoFlushTimer = setTimeout(() => this.#autoFlush(), delay);
  }

  #autoFlush(): void {
    this.#autoFlushTimer = undefined;
    const heads = this.heads;
    if (this.#target === null || !this.#sync || !heads.length) return;
    this.#autoFlushInFlight = true;
    this.#host.requestFlush({ [this.id]: heads }, true).then(
      () => {
        this.#autoFlushInFlight = false;
        this.#autoFlushBackoff = 0;
        this.#scheduleAutoFlush(this.#host.autoFlushDelay || 0);
      },
      () => {
        this.#autoFlushInFlight = false;
        const base = this.#host.autoFlushDelay || 1000;
        this.#autoFlushBackoff = Math.min(MAX_AUTO_FLUSH_BACKOFF, Math.max(base, this.#autoFlushBackoff * 2));
        this.#scheduleAutoFlush(this.#autoFlushBackoff);
      },
    );
  }
}

function sameHeads(a: HexHeads, b: HexHeads): boolean {
  return a.length === b.length && a.every((h) => b.includes(h));
}
