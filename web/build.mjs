// Build the client two ways, plus the demo page:
//
// - web/dist/index.js: the library for bundlers and Node (`import ... from
//   "automerge-bridge-client"`). `@automerge/automerge` (a peer dependency:
//   the application's own instance) and `@msgpack/msgpack` stay imports;
//   nothing of them is bundled. Types: web/dist/index.d.ts.
// - web/dist/client.js: one self-contained ES module (Automerge and its wasm
//   inlined, ~5 MB) for <script type="module"> pages; the server serves it
//   at /client.js. Types: web/dist/client.d.ts (the same API).
// - web/dist/demo.js and web/dist/index.html: the demo page the server
//   serves at "/"; demo.js imports ./client.js (relative, so the demo also
//   works under a mount prefix).
//
//   node web/build.mjs            build everything
//   node web/build.mjs --no-types skip the declaration step

import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const web = dirname(fileURLToPath(import.meta.url));
const root = dirname(web);
const dist = join(web, "dist");
const PACKAGE = "automerge-bridge-client";

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = {
  bundle: true,
  format: "esm",
  // Top-level await (wasm initialisation) needs ES2022 modules; every
  // current browser and Node 20 support it.
  target: "es2022",
  logLevel: "warning",
};

// The library: every package stays an import.
await esbuild.build({
  ...common,
  platform: "neutral",
  packages: "external",
  entryPoints: [join(web, "src/index.ts")],
  outfile: join(dist, "index.js"),
});

// In the single-file bundle, ./automerge.js is the wasm-inlining variant.
const inlineAutomerge = {
  name: "inline-automerge",
  setup(build) {
    build.onResolve({ filter: /^\.\/automerge\.js$/ }, (args) =>
      args.importer.startsWith(join(web, "src")) ? { path: join(web, "src/automerge-inline.ts") } : undefined,
    );
  },
};

await esbuild.build({
  ...common,
  platform: "browser",
  legalComments: "linked",
  entryPoints: [join(web, "src/index.ts")],
  outfile: join(dist, "client.js"),
  plugins: [inlineAutomerge],
});

// The demo imports the package; on the page that is the bundle next to it,
// so both share one Automerge instance and the wasm is downloaded once.
const demoClient = {
  name: "demo-client",
  setup(build) {
    build.onResolve({ filter: new RegExp(`^${PACKAGE}$`) }, () => ({ path: "./client.js", external: true }));
  },
};

await esbuild.build({
  ...common,
  platform: "browser",
  entryPoints: [join(web, "demo/demo.ts")],
  outfile: join(dist, "demo.js"),
  plugins: [demoClient],
});

// The server serves web/dist/index.html at "/", next to client.js and demo.js.
copyFileSync(join(web, "demo/index.html"), join(dist, "index.html"));

if (!process.argv.includes("--no-types")) {
  const tsc = join(root, "node_modules", ".bin", "tsc");
  execFileSync(tsc, ["-p", join(web, "tsconfig.types.json")], { stdio: "inherit" });
  const dts = 'export * from "./types/index.js";\n';
  writeFileSync(join(dist, "index.d.ts"), dts);
  writeFileSync(join(dist, "client.d.ts"), dts);
}

const size = (f) => `${(statSync(join(dist, f)).size / 1024).toFixed(0)} kB`;
const files = readdirSync(dist).filter((f) => statSync(join(dist, f)).isFile());
console.log(`built web/dist/: ${files.map((f) => `${f} (${size(f)})`).join(", ")}`);
