// A real bridge process for the Node client tests: `python -m bridge.cli
// serve` from the repo's .venv on a free 127.0.0.1 port with a temporary
// data directory, plus kill -9 / restart on the same port and directory and
// the HTTP look-ups the tests verify against.
//
//   const bridge = await startBridge();   // in before()
//   ... bridge.wsUrl, bridge.httpUrl, await bridge.kill9(), await bridge.start()
//   await bridge.dispose();               // in after(): stop it, delete the data

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const PYTHON = process.env.BRIDGE_PYTHON ?? join(ROOT, ".venv", "bin", "python");

const STARTUP_TIMEOUT = 30_000;
const STOP_TIMEOUT = 10_000;
/** Keep this much of the server's stderr, to show when something fails. */
const LOG_TAIL = 20_000;

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set();
const dataDirs = new Set();
// Never leave a bridge or its data behind, even when a test file dies
// half-way or the test runner stops it (SIGTERM skips "exit" handlers).
const killAll = () => {
  for (const child of live) child.kill("SIGKILL");
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
};
process.on("exit", killAll);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (signal === "SIGTERM" ? 15 : 2));
  });
}

export class Bridge {
  /** @param {{port: number, dataDir: string, extraArgs?: string[]}} opts */
  constructor({ port, dataDir, extraArgs = [] }) {
    this.port = port;
    this.dataDir = dataDir;
    this.extraArgs = extraArgs;
    this.httpUrl = `http://127.0.0.1:${port}`;
    this.wsUrl = `ws://127.0.0.1:${port}/sync`;
    /** @type {import("node:child_process").ChildProcess | null} */
    this.child = null;
    this.log = "";
    this.starts = 0;
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Spawn the server (same port and data dir every time) and wait for /healthz. */
  async start() {
    if (this.running) throw new Error("bridge is already running");
    const child = spawn(
      PYTHON,
      ["-m", "bridge.cli", "serve", "--host", "127.0.0.1", "--port", String(this.port),
        "--data-dir", this.dataDir, "--log-level", "warning", ...this.extraArgs],
      { cwd: ROOT, env: { ...process.env, PYTHONUNBUFFERED: "1" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    this.starts++;
    live.add(child);
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.exited = exited;
    exited.then(() => live.delete(child));
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-LOG_TAIL);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);

    const deadline = Date.now() + STARTUP_TIMEOUT;
    let ended = null;
    exited.then((e) => (ended = e));
    for (;;) {
      if (ended) {
        throw new Error(`bridge exited during startup (${JSON.stringify(ended)}):\n${this.log}`);
      }
      try {
        const res = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) {
          const health = await res.json();
          this.peer = health.peer;
          return health;
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`bridge not healthy on ${this.httpUrl} after ${STARTUP_TIMEOUT} ms:\n${this.log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** `kill -9`: no shutdown, no flushing, sockets die with the process. */
  async kill9() {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill("SIGKILL");
    await child.exited;
  }

  /** SIGTERM (graceful: uvicorn closes sockets, the hub drains), SIGKILL if it hangs. */
  async stop() {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT);
    await child.exited;
    clearTimeout(timer);
  }

  /** Stop (kill -9 unless `graceful`) and start again on the same port and data dir. */
  async restart({ graceful = false } = {}) {
    await (graceful ? this.stop() : this.kill9());
    return this.start();
  }

  /** Stop the server and delete its data directory. */
  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
    dataDirs.delete(this.dataDir);
  }

  // ------------------------------------------------------------ HTTP

  async get(path) {
    return fetch(`${this.httpUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
  }

  /** GET /docs/{id} as JSON, or null when the server has no such document. */
  async doc(docId) {
    const res = await this.get(`/docs/${encodeURIComponent(docId)}`);
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`GET /docs/${docId}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** GET /docs/{id}/durable?heads=...: {durable: bool, heads: [hex]}. */
  async durable(docId, heads) {
    const res = await this.get(`/docs/${encodeURIComponent(docId)}/durable?heads=${heads.join(",")}`);
    if (!res.ok) throw new Error(`GET /docs/${docId}/durable: ${res.status} ${await res.text()}`);
    return res.json();
  }
}

/**
 * Start a bridge on a free port with a fresh temporary data directory.
 * A port taken between choosing and binding it is retried with another one.
 */
export async function startBridge({ extraArgs = [] } = {}) {
  if (!existsSync(PYTHON)) throw new Error(`no Python at ${PYTHON}: run \`make setup\` (or set BRIDGE_PYTHON)`);
  const dataDir = mkdtempSync(join(tmpdir(), "bridge-node-test-"));
  dataDirs.add(dataDir);
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const bridge = new Bridge({ port: await freePort(), dataDir, extraArgs });
    try {
      await bridge.start();
      return bridge;
    } catch (e) {
      lastError = e;
      await bridge.kill9();
      if (!/address already in use/i.test(bridge.log)) break;
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
  throw lastError;
}
