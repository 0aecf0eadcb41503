#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 60), without sanitizers, on stable.
# For AddressSanitizer: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
for target in $(cargo fuzz list); do
  echo "== $target ($seconds s)"
  cargo fuzz run -s none "$target" -- -max_total_time="$seconds"
done
