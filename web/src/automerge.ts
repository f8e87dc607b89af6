// The one Automerge instance this library uses: the application's own
// `@automerge/automerge` (a peer dependency), so documents pass freely
// between the app and the client. Its package entry loads the wasm the way
// the platform wants (bundler, Node, workerd). Everything that needs
// Automerge imports it from this module.
//
// The single-file bundle (web/dist/client.js) replaces this module with
// ./automerge-inline.ts, which inlines the wasm.

import * as Automerge from "@automerge/automerge";

export { Automerge };
