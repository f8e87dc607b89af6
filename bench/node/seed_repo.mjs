// Put a saved Automerge document into an automerge-repo storage directory
// (before the reference server starts on it), and print its automerge URL.
//
//   node seed_repo.mjs DATA_DIR FILE
import { readFileSync } from "node:fs";
import { Repo } from "@automerge/automerge-repo";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";

const [dataDir, file] = process.argv.slice(2);
const repo = new Repo({ storage: new NodeFSStorageAdapter(dataDir), network: [] });
const handle = repo.import(new Uint8Array(readFileSync(file)));
await repo.flush();
process.stdout.write(JSON.stringify({ event: "result", url: handle.url }) + "\n");
await repo.shutdown();
process.exit(0);
