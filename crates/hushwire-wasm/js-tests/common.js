// Shared by the Node checks of the WebAssembly build: loads the package that
// scripts/build-wasm.sh made (target/wasm/node, or $HUSHWIRE_WASM_NODE_DIR) and the published
// vectors (docs/vectors).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..', '..');
const nodeDir = process.env.HUSHWIRE_WASM_NODE_DIR || path.join(root, 'target', 'wasm', 'node');
const modulePath = path.join(nodeDir, 'hushwire_wasm.js');
if (!fs.existsSync(modulePath)) {
  throw new Error(`${modulePath} is missing: run scripts/build-wasm.sh first`);
}
const hushwire = require(modulePath);

function vector(name) {
  return JSON.parse(fs.readFileSync(path.join(root, 'docs', 'vectors', name), 'utf8'));
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));
const utf8 = (text) => new TextEncoder().encode(text);
const text = (bytes) => new TextDecoder('utf-8', { fatal: true }).decode(bytes);
/** A VectorRng that replays the published draws (hex strings) in order. */
const draws = (list) => new hushwire.VectorRng(unhex(list.join('')));

module.exports = { hushwire, vector, hex, unhex, utf8, text, draws };
