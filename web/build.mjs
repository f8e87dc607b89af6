// Build the browser/Node client into one self-contained ES module
// (web/dist/client.js, Automerge's wasm inlined), its type declarations
// (web/dist/client.d.ts), the demo page's script (web/dist/demo.js) and
// copy the demo page itself (web/dist/index.html).
//
//   node web/build.mjs            build everything
//   node web/build.mjs --no-types skip the declaration step

import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const web = dirname(fileURLToPath(import.meta.url));
const root = dirname(web);
const dist = join(web, "dist");

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = {
  bundle: true,
  format: "esm",
  // Top-level await (wasm initialisation) needs ES2022 modules; every
  // current browser and Node 20 support it.
  target: "es2022",
  platform: "browser",
  logLevel: "warning",
  legalComments: "linked",
};

await esbuild.build({
  ...common,
  entryPoints: [join(web, "src/index.ts")],
  outfile: join(dist, "client.js"),
});

await esbuild.build({
  ...common,
  entryPoints: [join(web, "demo/demo.ts")],
  outfile: join(dist, "demo.js"),
  // The demo imports the client the server serves at /client.js, so both
  // share one Automerge instance and the wasm is downloaded once.
  external: ["/client.js"],
});

// The server serves web/dist/index.html at "/", next to /client.js and /demo.js.
copyFileSync(join(web, "demo/index.html"), join(dist, "index.html"));

if (!process.argv.includes("--no-types")) {
  const tsc = join(root, "node_modules", ".bin", "tsc");
  execFileSync(tsc, ["-p", join(web, "tsconfig.types.json")], { stdio: "inherit" });
  writeFileSync(join(dist, "client.d.ts"), 'export * from "./types/index.js";\n');
}

console.log("built web/dist/: client.js, client.d.ts, demo.js, index.html");
