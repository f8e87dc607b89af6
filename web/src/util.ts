import { BridgeError } from "./errors.js";

/** Exponential backoff with "equal jitter": half fixed, half random. */
export function backoff(attempt: number, base: number, max: number): number {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return cap / 2 + (Math.random() * cap) / 2;
}

/** `p`, or a BridgeError("timeout") after `ms` (no limit for Infinity). */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
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

/** 16 random hex digits. */
export function randomId(): string {
  const bytes = new Uint8Array(8);
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** http(s)://host[/prefix] for a ws(s)://host[/prefix]/sync URL. */
export function httpBaseOf(url: URL): string {
  const scheme = url.protocol === "wss:" ? "https:" : "http:";
  const path = url.pathname.replace(/\/sync\/?$/, "");
  return `${scheme}//${url.host}${path}`;
}
