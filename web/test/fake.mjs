// WebSocket stand-ins for the Node client tests, on 127.0.0.1:0 with the
// `ws` package:
//
// - startFakeServer(onConnection): a scripted server that records the frames
//   a client sends and can send it anything at all (valid messages, garbage,
//   text, unknown types, close codes);
// - startProxy(targetUrl): a recording proxy in front of a real bridge that
//   can also hold back the client's frames, to show what the client sends
//   and in which order, and what happens when the server gets it late.

import { once } from "node:events";
import { encode } from "@msgpack/msgpack";
import { WebSocket, WebSocketServer } from "ws";
import { Automerge, decodeClientMessage, decodeServerMessage } from "../dist/client.js";
import { waitFor } from "./helpers.mjs";

async function listen() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  return wss;
}

async function shutDown(wss) {
  for (const ws of wss.clients) ws.terminate();
  await new Promise((resolve) => wss.close(() => resolve()));
}

function decodeOr(decoder, data, isBinary) {
  if (!isBinary) return { t: "<text>", text: data.toString() };
  try {
    return decoder(new Uint8Array(data)) ?? { t: "<unknown>" };
  } catch (e) {
    return { t: "<undecodable>", error: String(e) };
  }
}

/** The sync message of an empty document: "I have nothing", so a client's open completes. */
export function emptySyncMessage() {
  const [, msg] = Automerge.generateSyncMessage(Automerge.init(), Automerge.initSyncState());
  return msg;
}

/**
 * One client connected to the fake server. Unless told otherwise it behaves
 * like a (forgetful) bridge in two ways, so tests do not wait on timeouts:
 * it answers `open` with an empty document's sync message and `bye` with
 * close 1000.
 */
export class FakePeer {
  /** Decoded client frames, in order. */
  frames = [];
  #used = new Set();

  constructor(ws, { answerOpen = true, answerBye = true } = {}) {
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("message", (data, isBinary) => {
      const msg = decodeOr(decodeClientMessage, data, isBinary);
      this.frames.push(msg);
      if (answerOpen && msg.t === "open") this.send({ t: "sync", doc: msg.doc, data: emptySyncMessage() });
      if (answerBye && msg.t === "bye") ws.close(1000, "bye");
    });
  }

  /** The next not yet taken client frame of type `t` (waits for it, bounded). */
  async expect(t, timeout) {
    const i = await waitFor(
      () => {
        const at = this.frames.findIndex((f, i) => f.t === t && !this.#used.has(i));
        return at >= 0 ? at + 1 : 0;
      },
      timeout,
      `a "${t}" frame from the client (got ${this.frames.map((f) => f.t)})`,
    );
    this.#used.add(i - 1);
    return this.frames[i - 1];
  }

  /** Send `msg` as one MessagePack binary frame, whatever it holds. */
  send(msg) {
    this.ws.send(encode(msg), { binary: true });
  }

  sendBytes(bytes) {
    this.ws.send(bytes, { binary: true });
  }

  sendText(text) {
    this.ws.send(text, { binary: false });
  }

  welcome(extra = {}) {
    this.send({ t: "welcome", v: 1, peer: "fake-server", session: "fake-session", caps: [], limits: {}, ...extra });
  }

  /** Wait for `hello`, answer `welcome`; returns the hello. */
  async handshake(extra = {}) {
    const hello = await this.expect("hello");
    this.welcome(extra);
    return hello;
  }

  close(code, reason = "") {
    this.ws.close(code, reason);
  }
}

/**
 * A scripted server. `onConnection(peer)` runs for every connection
 * (`peerOptions` go to each FakePeer);
 * `fake.peers` lists them in order, `fake.url` is the URL to give a client.
 */
export async function startFakeServer(onConnection = () => {}, peerOptions = {}) {
  const wss = await listen();
  const fake = {
    url: `ws://127.0.0.1:${wss.address().port}/sync`,
    peers: [],
    /** The n-th connection (0-based), waiting for it if need be. */
    peer: (n = 0, timeout) => waitFor(() => fake.peers[n], timeout, `connection #${n + 1} to the fake server`),
    close: () => shutDown(wss),
  };
  wss.on("connection", (ws) => {
    const peer = new FakePeer(ws, peerOptions);
    fake.peers.push(peer);
    Promise.resolve()
      .then(() => onConnection(peer))
      .catch((e) => {
        peer.error = e;
      });
  });
  return fake;
}

/**
 * A proxy to `targetUrl` (a real bridge). `proxy.frames` holds every frame
 * both ways, decoded ({dir: "c2s" | "s2c", msg}), plus {dir: "close", by,
 * code, reason} records. `proxy.hold(pred)` keeps back client frames for
 * which `pred(msg)` holds (other frames go on ahead of them), and
 * `proxy.release()` sends them on, in order.
 */
export async function startProxy(targetUrl) {
  const wss = await listen();
  const proxy = {
    url: `ws://127.0.0.1:${wss.address().port}/sync`,
    frames: [],
    held: [],
    holding: null,
    hold(pred) {
      this.holding = pred;
    },
    release() {
      this.holding = null;
      const held = this.held;
      this.held = [];
      for (const { upstream, data } of held) if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: true });
    },
    sent: (t) => proxy.frames.filter((f) => f.dir === "c2s" && f.msg.t === t).map((f) => f.msg),
    received: (t) => proxy.frames.filter((f) => f.dir === "s2c" && f.msg.t === t).map((f) => f.msg),
    close: () => shutDown(wss),
  };
  wss.on("connection", (client) => {
    const upstream = new WebSocket(targetUrl);
    const early = [];
    upstream.on("open", () => {
      for (const data of early.splice(0)) upstream.send(data, { binary: true });
    });
    client.on("message", (data, isBinary) => {
      const msg = decodeOr(decodeClientMessage, data, isBinary);
      proxy.frames.push({ dir: "c2s", msg });
      if (proxy.holding?.(msg)) proxy.held.push({ upstream, data });
      else if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
      else early.push(data);
    });
    upstream.on("message", (data, isBinary) => {
      proxy.frames.push({ dir: "s2c", msg: decodeOr(decodeServerMessage, data, isBinary) });
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    });
    upstream.on("close", (code, reason) => {
      proxy.frames.push({ dir: "close", by: "server", code, reason: reason.toString() });
      if (code === 1000 || (code >= 3000 && code < 5000)) client.close(code, reason);
      else client.terminate();
    });
    upstream.on("error", () => client.terminate());
    client.on("close", (code, reason) => {
      proxy.frames.push({ dir: "close", by: "client", code, reason: reason.toString() });
      if (upstream.readyState === WebSocket.OPEN) upstream.close(1000);
      else upstream.terminate();
    });
  });
  return proxy;
}
