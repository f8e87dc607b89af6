// Scenario 4, durable acknowledgement, one edit at a time.
//  bridge: edit, then `flush`; time until `flushed` (the server fsync'd it).
//  repo:   no durable ack exists; time from the edit until the server's
//          storage directory holds a chunk containing the change (written
//          with fs.writeFile, not fsync'd), found by polling the directory.
//
//   node durable.mjs --target bridge|repo --url WS_URL --rounds N [--store DIR] [--pause MS]
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Automerge, BridgePeer, deadline, now, options, out, repoClient, sleep, waitOnServer, exit } from "./common.mjs";

const opts = { rounds: "50", pause: "0", ...options() };
const rounds = Number(opts.rounds);
deadline(120 + rounds);
const times = [];

if (opts.target === "bridge") {
  const peer = await new BridgePeer(opts.url, "durable-node").connect();
  await peer.open("durable-node");
  for (let i = 0; i < rounds; i++) {
    peer.change("durable-node", (d) => (d.n = i));
    const t0 = now();
    await peer.flush("durable-node");
    times.push(now() - t0);
    if (opts.pause > 0) await sleep(Number(opts.pause));
  }
  peer.close();
} else {
  const { repo, close } = await repoClient(opts.url, "durable-repo");
  const handle = repo.create({ n: -1 });
  await waitOnServer(opts.url, handle.url);
  const id = handle.documentId;
  const docDir = path.join(opts.store, id.slice(0, 2), id.slice(2));
  const stored = { doc: Automerge.init(), files: new Map() };
  for (let i = 0; i < rounds; i++) {
    handle.change((d) => (d.n = i));
    const t0 = now();
    const heads = Automerge.getHeads(handle.doc());
    while (!(await storageHas(docDir, stored, heads))) {
      if (now() - t0 > 10000) throw new Error("change never reached the storage directory");
      await sleep(1);
    }
    times.push(now() - t0);
    await sleep(Number(opts.pause));
  }
  await close();
}
out({ event: "result", ms: times });
exit(0);

/**
 * Read chunk files not read yet, or grown since (skipping sync states): does
 * the stored document hold `heads`? writeFile is not atomic, so a file can be
 * read half-written; it is read again once its size changes.
 */
async function storageHas(docDir, stored, heads) {
  for (const kind of ["snapshot", "incremental"]) {
    let names = [];
    try {
      names = await readdir(path.join(docDir, kind));
    } catch {
      continue;
    }
    for (const name of names) {
      const file = path.join(docDir, kind, name);
      try {
        const { size } = await stat(file);
        if (stored.files.get(file) === size) continue;
        const data = await readFile(file);
        stored.files.set(file, data.length);
        stored.doc = Automerge.loadIncremental(stored.doc, new Uint8Array(data));
      } catch {
        // Gone (compacted) or not a whole chunk yet: next poll.
      }
    }
  }
  return Automerge.hasHeads(stored.doc, heads);
}
