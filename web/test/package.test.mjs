// The npm package: the library entry ("automerge-bridge-client") imports the
// application's own @automerge/automerge (a peer dependency) instead of
// bundling one, so documents pass freely between app and client; the
// "./standalone" entry is the self-contained bundle served at /client.js.

import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as AppAutomerge from "@automerge/automerge";
import { WebSocket } from "ws";
import { ROOT } from "./bridge.mjs";
import { useBridge, waitStatus, within } from "./helpers.mjs";

const env = useBridge();
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

test("package.json: a publishable package with Automerge as a peer dependency", () => {
  assert.equal(pkg.name, "automerge-bridge-client");
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.license, "MIT");
  assert.ok(pkg.peerDependencies["@automerge/automerge"].startsWith("^3."));
  assert.equal(pkg.dependencies?.["@automerge/automerge"], undefined, "not a regular dependency");
  assert.ok(pkg.dependencies["@msgpack/msgpack"]);
  assert.ok(pkg.scripts.prepack || pkg.scripts.prepare, "npm pack builds the code");
  for (const entry of [pkg.exports["."], pkg.exports["./standalone"]]) {
    for (const file of [entry.import, entry.types]) assert.ok(statSync(join(ROOT, file)).isFile(), file);
  }
});

test("the library entry imports the app's Automerge and bundles no wasm", async () => {
  const lib = await import("automerge-bridge-client"); // the package's own exports
  assert.equal(lib.Automerge.init, AppAutomerge.init, "the same Automerge module instance as the app's");
  const code = readFileSync(join(ROOT, pkg.exports["."].import), "utf8");
  assert.match(code, /from "@automerge\/automerge"/);
  assert.ok(code.length < 300_000, `no inlined wasm (${code.length} bytes)`);
  const standalone = await import("automerge-bridge-client/standalone");
  assert.equal(typeof standalone.BridgeClient, "function");
});

test("a document made with the app's Automerge syncs through the library client", async () => {
  const { BridgeClient } = await import("automerge-bridge-client");
  const client = new BridgeClient(env.bridge.wsUrl, { WebSocket, storage: false });
  try {
    await waitStatus(client, ["saved", "saving"]);
    const doc = await client.open("lib-doc");
    doc.change((d) => {
      d.list = ["a"];
    });
    await within(doc.flush(), undefined, "flush");
    // The client's value is an ordinary document of the app's Automerge.
    const copy = AppAutomerge.clone(doc.value);
    assert.deepEqual(JSON.parse(JSON.stringify(copy)), { list: ["a"] });
    assert.deepEqual(await env.bridge.doc("lib-doc"), { list: ["a"] });
  } finally {
    await client.close();
  }
});
