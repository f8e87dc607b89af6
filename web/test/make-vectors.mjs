// Frames the TS client codec encodes, for the Python tests to decode:
// tests/vectors/ts-encoded.json (format: tests/vectors/__init__.py).
//
//   node web/test/make-vectors.mjs     (npm run vectors) rewrite the file
//
// web/test/vectors.test.mjs fails when the committed file and what the
// encoder produces now differ.

import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { decode } from "@msgpack/msgpack";
import { encodeClientMessage } from "../dist/client.js";

export const TS_VECTORS = join(dirname(dirname(dirname(fileURLToPath(import.meta.url)))), "tests", "vectors", "ts-encoded.json");

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const H1 = hex(Uint8Array.from({ length: 32 }, (_, i) => i));
const H2 = hex(Uint8Array.from({ length: 32 }, (_, i) => 32 + i));

/** Every client -> server message type, with and without optional fields. */
export const FRAMES = [
  ["hello", { t: "hello", v: [1], peer: "ada", token: "t0k", caps: ["x"] }],
  ["hello-minimal", { t: "hello", v: [1], peer: "bob", caps: [] }],
  ["open", { t: "open", doc: "invoice-42" }],
  ["sync", { t: "sync", doc: "d.1:~x", data: new Uint8Array([0x42, 0, 0, 0, 0]) }],
  ["flush", { t: "flush", id: 7, docs: { a: [H1, H2], b: [] } }],
  ["flush-big-id", { t: "flush", id: 2 ** 40, docs: { a: [H2] } }],
  ["close", { t: "close", doc: "a" }],
  ["eph", { t: "eph", doc: "a", data: new Uint8Array([0x00, 0xff]) }],
  ["eph-empty", { t: "eph", doc: "a", data: new Uint8Array(0) }],
  ["bye", { t: "bye" }],
  ["auth", { t: "auth", token: "t0k-2" }],
];

/** A decoded frame as the JSON `value` of a vector: bytes as {"$bytes": hex}. */
export function toPlain(value) {
  if (value instanceof Uint8Array) return { $bytes: hex(value) };
  if (Array.isArray(value)) return value.map(toPlain);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toPlain(v)]));
  return value;
}

export function vectors() {
  return FRAMES.map(([name, msg]) => {
    const frame = encodeClientMessage(msg);
    return { name, from: "client", hex: hex(frame), value: toPlain(decode(frame)) };
  });
}

/** The file's text, byte for byte as committed (same layout as py-encoded.json). */
export function render() {
  return JSON.stringify({ frames: vectors() }, null, 1) + "\n";
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(TS_VECTORS, render());
  console.log(`wrote ${TS_VECTORS}`);
}
