// Builds the widget and the console into web/dist (or $HUSHWIRE_WEB_OUT): bundles with esbuild,
// copies the WebAssembly module built by scripts/build-wasm.sh (target/wasm/web). Every asset
// comes from this repository; nothing is fetched from a CDN.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.HUSHWIRE_WEB_OUT ?? join(here, "dist");
const wasm = join(here, "..", "target", "wasm", "web", "hushwire_wasm_bg.wasm");
if (!existsSync(wasm)) {
  console.error(`${wasm} is missing: run scripts/build-wasm.sh first`);
  process.exit(2);
}
mkdirSync(join(out, "console"), { recursive: true });
mkdirSync(join(out, "bench"), { recursive: true });
const common = { bundle: true, format: "iife", target: "es2022", minify: true, sourcemap: false, logLevel: "warning",
  // The glue's default URL (import.meta.url) is never used: the pages pass the module's URL.
  logOverride: { "empty-import-meta": "silent" } };
await build({ ...common, entryPoints: [join(here, "widget", "widget.ts")], outfile: join(out, "hushwire-widget.js") });
await build({ ...common, entryPoints: [join(here, "console", "console.ts")], outfile: join(out, "console", "console.js") });
await build({ ...common, entryPoints: [join(here, "bench", "bench.ts")], outfile: join(out, "bench", "bench.js") });
copyFileSync(join(here, "bench", "index.html"), join(out, "bench", "index.html"));
copyFileSync(wasm, join(out, "hushwire_wasm_bg.wasm"));
copyFileSync(join(here, "widget", "hushwire-widget.css"), join(out, "hushwire-widget.css"));
copyFileSync(join(here, "console", "index.html"), join(out, "console", "index.html"));
copyFileSync(join(here, "console", "console.css"), join(out, "console", "console.css"));
console.log(`built the widget and console into ${out}`);
