// Timings of the WebAssembly core inside a browser tab (docs/performance.md): encrypt and
// decrypt 1 KiB (median of five batches after a warm-up batch, as js-bench/bench.js and the
// native example do) and one Argon2id derivation with the store's parameters. Writes JSON into
// #result. Not a test: nothing here asserts a speed.
import * as hw from "../src/wasm";
import { KDF_ITERATIONS, KDF_MEMORY_KIB } from "../src/store";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

function measure(n: number, setup: (n: number) => unknown[], op: (x: unknown) => void): number {
  const batches: number[] = [];
  for (let b = 0; b < 6; b++) {
    const items = setup(n);
    const t0 = performance.now();
    for (const item of items) op(item);
    if (b > 0) batches.push(((performance.now() - t0) * 1000) / n);
  }
  return median(batches);
}

async function run(): Promise<void> {
  await hw.loadWasm(new URL("../hushwire_wasm_bg.wasm", location.href));
  const alice = new hw.Account(1, 0);
  const bob = new hw.Account(2, 0);
  const toBob = hw.Session.initiate(alice, bob.prekeyBundle());
  const fromAlice = bob.accept(toBob.encrypt(new Uint8Array(1))).takeSession();
  toBob.decrypt(fromAlice.encrypt(new Uint8Array(1)));
  const kib = crypto.getRandomValues(new Uint8Array(1024));
  const encryptUs = measure(2000, (n) => Array(n).fill(0), () => toBob.encrypt(kib));
  const decryptUs = measure(
    2000,
    (n) => Array.from({ length: n }, () => fromAlice.encrypt(kib)),
    (m) => toBob.decrypt(m as Uint8Array),
  );
  const t0 = performance.now();
  hw.deriveStorageKey("a passphrase of some length", new Uint8Array(16), KDF_MEMORY_KIB, KDF_ITERATIONS).free();
  const argon2Ms = performance.now() - t0;
  const out = document.getElementById("result") as HTMLElement;
  out.textContent = JSON.stringify({ encryptUs, decryptUs, argon2Ms });
}

void run();
