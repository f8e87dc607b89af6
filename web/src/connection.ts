// The socket side of a client: connect, `hello`/`welcome` handshake, decode
// frames, and reconnect with exponential backoff and jitter according to the
// close code. It knows nothing about documents.

import { BridgeError, bridgeError } from "./errors.js";
import {
  PROTOCOL_VERSION,
  ProtocolError,
  decodeServerMessage,
  encodeClientMessage,
  type ClientMessage,
  type HelloMsg,
  type ServerMessage,
  type WelcomeMsg,
} from "./protocol.js";
import { OPEN, frameBytes, type WebSocketConstructor, type WebSocketLike } from "./transport.js";
import { backoff } from "./util.js";

/** "online" means welcomed; "failed" means given up for good (see `fatal`). */
export type ConnectionState = "connecting" | "online" | "offline" | "failed";

/** What `probe` makes of a socket that failed before it opened. */
export type ProbeVerdict = { fatal: false } | { fatal: true; status: number };

/**
 * Close codes after which reconnecting is pointless: the server refused us
 * (4401 unless a fresh token is available, 4403), found our frames malformed
 * (4400) or too big (1009). Same set as the Python client.
 */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([4400, 4401, 4403, 1009]);
/** Close codes after which the client comes back at once (with jitter) rather than backing off. */
export const QUICK_RECONNECT_CODES: ReadonlySet<number> = new Set([1001, 4409]);

/** A 4429 (rate limited) reason carries the delay in seconds; honoured up to this bound. */
export const MAX_RATE_LIMIT_DELAY_MS = 600_000;

/**
 * The delay a 4429 close asks for, in ms: the first number of its reason
 * ("retry after 5 s: over 200 frames/s") in seconds, capped at 600 s;
 * undefined when the reason names none.
 */
export function rateLimitDelay(reason: string): number | undefined {
  const found = /\d+(?:\.\d+)?/.exec(reason);
  if (!found) return undefined;
  const seconds = Number(found[0]);
  if (!Number.isFinite(seconds)) return undefined;
  return Math.min(seconds * 1000, MAX_RATE_LIMIT_DELAY_MS);
}

const CLOSE_CODE_NAMES: Record<number, string> = {
  4400: "protocol",
  4401: "unauthorized",
  4403: "forbidden",
  1009: "too_big",
  1011: "server_error",
};

/**
 * Is an HTTP status in answer to the upgrade request final? Every 3xx and
 * 4xx is (wrong URL, no such route, refused), except 408 and 429 (come back
 * later); 5xx is a server or proxy in trouble (e.g. a deploy): retried.
 */
export function isFatalHttpStatus(status: number): boolean {
  return status >= 300 && status < 500 && status !== 408 && status !== 429;
}

/** The HTTP status in an error event of the `ws` package ("Unexpected server response: 404"). */
function httpStatusOfError(ev: unknown): number | undefined {
  const e = ev as { message?: unknown; error?: { message?: unknown } } | null;
  const text = [e?.message, e?.error?.message].find((m) => typeof m === "string") as string | undefined;
  const match = text ? /Unexpected server response: (\d{3})/.exec(text) : null;
  return match ? Number(match[1]) : undefined;
}

export interface ConnectionHandlers {
  /** The `hello` to send on each new socket (async when the token comes from a function). */
  hello(): HelloMsg | Promise<HelloMsg>;
  /**
   * Called after 4401: resolves true when a token different from the one
   * just refused is available (reconnect at once with it), false otherwise
   * (4401 is then fatal). Asked once: if the fresh token is refused too
   * (4401 before the next welcome), the connection gives up.
   */
  refreshToken(): Promise<boolean>;
  /**
   * A socket closed before it ever opened and no HTTP status is known (a
   * browser hides it): find out whether the URL is wrong. Absent: no probing.
   */
  probe?: () => Promise<ProbeVerdict>;
  /** A socket was welcomed; state is already "online" (so sends go out). */
  welcome(msg: WelcomeMsg): void;
  /** Any server message other than `welcome` (`error` may come before it). */
  message(msg: ServerMessage): void;
  /** The current socket is gone (called before the state turns "offline"). */
  down(): void;
  state(state: ConnectionState): void;
  /** Something went wrong that the caller may want to hear about. */
  error(err: BridgeError): void;
  /** Given up for good (fatal close code, HTTP error on the upgrade, protocol version): no more reconnects. */
  fatal(err: BridgeError): void;
}

