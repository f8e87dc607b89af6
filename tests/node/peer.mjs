// A protocol-v1 peer driven by @automerge/automerge 3.x in Node: raw sync
// messages over the wire, no project JS. Used by tests/test_node_peer.py.
//
//   node peer.mjs WS_URL DOC_ID PEER_NAME N_EDITS EXPECTED_KEYS(comma-separated)
//
// Opens DOC_ID, waits for the server's state, adds keys node_0..node_{N-1}
// and prefixes the shared text with "node ", flushes (waits for `flushed`),
// prints {"event":"flushed"}, then waits until every expected key is present
// and its heads equal the server's durable heads, prints the final document
// and heads as {"event":"done",...}, says bye and exits.
import * as Automerge from "@automerge/automerge";
import { encode, decode } from "@msgpack/msgpack";
import WebSocket from "ws";

const [url, docId, peer, nEdits, expectedArg] = process.argv.slice(2);
const expected = expectedArg ? expectedArg.split(",") : [];
const toHex = (b) => Buffer.from(b).toString("hex");
const fromHex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let doc = Automerge.init();
let syncState = Automerge.initSyncState();
let savedHeads = null;
let flushed = false;
let edited = false;
const ws = new WebSocket(url);
ws.binaryType = "nodebuffer";
const send = (msg) => ws.send(encode(msg));

function pump() {
  for (;;) {
    const [next, message] = Automerge.generateSyncMessage(doc, syncState);
    syncState = next;
    if (!message) break;
    send({ t: "sync", doc: docId, data: message });
  }
}

const sameHeads = (a, b) => a && b && a.length === b.length && [...a].sort().join() === [...b].sort().join();
const hasAll = () => expected.every((k) => k in doc);

function step() {
  const heads = Automerge.getHeads(doc);
  if (!edited && savedHeads && sameHeads(savedHeads, heads)) {
    // We hold the server's state: edit concurrently with the Python peers.
    edited = true;
    for (let i = 0; i < Number(nEdits); i++) {
      doc = Automerge.change(doc, (d) => {
        d[`node_${i}`] = i;
        if (i === 0 && typeof d.text === "string") Automerge.splice(d, ["text"], 0, 0, "node ");
      });
    }
    pump();
    send({ t: "flush", id: 1, docs: { [docId]: Automerge.getHeads(doc).map(fromHex) } });
  }
  if (edited && flushed && hasAll() && sameHeads(savedHeads, heads)) {
    out({ event: "done", doc: JSON.parse(JSON.stringify(doc)), heads });
    send({ t: "bye" });
  }
}

ws.on("open", () => send({ t: "hello", v: [1], peer, caps: [] }));
ws.on("message", (raw) => {
  const msg = decode(raw);
  switch (msg.t) {
    case "welcome":
      send({ t: "open", doc: docId });
      pump();
      break;
    case "sync":
      [doc, syncState] = Automerge.receiveSyncMessage(doc, syncState, msg.data);
      pump();
      break;
    case "saved":
      savedHeads = msg.heads.map(toHex);
      break;
    case "flushed":
      flushed = true;
      out({ event: "flushed", heads: msg.docs[docId].map(toHex) });
      break;
    case "error":
      out({ event: "error", error: msg });
      process.exit(2);
  }
  step();
});
ws.on("close", (code) => process.exit(code === 1000 ? 0 : 3));
setTimeout(() => { out({ event: "timeout", doc: JSON.parse(JSON.stringify(doc)) }); process.exit(4); }, 30000);
