// The socket side of a client: connect, `hello`/`welcome` handshake, decode
// frames, and reconnect with exponential backoff and jitter according to the
// close code. It knows nothing about documents.

import { BridgeError } from "./errors.js";
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

/** "online" means welcomed. */
export type ConnectionState = "connecting" | "online" | "offline";

export interface ConnectionHandlers {
  /** The `hello` to send on each new socket. */
  hello(): HelloMsg;
  /** A socket was welcomed; state is already "online" (so sends go out). */
  welcome(msg: WelcomeMsg): void;
  /** Any server message other than `welcome` (`error` may come before it). */
  message(msg: ServerMessage): void;
  /** The current socket is gone (called before the state turns "offline"). */
  down(): void;
  state(state: ConnectionState): void;
  /** Something went wrong that the caller may want to hear about. */
  error(err: BridgeError): void;
  /** The server refused us for good (4401, 4403, protocol version): no more reconnects. */
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
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #fatal: BridgeError | null = null;
  #gone: (() => void)[] = [];

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
    if (this.#reconnectTimer === undefined || this.#stopped || this.#fatal) return;
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
    this.#setState("offline");
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
    ws.onerror = () => {}; // a close event follows
  }

  #onOpen(ws: WebSocketLike): void {
    if (ws !== this.#ws) return;
    this.#sendOn(ws, this.#h.hello());
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
    this.#state = "online";
    this.#h.welcome(msg);
    this.#h.state("online");
  }

  #onClose(ws: WebSocketLike, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#handshakeTimer);
    this.#h.down();
    const waiters = this.#gone;
    this.#gone = [];
    for (const w of waiters) w();
    if (this.#stopped || this.#fatal) {
      this.#setState("offline");
      return;
    }
    if (code === 4401 || code === 4403) {
      const what = code === 4401 ? "unauthorized" : "forbidden";
      this.#giveUp(new BridgeError(what, reason || `server closed the connection: ${what}`, { closeCode: code }));
      return;
    }
    if (code === 4400 || code === 1009 || code === 1011) {
      const what = code === 4400 ? "protocol" : code === 1009 ? "too_big" : "server_error";
      this.#h.error(new BridgeError(what, reason || `server closed the connection (${code})`, { closeCode: code }));
    }
    this.#setState("offline");
    // 1001 (server going away) and 4409 (too slow: resync): come back at once,
    // with jitter so a restarting server is not hit by everyone together.
    this.#scheduleReconnect(code === 1001 || code === 4409);
  }

  #giveUp(err: BridgeError): void {
    this.#fatal = err;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#setState("offline");
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

  #scheduleReconnect(quick: boolean): void {
    clearTimeout(this.#reconnectTimer);
    const { baseDelay, maxDelay } = this.#opts;
    const delay = quick && this.#attempt === 0 ? Math.random() * baseDelay : backoff(this.#attempt, baseDelay, maxDelay);
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
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
