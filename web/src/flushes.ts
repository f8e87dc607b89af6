// Outstanding `flush` requests. They outlive connections: after a reconnect
// every one still pending is sent again with the same id.

import type { BridgeError } from "./errors.js";
import type { HexHeads } from "./protocol.js";

export interface FlushRequest {
  id: number;
  docs: Record<string, HexHeads>;
  /** Made by the client itself (auto-flush, close): failures are not reported as events. */
  internal: boolean;
}

interface Pending extends FlushRequest {
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class PendingFlushes {
  #pending = new Map<number, Pending>();
  #nextId = 1;

  /** Register a request; `send` is called with it now (it may drop it while offline). */
  add(docs: Record<string, HexHeads>, internal: boolean, send: (req: FlushRequest) => void): Promise<void> {
    const id = this.#nextId++;
    return new Promise<void>((resolve, reject) => {
      const req: Pending = { id, docs, internal, resolve, reject };
      this.#pending.set(id, req);
      send(req);
    });
  }

  /** Everything still waiting for an answer, oldest first. */
  all(): FlushRequest[] {
    return [...this.#pending.values()];
  }

  /** The server answered `flushed`: returns the request (now settled), if it was ours. */
  resolve(id: number): FlushRequest | undefined {
    const req = this.#pending.get(id);
    if (!req) return undefined;
    this.#pending.delete(id);
    req.resolve();
    return req;
  }

  /** The server answered `error` for the request: returns it (now rejected), if it was ours. */
  reject(id: number, err: BridgeError): FlushRequest | undefined {
    const req = this.#pending.get(id);
    if (!req) return undefined;
    this.#pending.delete(id);
    req.reject(err);
    return req;
  }

  rejectAll(err: BridgeError): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const req of all) req.reject(err);
  }
}