export interface ConnectionOptions {
  handshakeTimeout: number;
  baseDelay: number;
  maxDelay: number;
}

export class Connection {
  readonly #url: string;
  readonly #WebSocket: WebSocketConstructor;
  readonly #opts: ConnectionOptions;
  readonly #h: ConnectionHandlers;

  #ws: WebSocketLike | null = null;
  #state: ConnectionState = "connecting";
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** The pending reconnect waits out a 4429 delay: `reconnectNow` must not cut it short. */
  #rateLimited = false;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #fatal: BridgeError | null = null;
  #gone: (() => void)[] = [];
  /** Did the current socket open? Did any socket of this connection ever open (the URL is right)? */
  #opened = false;
  #everOpened = false;
  /** HTTP status of the current socket's failed upgrade, when the WebSocket implementation tells. */
  #upgradeStatus: number | undefined;
  #probing = false;
  /** A fresh token was fetched after a 4401 and has not been welcomed yet: a second 4401 is fatal. */
  #authRetry = false;

  constructor(url: string, WebSocket: WebSocketConstructor, opts: ConnectionOptions, handlers: ConnectionHandlers) {
    this.#url = url;
    this.#WebSocket = WebSocket;
    this.#opts = opts;
    this.#h = handlers;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Why the connection gave up for good, if it did. */
  get fatal(): BridgeError | null {
    return this.#fatal;
  }

  start(): void {
    this.#connect();
  }

  /** Send when welcomed; dropped otherwise (sync is regenerated after reconnecting). */
  send(msg: ClientMessage): void {
    if (this.#ws && this.#state === "online") this.#sendOn(this.#ws, msg);
  }

  /** Skip the rest of the backoff delay (e.g. the browser says it is online again). */
  reconnectNow(): void {
    if (this.#reconnectTimer === undefined || this.#stopped || this.#fatal || this.#rateLimited) return;
    clearTimeout(this.#reconnectTimer);
    this.#connect();
  }

  /**
   * The browser says the network is gone: drop the socket now instead of
   * waiting for a ping to time out, so the status says "offline" at once and
   * edits are kept for the reconnect (which `online` or the backoff starts).
   */
  networkLost(): void {
    const ws = this.#ws;
    if (ws && !this.#stopped) this.#abandon(ws, 1001, "network lost");
  }

  /** Stop for good: `bye` if welcomed, then wait (bounded) for the server to close. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const ws = this.#ws;
    if (ws) {
      const online = this.#state === "online";
      const gone = new Promise<void>((resolve) => this.#gone.push(resolve));
      if (online) this.#sendOn(ws, { t: "bye" });
      // The server answers bye by closing with 1000; don't wait forever.
      const timer = setTimeout(() => this.#abandon(ws, 1000, "bye"), online ? 2000 : 0);
      await gone;
      clearTimeout(timer);
    }
    if (!this.#fatal) this.#setState("offline");
  }

  #connect(): void {
    this.#reconnectTimer = undefined;
    if (this.#stopped || this.#fatal) return;
    this.#setState("connecting");
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (e) {
      this.#h.error(new BridgeError("connect", `cannot open WebSocket: ${String(e)}`, { cause: e }));
      this.#setState("offline");
      this.#scheduleReconnect(false);
      return;
    }
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev: { data: unknown }) => this.#onFrame(ws, ev.data);
    ws.onclose = (ev: { code?: number; reason?: string }) => this.#onClose(ws, ev.code ?? 1006, ev.reason ?? "");
    this.#opened = false;
    this.#upgradeStatus = undefined;
    ws.onerror = (ev: unknown) => {
      // A close event follows; keep what it cannot say: the HTTP status.
      if (ws === this.#ws && !this.#opened) this.#upgradeStatus = httpStatusOfError(ev) ?? this.#upgradeStatus;
    };
  }

  #onOpen(ws: WebSocketLike): void {
    if (ws !== this.#ws) return;
    this.#opened = this.#everOpened = true;
    const hello = this.#h.hello();
    if (hello instanceof Promise) {
      hello.then(
        (msg) => {
          if (ws === this.#ws) this.#sendOn(ws, msg);
        },
        (e) => {
          if (ws !== this.#ws) return;
          this.#h.error(bridgeError("unauthorized", `cannot get a token: ${String(e)}`, { cause: e }));
          this.#abandon(ws, 1000, "no token");
        },
      );
    } else this.#sendOn(ws, hello);
    this.#handshakeTimer = setTimeout(() => this.#abandon(ws, 4408, "handshake timeout"), this.#opts.handshakeTimeout);
  }

  #onFrame(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.#ws) return;
    const bytes = frameBytes(data);
    if (!bytes) {
      this.#h.error(new BridgeError("protocol", "server sent a non-binary frame"));
      return;
    }
    let msg: ServerMessage | null;
    let unknownType = "";
    try {
      msg = decodeServerMessage(bytes, (t) => (unknownType = t));
    } catch (e) {
      const detail = e instanceof ProtocolError ? e.message : String(e);
      this.#h.error(new BridgeError("protocol", `bad frame from server: ${detail}`, { cause: e }));
      return;
    }
    if (!msg) {
      // A type this client does not know (v1 servers send none unless a
      // capability was agreed): not acted on, but reported, not silently lost.
      this.#h.error(new BridgeError("protocol", `server sent a message of unknown type ${JSON.stringify(unknownType)}; ignored`));
      return;
    }
    if (msg.t === "welcome") this.#onWelcome(ws, msg);
    else if (msg.t === "error" || this.#state === "online") this.#h.message(msg);
    else this.#h.error(new BridgeError("protocol", `server sent ${msg.t} before welcome`));
  }

  #onWelcome(ws: WebSocketLike, msg: WelcomeMsg): void {
    clearTimeout(this.#handshakeTimer);
    if (msg.v !== PROTOCOL_VERSION) {
      this.#giveUp(new BridgeError("version", `server speaks protocol v${msg.v}, this client v${PROTOCOL_VERSION}`));
      this.#abandon(ws, 1000, "unsupported protocol version");
      return;
    }
    this.#attempt = 0;
    this.#authRetry = false;
    this.#state = "online";
    this.#h.welcome(msg);
    this.#h.state("online");
  }

  #onClose(ws: WebSocketLike, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#handshakeTimer);
    const opened = this.#opened;
    this.#opened = false;
    this.#h.down();
    const waiters = this.#gone;
    this.#gone = [];
    for (const w of waiters) w();
    if (this.#stopped || this.#fatal) {
      if (!this.#fatal) this.#setState("offline");
      return;
    }
    if (!opened) {
      this.#onFailedUpgrade();
      return;
    }
    if (code === 4401) {
      if (this.#authRetry) {
        // The fresh token fetched after the last 4401 was refused as well.
        this.#giveUp(closeError(code, reason));
        return;
      }
      if (this.#state === "online") this.#setState("connecting");
      // A token source that now has a different token gets one more try.
      this.#h.refreshToken().then(
        (fresh) => {
          if (this.#stopped || this.#fatal) return;
          if (fresh) {
            this.#authRetry = true;
            this.#setState("offline");
            this.#scheduleReconnect(true);
          } else this.#giveUp(closeError(code, reason));
        },
        (e) => {
          if (this.#stopped || this.#fatal) return;
          this.#giveUp(bridgeError("unauthorized", `token refresh failed: ${String(e)}`, { closeCode: code, cause: e }));
        },
      );
      return;
    }
    if (FATAL_CLOSE_CODES.has(code)) {
      this.#giveUp(closeError(code, reason));
      return;
    }
    if (code === 1011) this.#h.error(closeError(code, reason));
    this.#setState("offline");
    if (code === 4429) {
      // Rate limited: come back after the delay the server named (plus
      // jitter), not at once; without a number, back off as usual.
      const wait = rateLimitDelay(reason);
      if (wait !== undefined) {
        this.#scheduleReconnect(false, wait + Math.random() * this.#opts.baseDelay);
        return;
      }
    }
    // 1001 (server going away) and 4409 (too slow: resync): come back at
    // once, with jitter so a restarting server is not hit by everyone together.
    this.#scheduleReconnect(QUICK_RECONNECT_CODES.has(code));
  }

  /**
   * The socket closed before it opened. An HTTP status we know (the `ws`
   * package reports it) decides at once; without one (browsers hide it),
   * until some socket has opened, `probe` asks the server over HTTP.
   */
  #onFailedUpgrade(): void {
    const status = this.#upgradeStatus;
    this.#upgradeStatus = undefined;
    if (status !== undefined) {
      if (isFatalHttpStatus(status)) {
        this.#giveUp(upgradeError(status));
        return;
      }
    } else if (!this.#everOpened && this.#h.probe && !this.#probing) {
      // Stay "connecting" while the probe runs, so open() does not settle
      // with local state just before the verdict.
      this.#probing = true;
      this.#h
        .probe()
        .catch((): ProbeVerdict => ({ fatal: false }))
        .then((verdict) => {
          this.#probing = false;
          if (this.#stopped || this.#fatal || this.#ws) return;
          if (verdict.fatal && !this.#everOpened) this.#giveUp(upgradeError(verdict.status));
          else {
            this.#setState("offline");
            this.#scheduleReconnect(false);
          }
        });
      return;
    }
    this.#setState("offline");
    this.#scheduleReconnect(false);
  }

  #giveUp(err: BridgeError): void {
    if (this.#fatal) return;
    this.#fatal = err;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#setState("failed");
    this.#h.fatal(err);
  }

  /** Drop a socket now, without waiting for its close event. */
  #abandon(ws: WebSocketLike, code: number, reason: string): void {
    try {
      ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    } catch {
      // already closed
    }
    this.#onClose(ws, code, reason);
  }

  #scheduleReconnect(quick: boolean, after?: number): void {
    clearTimeout(this.#reconnectTimer);
    this.#rateLimited = after !== undefined;
    const { baseDelay, maxDelay } = this.#opts;
    const delay =
      after !== undefined ? after : quick && this.#attempt === 0 ? Math.random() * baseDelay : backoff(this.#attempt, baseDelay, maxDelay);
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => {
      this.#rateLimited = false;
      this.#connect();
    }, delay);
  }

  #sendOn(ws: WebSocketLike, msg: ClientMessage): void {
    if (ws.readyState !== OPEN) return;
    try {
      ws.send(encodeClientMessage(msg));
    } catch (e) {
      this.#h.error(new BridgeError("send", `cannot send ${msg.t}: ${String(e)}`, { cause: e }));
    }
  }

  #setState(state: ConnectionState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#h.state(state);
  }
}

function closeError(code: number, reason: string): BridgeError {
  const what = CLOSE_CODE_NAMES[code] ?? `closed_${code}`;
  return bridgeError(what, reason || `server closed the connection: ${what} (${code})`, { closeCode: code });
}

function upgradeError(status: number): BridgeError {
  return new BridgeError("http_error", `the server answered the WebSocket upgrade with HTTP ${status}: is the URL right?`, {
    httpStatus: status,
  });
}
