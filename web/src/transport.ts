// The slice of the WebSocket API this client uses, so browsers' WebSocket,
// Node 22's global one and the `ws` package's all fit.

export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export const OPEN = 1;

export function defaultWebSocket(): WebSocketConstructor | undefined {
  const g = globalThis as { WebSocket?: WebSocketConstructor };
  return typeof g.WebSocket === "function" ? g.WebSocket : undefined;
}

/** The bytes of a binary frame, or null for a text frame. */
export function frameBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // `ws` with binaryType "fragments" hands over an array of Buffers.
  if (Array.isArray(data) && data.every((d) => ArrayBuffer.isView(d))) {
    const parts = data as ArrayBufferView[];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
      at += p.byteLength;
    }
    return out;
  }
  return null;
}

export function defaultFetch(): typeof fetch | undefined {
  const g = globalThis as { fetch?: typeof fetch };
  return typeof g.fetch === "function" ? g.fetch.bind(globalThis) : undefined;
}

const PROBE_TIMEOUT_MS = 3000;

async function probeStatus(url: string, fetchFn: typeof fetch): Promise<number | undefined> {
  try {
    const signal = typeof AbortSignal.timeout === "function" ? AbortSignal.timeout(PROBE_TIMEOUT_MS) : undefined;
    const res = await fetchFn(url, { method: "GET", cache: "no-store", ...(signal ? { signal } : {}) });
    // Nobody reads the body: let the connection go.
    res.body?.cancel().catch(() => {});
    // 0: an opaque answer (no CORS): nothing learned.
    return res.status || undefined;
  } catch {
    return undefined; // down, unreachable, CORS, timeout: nothing learned
  }
}

/**
 * A WebSocket to `wsUrl` failed before it opened and the browser does not
 * say why. Ask over HTTP whether the URL is wrong:
 *
 * 1. GET the socket URL (ws -> http, wss -> https). No answer, a 5xx, 408,
 *    429 or a CORS-opaque answer: nothing learned, keep retrying. 2xx, 400,
 *    405 or 426 (Upgrade Required): something is there, keep retrying.
 * 2. Any other 3xx/4xx (404, 403, ...): if the path ends in `/sync`, GET
 *    `/healthz` beside it; a 2xx there means the bridge is at this prefix
 *    (an older bridge answers a plain GET on /sync with 404): keep retrying.
 *    Otherwise the URL is wrong: fatal, with the status of step 1.
 */
export async function probeUpgrade(wsUrl: string, fetchFn: typeof fetch): Promise<{ fatal: false } | { fatal: true; status: number }> {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.hash = "";
  const status = await probeStatus(url.href, fetchFn);
  if (status === undefined || !isFatalStatus(status) || status === 400 || status === 405) return { fatal: false };
  if (/\/sync\/?$/.test(url.pathname)) {
    const health = new URL(url.href);
    health.pathname = url.pathname.replace(/\/sync\/?$/, "/healthz");
    health.search = "";
    const healthStatus = await probeStatus(health.href, fetchFn);
    if (healthStatus === undefined || (healthStatus >= 200 && healthStatus < 300) || !isFatalStatus(healthStatus)) {
      return { fatal: false };
    }
  }
  return { fatal: true, status };
}

function isFatalStatus(status: number): boolean {
  return status >= 300 && status < 500 && status !== 408 && status !== 429 && status !== 426;
}
