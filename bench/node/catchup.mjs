// Cold catch-up: a new client fetches a whole document. Repeats with a fresh
// client (fresh connection, empty document) each time; the first fetch finds
// the server cold (document on disk only), later ones warm.
//
//   node catchup.mjs --target bridge|repo --url WS_URL --doc DOC_ID_OR_AUTOMERGE_URL
//                    --heads HEX,HEX --repeat K
import { Automerge, BridgePeer, deadline, now, options, out, repoClient, repoFind, socketBytes, withTimeout, exit } from "./common.mjs";

const opts = { repeat: "3", ...options() };
deadline(300);
const expected = opts.heads.split(",");
const hasAll = (doc) => {
  const heads = new Set(Automerge.getHeads(doc));
  return expected.every((h) => heads.has(h));
};

async function fetchBridge(i) {
  const t0 = now();
  const peer = await new BridgePeer(opts.url, `catchup-${i}`).connect();
  await withTimeout(
    new Promise((resolve) => {
      peer.open(opts.doc, (doc) => hasAll(doc) && resolve());
    }),
    120000,
    "bridge catch-up",
  );
  const ms = now() - t0;
  const bytes = socketBytes(peer.ws);
  peer.close();
  return { ms, bytes };
}

async function fetchRepo(i) {
  const t0 = now();
  const { repo, adapter, close } = await repoClient(opts.url, `catchup-${i}`);
  const handle = await repoFind(repo, opts.doc);
  await withTimeout(
    new Promise((resolve) => {
      if (hasAll(handle.doc())) return resolve();
      handle.on("change", ({ doc }) => hasAll(doc) && resolve());
    }),
    120000,
    "repo catch-up",
  );
  const ms = now() - t0;
  const bytes = socketBytes(adapter.socket);
  await close();
  return { ms, bytes };
}

const runs = [];
for (let i = 0; i < Number(opts.repeat); i++) {
  runs.push(await (opts.target === "bridge" ? fetchBridge(i) : fetchRepo(i)));
}
out({ event: "result", runs });
exit(0);
