// Rough timings of the WebAssembly build in Node (V8), for docs/performance.md:
//
//   scripts/build-wasm.sh && node crates/hushwire-wasm/js-bench/bench.js
//
// Each figure is the median of 5 batches; a batch times many operations with
// performance.now(). Not a test: nothing here asserts a speed.
'use strict';

const { performance } = require('node:perf_hooks');
const { hushwire } = require('../js-tests/common.js');

const { Account, Session, StorageKey } = hushwire;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median time per operation in microseconds: `setup()` builds a batch, `op` runs once per item. */
function measure(name, n, setup, op) {
  const batches = [];
  for (let b = 0; b < 6; b++) {
    const items = setup(n);
    const t0 = performance.now();
    for (const item of items) op(item);
    const t = ((performance.now() - t0) * 1000) / n;
    if (b > 0) batches.push(t); // the first batch warms up
  }
  const us = median(batches);
  console.log(`${name.padEnd(28)} ${us >= 1000 ? (us / 1000).toFixed(2) + ' ms' : us.toFixed(2) + ' µs'}`);
}

const alice = new Account(1, 0);
const bob = new Account(2, 0);
const toBob = Session.initiate(alice, bob.prekeyBundle());
const fromAlice = bob.accept(toBob.encrypt(new Uint8Array(1))).takeSession();
toBob.decrypt(fromAlice.encrypt(new Uint8Array(1)));
const kib = crypto.getRandomValues(new Uint8Array(1024));
const key = new StorageKey(new Uint8Array(32).fill(7));

measure('encrypt 1 KiB', 2000, (n) => Array(n).fill(kib), (m) => toBob.encrypt(m));
measure('decrypt 1 KiB', 2000, (n) => Array.from({ length: n }, () => toBob.encrypt(kib)), (w) =>
  fromAlice.decrypt(w),
);
measure('ratchet turn (send + reply)', 100, (n) => Array(n).fill(0), () => {
  fromAlice.decrypt(toBob.encrypt(kib));
  toBob.decrypt(fromAlice.encrypt(kib));
});
measure('handshake (initiate)', 20, (n) => Array(n).fill(bob.prekeyBundle()), (b) =>
  Session.initiate(alice, b).free(),
);
measure(
  'handshake (accept)',
  20,
  (n) => Array.from({ length: n }, () => Session.initiate(alice, bob.prekeyBundle()).encrypt(kib)),
  (m) => bob.accept(m).free(),
);
measure('session seal', 500, (n) => Array(n).fill(0), () => toBob.seal(key));
const sealed = toBob.seal(key);
measure('session unseal', 500, (n) => Array(n).fill(sealed), (s) => Session.unseal(s, key).free());
measure('new account', 20, (n) => Array(n).fill(0), () => new Account(3, 0).free());
