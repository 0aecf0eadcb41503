//! Holds the criterion benchmarks in `benches/` (run `cargo bench -p hushwire-bench`); see
//! `docs/performance.md` for the method and the latest figures.

#![forbid(unsafe_code)]
