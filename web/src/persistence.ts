// Local copies of unsaved edits, so a crash, a closed tab or a dead network
// never loses one.
//
// Records are chunks of Automerge bytes (a full `save` or a `saveSince`
// increment) keyed by (scope, doc, owner, seq): scope is the server URL,
// owner is one BridgeClient instance (so two tabs never clobber each other),
// seq orders one owner's chunks. On open, every owner's chunks for the doc are
// merged in; once the server's durable heads cover them they are deleted.

export interface StoredChunk {
  owner: string;
  seq: number;
  data: Uint8Array;
}

export interface UnsavedStore {
  /** All chunks for a document, from every owner, in (owner, seq) order. */
  load(scope: string, doc: string): Promise<StoredChunk[]>;
  put(scope: string, doc: string, owner: string, seq: number, data: Uint8Array): Promise<void>;
  /** Delete an owner's chunks with seq < `beforeSeq` (all of them if omitted). */
  remove(scope: string, doc: string, owner: string, beforeSeq?: number): Promise<void>;
}

const sortChunks = (a: StoredChunk, b: StoredChunk): number =>
  a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : a.seq - b.seq;

/** In-memory store: for tests, and to share state between clients in one process. */
export class MemoryStore implements UnsavedStore {
  readonly #rows = new Map<string, StoredChunk & { scope: string; doc: string }>();

  async load(scope: string, doc: string): Promise<StoredChunk[]> {
    const out: StoredChunk[] = [];
    for (const r of this.#rows.values()) {
      if (r.scope === scope && r.doc === doc) out.push({ owner: r.owner, seq: r.seq, data: r.data.slice() });
    }
    return out.sort(sortChunks);
  }

  async put(scope: string, doc: string, owner: string, seq: number, data: Uint8Array): Promise<void> {
    this.#rows.set(JSON.stringify([scope, doc, owner, seq]), { scope, doc, owner, seq, data: data.slice() });
  }

  async remove(scope: string, doc: string, owner: string, beforeSeq = Infinity): Promise<void> {
    for (const [k, r] of this.#rows) {
      if (r.scope === scope && r.doc === doc && r.owner === owner && r.seq < beforeSeq) this.#rows.delete(k);
    }
  }

  /** Number of stored chunks (all documents). */
  get size(): number {
    return this.#rows.size;
  }
}

const DB_NAME = "automerge-bridge";
const STORE = "unsaved";

type Key = [string, string, string, number];
interface Row {
  key: Key;
  data: Uint8Array;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/** IndexedDB-backed store (browsers). */
export class IndexedDbStore implements UnsavedStore {
  readonly #db: Promise<IDBDatabase>;

  constructor(factory: IDBFactory, name = DB_NAME) {
    this.#db = new Promise((resolve, reject) => {
      const req = factory.open(name, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE, { keyPath: "key" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("IndexedDB open blocked"));
    });
    // Failures surface on first use; don't report an unhandled rejection here.
    this.#db.catch(() => {});
  }

  async load(scope: string, doc: string): Promise<StoredChunk[]> {
    const db = await this.#db;
    const tx = db.transaction(STORE, "readonly");
    // Array keys sort after numbers and strings, so [scope, doc, []] bounds every owner.
    const range = IDBKeyRange.bound([scope, doc], [scope, doc, []]);
    const rows = (await request(tx.objectStore(STORE).getAll(range))) as Row[];
    return rows.map((r) => ({ owner: r.key[2], seq: r.key[3], data: r.data })).sort(sortChunks);
  }

  async put(scope: string, doc: string, owner: string, seq: number, data: Uint8Array): Promise<void> {
    const db = await this.#db;
    const tx = db.transaction(STORE, "readwrite");
    const row: Row = { key: [scope, doc, owner, seq], data };
    tx.objectStore(STORE).put(row);
    await done(tx);
  }

  async remove(scope: string, doc: string, owner: string, beforeSeq = Infinity): Promise<void> {
    const db = await this.#db;
    const tx = db.transaction(STORE, "readwrite");
    const upper = Number.isFinite(beforeSeq) ? [scope, doc, owner, beforeSeq] : [scope, doc, owner, []];
    tx.objectStore(STORE).delete(IDBKeyRange.bound([scope, doc, owner], upper, false, true));
    await done(tx);
  }
}

/** The default store: IndexedDB where the platform has it, otherwise none. */
export function defaultStore(): UnsavedStore | null {
  const g = globalThis as { indexedDB?: IDBFactory; IDBKeyRange?: unknown };
  if (typeof g.indexedDB === "undefined" || typeof g.IDBKeyRange === "undefined") return null;
  try {
    return new IndexedDbStore(g.indexedDB);
  } catch {
    return null;
  }
}
