// Create an empty document on the automerge-repo server and print its URL.
//
//   node create_doc.mjs WS_URL
import { out, repoClient, waitOnServer, exit } from "./common.mjs";

const [url] = process.argv.slice(2);
const { repo, close } = await repoClient(url, "creator");
const handle = repo.create({});
await waitOnServer(url, handle.url);
await repo.flush();
out({ event: "result", url: handle.url });
await close();
exit(0);
