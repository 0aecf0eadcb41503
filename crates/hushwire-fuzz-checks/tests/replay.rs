//! Replays every fuzz target over its committed seeds (`fuzz/seeds/<target>/`) and, where one
//! exists locally, the fuzzer's corpus (`fuzz/corpus/<target>/`), so `cargo test` exercises
//! every target without a fuzzer. Its own harness: it prints how many inputs each target ran
//! even when all pass, names every input that panics, and fails if a target has no seeds.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hushwire_fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    dir.canonicalize().unwrap_or(dir)
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn main() -> ExitCode {
    // `cargo test -- --list` (and filters) pass arguments; there is one test, always run.
    if std::env::args().any(|a| a == "--list") {
        println!("replay: test");
        return ExitCode::SUCCESS;
    }
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    println!("replaying fuzz inputs from {}", fuzz.display());
    for (name, target) in TARGETS {
        let seeds = inputs(&fuzz.join("seeds").join(name));
        let corpus = inputs(&fuzz.join("corpus").join(name));
        if seeds.is_empty() {
            failures.push(format!("{name}: no seeds in fuzz/seeds/{name}/"));
        }
        for path in seeds.iter().chain(&corpus) {
            let data = std::fs::read(path).expect("readable input");
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(format!("{name}: {} panicked", path.display()));
            }
        }
        println!(
            "  {name:<18} {:>5} seeds + {:>5} corpus inputs replayed",
            seeds.len(),
            corpus.len()
        );
    }
    if failures.is_empty() {
        println!("test replay ... ok");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAILED {f}");
        }
        ExitCode::FAILURE
    }
}
