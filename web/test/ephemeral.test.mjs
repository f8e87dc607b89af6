// Ephemeral (presence) messages through a real bridge: relayed to the other
// peers on the same document, not back to the sender, not to other
// documents, never stored.

import assert from "node:assert/strict";
import { test } from "node:test";
import { useBridge, nextEvent, record, waitFor } from "./helpers.mjs";

const env = useBridge();

test("ephemeral messages reach the other peers on the document, and only them", async () => {
  const ann = await env.clients.online(env.bridge.wsUrl, { peerId: "ann" });
  const bob = await env.clients.online(env.bridge.wsUrl, { peerId: "bob" });
  const cat = await env.clients.online(env.bridge.wsUrl, { peerId: "cat" });
  await Promise.all([ann.open("eph-room"), ann.open("eph-other"), bob.open("eph-room"), cat.open("eph-other")]);
  const annGot = record(ann, ["ephemeral"]);
  const catGot = record(cat, ["ephemeral"]);

  const toBob = nextEvent(bob, "ephemeral");
  assert.equal(ann.ephemeral("eph-room", { name: "Ann", cursor: 7 }), true);
  const msg = await toBob;
  assert.equal(msg.doc, "eph-room");
  assert.equal(msg.from, "ann");
  assert.deepEqual(msg.value, { name: "Ann", cursor: 7 });
  assert.ok(msg.data instanceof Uint8Array);

  // Raw bytes go through as they are, via the document's own method too.
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const raw = nextEvent(bob, "ephemeral");
  assert.equal(ann.docs.get("eph-room").ephemeral(bytes), true);
  assert.deepEqual([...(await raw).data], [...bytes]);

  // An empty payload and MessagePack nil go through too.
  const empty = nextEvent(bob, "ephemeral");
  ann.ephemeral("eph-room", new Uint8Array(0));
  assert.equal((await empty).data.length, 0);
  const nil = nextEvent(bob, "ephemeral");
  ann.ephemeral("eph-room", null);
  assert.equal((await nil).value, null);

  // Frames from one peer are relayed in order: once cat has ann's message
  // on eph-other, it would already have had any from eph-room.
  const onOther = nextEvent(cat, "ephemeral");
  ann.ephemeral("eph-other", { here: true });
  assert.deepEqual((await onOther).value, { here: true });
  assert.deepEqual(
    catGot.of("ephemeral").map((e) => e.doc),
    ["eph-other"],
    "cat, on another document, got nothing from eph-room",
  );

  // Likewise ann never hears her own messages: when bob's reply arrives, none came back.
  const reply = nextEvent(ann, "ephemeral");
  bob.ephemeral("eph-room", { name: "Bob" });
  const back = await reply;
  assert.equal(back.from, "bob");
  assert.deepEqual(annGot.of("ephemeral").map((e) => e.from), ["bob"]);

  // Presence is never stored.
  assert.deepEqual(await env.bridge.doc("eph-room"), {});
});

test("ephemeral() is refused while not connected, and works again after reconnecting", async () => {
  const a = await env.clients.online(env.bridge.wsUrl, { peerId: "eph-a" });
  const b = await env.clients.online(env.bridge.wsUrl, { peerId: "eph-b" });
  await Promise.all([a.open("eph-rc"), b.open("eph-rc")]);
  await env.bridge.kill9();
  await nextEvent(a, "status", { filter: (s) => s === "offline" });
  assert.equal(a.ephemeral("eph-rc", { lost: true }), false);

  await env.bridge.start();
  // Both re-open the document on their new connections by themselves; once
  // each has synced it, the server has each one subscribed again.
  const [da, db] = [a.docs.get("eph-rc"), b.docs.get("eph-rc")];
  await waitFor(() => da.synced && db.synced, undefined, "both re-synced after the restart");
  const got = nextEvent(b, "ephemeral");
  assert.equal(a.ephemeral("eph-rc", { back: true }), true);
  const e = await got;
  assert.equal(e.from, "eph-a");
  assert.deepEqual(e.value, { back: true });
});
