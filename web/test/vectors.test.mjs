// Shared wire vectors (tests/vectors/, format in tests/vectors/__init__.py):
// - every frame the Python codec encoded (py-encoded.json) decodes with the
//   TS codec to its `value` (client frames with decodeClientMessage, server
//   frames with decodeServerMessage);
// - ts-encoded.json, the frames the TS encoder produces, is up to date (the
//   Python tests decode it); regenerate with `npm run vectors`.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { decode } from "@msgpack/msgpack";
import { decodeClientMessage, decodeServerMessage, encodeClientMessage } from "../dist/client.js";
import { ROOT } from "./bridge.mjs";
import { TS_VECTORS, render, toPlain } from "./make-vectors.mjs";

const load = (name) => JSON.parse(readFileSync(join(ROOT, "tests", "vectors", name), "utf8")).frames;
const fromHex = (h) => Uint8Array.from(Buffer.from(h, "hex"));

/** Heads fields: {"$bytes"} lists on the wire, hex strings in the TS API. */
function hexHeads(list) {
  return list.map((h) => h.$bytes);
}

/** What the TS decoder must return for a vector's plain `value` (types and defaults of protocol.ts). */
function expected(from, v) {
  const bytes = (x) => (x === undefined ? undefined : fromHex(x.$bytes));
  const headsMap = (m) => Object.fromEntries(Object.entries(m ?? {}).map(([d, hs]) => [d, hexHeads(hs)]));
  const drop = (o) => Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined));
  if (from === "client") {
    switch (v.t) {
      case "hello":
        return drop({ t: "hello", v: v.v, peer: v.peer, caps: v.caps ?? [], token: v.token });
      case "open":
      case "close":
        return { t: v.t, doc: v.doc };
      case "sync":
      case "eph":
        return { t: v.t, doc: v.doc, data: bytes(v.data) };
      case "flush":
        return { t: "flush", id: v.id, docs: headsMap(v.docs) };
      case "bye":
        return { t: "bye" };
      case "auth":
        return { t: "auth", token: v.token };
    }
  } else {
    switch (v.t) {
      case "welcome":
        return drop({
          t: "welcome", v: v.v, peer: v.peer, session: v.session ?? "", caps: v.caps ?? [], limits: v.limits ?? {},
          identity: v.identity ?? undefined, expires_in: v.expires_in ?? undefined,
        });
      case "opened":
        return { t: "opened", doc: v.doc, access: v.access };
      case "sync":
        return { t: "sync", doc: v.doc, data: bytes(v.data) };
      case "saved":
        return { t: "saved", doc: v.doc, heads: hexHeads(v.heads) };
      case "flushed":
        return { t: "flushed", id: v.id, docs: headsMap(v.docs) };
      case "eph":
        return { t: "eph", doc: v.doc, from: v.from ?? "", data: bytes(v.data) ?? new Uint8Array(0) };
      case "error":
        return drop({ t: "error", code: v.code, msg: v.msg ?? "", doc: v.doc, id: v.id });
    }
  }
  throw new Error(`no expectation for a ${from} frame of type ${v.t}`);
}

const pyFrames = load("py-encoded.json");

test("py-encoded.json covers every message type both ways", () => {
  const types = (from) => new Set(pyFrames.filter((f) => f.from === from).map((f) => f.value.t));
  assert.deepEqual([...types("client")].sort(), ["auth", "bye", "close", "eph", "flush", "hello", "open", "sync"]);
  assert.deepEqual([...types("server")].sort(), ["eph", "error", "flushed", "opened", "saved", "sync", "welcome"]);
});

for (const frame of pyFrames) {
  test(`py-encoded ${frame.from} frame "${frame.name}" decodes with the TS codec`, () => {
    const bytes = fromHex(frame.hex);
    // The bytes are what `value` says, field for field.
    assert.deepEqual(toPlain(decode(bytes)), frame.value);
    const decoded = frame.from === "client" ? decodeClientMessage(bytes) : decodeServerMessage(bytes, (t) => assert.fail(`unknown type ${t}`));
    assert.deepEqual(decoded, expected(frame.from, frame.value));
    if (frame.from === "client") {
      // Re-encoded by the TS encoder, it means the same.
      assert.deepEqual(decodeClientMessage(encodeClientMessage(decoded)), decoded);
    }
  });
}

test("ts-encoded.json is what the TS encoder produces now (regenerate: npm run vectors)", () => {
  let committed;
  try {
    committed = readFileSync(TS_VECTORS, "utf8");
  } catch {
    assert.fail(`${TS_VECTORS} is missing: run npm run vectors`);
  }
  assert.equal(committed, render(), "tests/vectors/ts-encoded.json is stale: run `npm run vectors` and commit it");
});

test("ts-encoded.json covers every client message type, and each frame decodes to its value", () => {
  const frames = JSON.parse(render()).frames;
  assert.deepEqual([...new Set(frames.map((f) => f.value.t))].sort(), ["auth", "bye", "close", "eph", "flush", "hello", "open", "sync"]);
  for (const f of frames) {
    assert.equal(f.from, "client");
    const decoded = decodeClientMessage(fromHex(f.hex));
    assert.deepEqual(decoded, expected("client", f.value), f.name);
  }
});
