#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 60), without sanitizers, on stable.
# Each target starts from its committed seeds (fuzz/seeds/TARGET, regenerate them with
# `cargo run -p hushwire-fuzz-checks --example make-seeds`) and grows its local corpus
# (fuzz/corpus/TARGET, not committed); `cargo test -p hushwire-fuzz-checks` replays both.
# A crash is saved under fuzz/artifacts/TARGET: minimize it with `cargo fuzz tmin -s none`,
# then commit it to fuzz/seeds/TARGET as a regression seed.
# For AddressSanitizer: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
for target in $(cargo fuzz list); do
  echo "== $target ($seconds s)"
  mkdir -p "corpus/$target"
  cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds"
done
