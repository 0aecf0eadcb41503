// The Hushwire core in WebAssembly (crates/hushwire-wasm, built by scripts/build-wasm.sh into
// target/wasm/web). Every cryptographic operation and every wire format comes from here.
export * from "../../target/wasm/web/hushwire_wasm.js";
import init from "../../target/wasm/web/hushwire_wasm.js";

let ready: Promise<unknown> | undefined;

/** Loads `hushwire_wasm_bg.wasm` from `url` once. */
export function loadWasm(url: URL | string): Promise<unknown> {
  ready ??= init({ module_or_path: url });
  return ready;
}
