// The Automerge of the single-file bundle (web/dist/client.js, served at
// /client.js): the build maps ./automerge.js to this module there.
//
// `@automerge/automerge/slim` carries no wasm; the wasm comes from the
// `automerge.wasm.base64` entry, inlined by esbuild, and is compiled
// asynchronously here with top-level await. The result is a single
// self-contained ES module that works in browsers (no .wasm file to serve,
// no synchronous main-thread compile) and in Node 20.

import * as Automerge from "@automerge/automerge/slim";
import { automergeWasmBase64 } from "@automerge/automerge/automerge.wasm.base64";

if (!Automerge.isWasmInitialized()) {
  await Automerge.initializeBase64Wasm(automergeWasmBase64);
}

export { Automerge };
