// Keeps one document's unsaved state in an UnsavedStore, in step with the
// document: written while it has edits the server has not made durable,
// deleted once they are durable. Store operations run one at a time; a
// request made while one runs is coalesced into one more run.

import { Automerge } from "./automerge.js";
import type { UnsavedStore } from "./persistence.js";

/** Own chunks kept before they are compacted into one full save. */
const MAX_CHUNKS = 64;

export interface LocalCopySource {
  /** Whether the document has edits not yet durable on the server. */
  readonly unsaved: boolean;
  readonly value: Automerge.Doc<unknown>;
}

const sameHeads = (a: string[], b: string[]): boolean =>
  a.length === b.length && a.every((h) => b.includes(h));

export class LocalCopy {
  readonly #store: UnsavedStore;
  readonly #scope: string;
  readonly #doc: string;
  readonly #owner: string;
  readonly #onError: (e: unknown) => void;
  #source: LocalCopySource | null = null;

  /** Heads contained in our own stored chunks; null when we store nothing. */
  #persisted: string[] | null = null;
  #seq = 0;
  #ownChunks = 0;
  /** Other owners' chunks merged in at open: owner -> highest seq read. */
  #adopted = new Map<string, number>();

  #running: Promise<void> | null = null;
  #again = false;

  constructor(store: UnsavedStore, scope: string, doc: string, owner: string, onError: (e: unknown) => void) {
    this.#store = store;
    this.#scope = scope;
    this.#doc = doc;
    this.#owner = owner;
    this.#onError = onError;
  }

  /** Read every stored chunk for this document (all owners), oldest first per owner. */
  async restore(): Promise<Uint8Array[]> {
    const rows = await this.#store.load(this.#scope, this.#doc);
    for (const r of rows) this.#adopted.set(r.owner, Math.max(r.seq, this.#adopted.get(r.owner) ?? -1));
    return rows.map((r) => r.data);
  }

  bind(source: LocalCopySource): void {
    this.#source = source;
  }

  /** Bring the store in line with the document, soon. */
  update(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop();
  }

  /** Resolves when no store operation is running or queued. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #loop(): Promise<void> {
    try {
      do {
        this.#again = false;
        try {
          await this.#step();
        } catch (e) {
          this.#onError(e);
        }
      } while (this.#again);
    } finally {
      this.#running = null;
    }
  }

  async #step(): Promise<void> {
    const src = this.#source;
    if (!src) return;
    if (src.unsaved) await this.#write(src.value);
    else await this.#clear();
  }

  async #write(value: Automerge.Doc<unknown>): Promise<void> {
    const heads = Automerge.getHeads(value);
    if (this.#persisted && sameHeads(heads, this.#persisted)) return;
    const full = this.#persisted === null || this.#ownChunks >= MAX_CHUNKS;
    const data = full ? Automerge.save(value) : Automerge.saveSince(value, this.#persisted!);
    const seq = this.#seq++;
    await this.#store.put(this.#scope, this.#doc, this.#owner, seq, data);
    if (full && this.#ownChunks > 0) {
      await this.#store.remove(this.#scope, this.#doc, this.#owner, seq);
      this.#ownChunks = 0;
    }
    this.#ownChunks++;
    this.#persisted = heads;
  }

  async #clear(): Promise<void> {
    if (this.#persisted === null && this.#ownChunks === 0 && this.#adopted.size === 0) return;
    const own = this.#ownChunks > 0;
    const adopted = [...this.#adopted];
    this.#persisted = null;
    this.#ownChunks = 0;
    this.#adopted.clear();
    if (own) await this.#store.remove(this.#scope, this.#doc, this.#owner);
    for (const [owner, maxSeq] of adopted) await this.#store.remove(this.#scope, this.#doc, owner, maxSeq + 1);
  }
}
