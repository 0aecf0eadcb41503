#!/usr/bin/env bash
# Builds the Hushwire core's WebAssembly package (crates/hushwire-wasm, issue 16 part 1):
#
#   target/wasm/web/    hushwire_wasm.js, hushwire_wasm_bg.wasm, .d.ts: an ES module for browsers
#   target/wasm/node/   the same module for Node.js (CommonJS), which js-tests/ load
#
#   scripts/build-wasm.sh            # then: node --test crates/hushwire-wasm/js-tests/
#
# Needs the wasm32-unknown-unknown target (`rustup target add wasm32-unknown-unknown`) and
# `wasm-bindgen` of exactly the version of the `wasm-bindgen` crate in Cargo.lock
# (`cargo install wasm-bindgen-cli --version <it>`); it says which version when they differ.
# wasm-opt is not used. The cargo build uses its own target directory (target/wasm-build,
# or $HUSHWIRE_WASM_TARGET_DIR) so that it can run inside `cargo test` without waiting on the
# outer build's lock, and with the small-code profile `wasm-release` (Cargo.toml).

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BUILD_DIR=${HUSHWIRE_WASM_TARGET_DIR:-$ROOT/target/wasm-build}
OUT_DIR=${HUSHWIRE_WASM_OUT_DIR:-$ROOT/target/wasm}

# The CLI must match the crate exactly: wasm-bindgen refuses a module made by another version.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if ! command -v wasm-bindgen >/dev/null; then
  echo "wasm-bindgen is not installed: cargo install wasm-bindgen-cli --version $want" >&2
  exit 2
fi
have=$(wasm-bindgen --version | awk '{ print $2 }')
if [ "$have" != "$want" ]; then
  echo "wasm-bindgen $have is installed but Cargo.lock has $want:" \
    "cargo install wasm-bindgen-cli --version $want --force" >&2
  exit 2
fi

cargo build -p hushwire-wasm --target wasm32-unknown-unknown --profile wasm-release \
  --target-dir "$BUILD_DIR"
wasm="$BUILD_DIR/wasm32-unknown-unknown/wasm-release/hushwire_wasm.wasm"

rm -rf "$OUT_DIR/web" "$OUT_DIR/node"
wasm-bindgen --target web --out-dir "$OUT_DIR/web" "$wasm"
wasm-bindgen --target nodejs --out-dir "$OUT_DIR/node" "$wasm"

size=$(wc -c <"$OUT_DIR/web/hushwire_wasm_bg.wasm")
gz=$(gzip -9 -c "$OUT_DIR/web/hushwire_wasm_bg.wasm" | wc -c)
echo "hushwire_wasm_bg.wasm: $size bytes, $gz bytes gzipped (-9) -> $OUT_DIR/{web,node}"
