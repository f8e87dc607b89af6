// A tiny typed event emitter (no dependency on Node's EventEmitter or DOM
// EventTarget, so it behaves the same in browsers and Node).

export type Listener<A> = (arg: A) => void;

export class Emitter<Events extends object> {
  #listeners = new Map<keyof Events, Set<Listener<never>>>();

  on<K extends keyof Events>(event: K, cb: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(cb as Listener<never>);
    return () => this.off(event, cb);
  }

  once<K extends keyof Events>(event: K, cb: Listener<Events[K]>): () => void {
    const off = this.on(event, (arg) => {
      off();
      cb(arg);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, cb: Listener<Events[K]>): void {
    this.#listeners.get(event)?.delete(cb as Listener<never>);
  }

  /** Call every listener; a throwing listener is reported, not propagated. */
  protected emit<K extends keyof Events>(event: K, arg: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const cb of [...set]) {
      try {
        (cb as Listener<Events[K]>)(arg);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }

  protected listenerCount(event: keyof Events): number {
    return this.#listeners.get(event)?.size ?? 0;
  }
}

function reportListenerError(e: unknown): void {
  // Surface the error without breaking the caller's loop (browsers have
  // reportError; Node 20 does not).
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (typeof g.reportError === "function") g.reportError(e);
  else console.error("automerge-bridge: listener threw", e);
}
