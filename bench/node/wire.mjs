// Scenario 5, bytes on the wire per edit: an editor and an observer on one
// document; the editor makes one-character edits, one at a time (each is
// allowed to settle everywhere). Bytes are TCP bytes on each client's socket
// (WebSocket frames + headers) over the edits, divided by the edit count.
//
//   node wire.mjs --target bridge|repo --url WS_URL --edits N --gap MS
import { Automerge, deadline, now, options, out, sleep, waitOnServer, withTimeout, exit } from "./common.mjs";
import { connect, typeChar } from "./clients.mjs";

const opts = { edits: "100", gap: "150", ...options() };
const edits = Number(opts.edits);
deadline(60 + (edits * Number(opts.gap)) / 1000 * 2);

const [editor, observer] = [await connect(opts.target, opts.url, "editor"), await connect(opts.target, opts.url, "observer")];
let ref = "wire";
if (opts.target === "repo") {
  ref = editor.create({ text: "" }).url;
  await waitOnServer(opts.url, ref);
}
const e = await editor.join(ref, () => {});
const o = await observer.join(ref, () => {});
if (opts.target === "bridge") e.change((d) => (d.text = ""));
await withTimeout((async () => { while (typeof o.doc().text !== "string") await sleep(5); })(), 20000, "setup");
await sleep(Number(opts.gap) * 2);

const before = [editor.bytes(), observer.bytes()];
const changeBytes = [];
for (let i = 0; i < edits; i++) {
  const doc = e.change((d) => typeChar(d, "text"));
  changeBytes.push(Automerge.getLastLocalChange(doc ?? e.doc()).length);
  const want = e.doc().text.length;
  const t0 = now();
  while ((o.doc().text ?? "").length < want && now() - t0 < 10000) await sleep(1);
  await sleep(Number(opts.gap)); // let acks, saved heads and throttled rounds finish
}
const after = [editor.bytes(), observer.bytes()];
out({
  event: "result",
  edits,
  change_bytes: changeBytes.reduce((a, b) => a + b, 0) / edits,
  editor_up: (after[0].written - before[0].written) / edits,
  editor_down: (after[0].read - before[0].read) / edits,
  observer_down: (after[1].read - before[1].read) / edits,
  observer_up: (after[1].written - before[1].written) / edits,
});
await Promise.all([editor, observer].map((c) => Promise.resolve(c.close()).catch(() => {})));
exit(0);
