// The reference: the stock automerge-repo sync server setup, as its README and
// the automerge-repo-sync-server project wire it up: a Repo with a WebSocket
// server adapter, NodeFS storage and a share policy that announces nothing
// (it answers requests for documents it has). Defaults everywhere else.
//
//   node repo_server.mjs PORT DATA_DIR
//
// Prints {"event":"ready"} once listening on 127.0.0.1:PORT; exits on SIGTERM.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { WebSocketServer } from "ws";

const [port, dataDir] = process.argv.slice(2);

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(port) });
const repo = new Repo({
  network: [new WebSocketServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dataDir),
  peerId: `storage-server-bench-${process.pid}`,
  sharePolicy: async () => false,
});

wss.on("listening", () => process.stdout.write(JSON.stringify({ event: "ready" }) + "\n"));

async function stop() {
  await repo.flush().catch(() => {});
  await repo.shutdown().catch(() => {});
  wss.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
