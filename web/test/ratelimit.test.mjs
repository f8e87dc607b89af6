// Close 4429 (rate limited): the client waits the delay the close reason names
// ("retry after N s: ..."), with jitter, before it reconnects; not at once.

import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { startFakeServer } from "./fake.mjs";
import { Clients, record, staysTrue, waitFor, waitStatus } from "./helpers.mjs";

const clients = new Clients();
const fakes = [];
afterEach(async () => {
  await clients.closeAll(200);
  for (const f of fakes.splice(0)) await f.close();
});
after(() => clients.closeAll(200));

const FAST = { reconnect: { baseDelay: 20, maxDelay: 100 }, openTimeout: 2000, autoFlushDelay: false };

test("close 4429 with a delay: no reconnect before it, then one, and the documents re-open", async () => {
  const fake = await startFakeServer(async (peer) => {
    await peer.handshake();
    if (fake.peers.length === 1) {
      await peer.expect("open");
      peer.close(4429, "retry after 1 s: over 200 frames/s");
    }
  });
  fakes.push(fake);
  const c = clients.make(fake.url, FAST);
  const errors = record(c, ["error"]);
  await c.open("limited");
  await waitFor(() => c.status === "offline", undefined, "offline after 4429");
  const closedAt = Date.now();
  // With the usual quick reconnect (20 ms base) it would be back long before this.
  await staysTrue(() => fake.peers.length === 1, 700, "no reconnect within the delay");
  const second = await fake.peer(1);
  assert.ok(Date.now() - closedAt >= 900, `reconnected after ${Date.now() - closedAt} ms, asked for 1 s`);
  assert.equal((await second.expect("open")).doc, "limited");
  await waitStatus(c, "saved");
  assert.deepEqual(errors.of("error"), []);
});
