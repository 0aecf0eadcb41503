//! The WebAssembly build, checked in Node: runs `scripts/build-wasm.sh` (release build for
//! wasm32-unknown-unknown, then `wasm-bindgen`) and `node --test crates/hushwire-wasm/js-tests/`
//! (the published vectors reproduced through the JS API, JS round trips, and the browser build
//! loaded beside the Node one), and asserts both succeed.
//!
//! Without the wasm32-unknown-unknown target, a `wasm-bindgen` matching Cargo.lock, or `node`,
//! it prints a loud SKIPPED line saying which, and passes, unless `HUSHWIRE_REQUIRE_WASM=1`
//! (which `.ci/run` sets once it has installed them): then a missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| crate_dir.join("../.."))
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The `wasm-bindgen` crate's version in Cargo.lock, which the CLI must match exactly.
fn locked_wasm_bindgen() -> String {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().unwrap();
            return version
                .trim_start_matches("version = \"")
                .trim_end_matches('"')
                .to_owned();
        }
    }
    panic!("Cargo.lock has no wasm-bindgen");
}

/// Why the check cannot run here, if it cannot.
fn missing_tool() -> Option<String> {
    let Some(sysroot) = output("rustc", &["--print", "sysroot"]) else {
        return Some("`rustc --print sysroot` failed".into());
    };
    if !Path::new(&sysroot)
        .join("lib/rustlib/wasm32-unknown-unknown")
        .is_dir()
    {
        return Some(
            "the wasm32-unknown-unknown target is not installed \
             (rustup target add wasm32-unknown-unknown)"
                .into(),
        );
    }
    let want = locked_wasm_bindgen();
    match output("wasm-bindgen", &["--version"]) {
        None => {
            return Some(format!(
                "wasm-bindgen is not installed (cargo install wasm-bindgen-cli --version {want})"
            ));
        }
        Some(v) if v.split_whitespace().nth(1) != Some(want.as_str()) => {
            return Some(format!(
                "{v} does not match Cargo.lock's {want} \
                 (cargo install wasm-bindgen-cli --version {want} --force)"
            ));
        }
        Some(_) => {}
    }
    if output("node", &["--version"]).is_none() {
        return Some("node is not installed".into());
    }
    None
}

fn run(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("== {what}\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn webassembly_build_passes_the_node_checks() {
    if let Some(why) = missing_tool() {
        if std::env::var("HUSHWIRE_REQUIRE_WASM").as_deref() == Ok("1") {
            panic!("HUSHWIRE_REQUIRE_WASM=1 but {why}");
        }
        // Straight to the process's stderr, past the test harness's capture, so that the line
        // shows in a plain `cargo test` run and not only with --nocapture.
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n*** SKIPPED: the WebAssembly build and its Node checks did not run because {why} ***\n"
        );
        return;
    }
    let root = root();
    let out_dir = root.join("target/wasm");
    // The nested cargo uses its own target directory (the script's default,
    // target/wasm-build), so it never waits on the lock this test's own build holds.
    run(
        Command::new("bash")
            .arg(root.join("scripts/build-wasm.sh"))
            .env("HUSHWIRE_WASM_OUT_DIR", &out_dir)
            .current_dir(&root),
        "scripts/build-wasm.sh",
    );
    let report = {
        let out = Command::new("node")
            .args(["--test", "crates/hushwire-wasm/js-tests/"])
            .env("HUSHWIRE_WASM_NODE_DIR", out_dir.join("node"))
            .env("HUSHWIRE_WASM_WEB_DIR", out_dir.join("web"))
            .current_dir(&root)
            .output()
            .expect("node did not start");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "== node --test\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "node --test failed:\n{stdout}");
        stdout
    };
    // The run really ran the checks: the vectors and the round trips, none failed or skipped.
    let count = |label: &str| -> u32 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {label} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("node's report has no `# {label}` line"))
    };
    assert!(count("pass") >= 10, "too few JS checks ran:\n{report}");
    assert_eq!(count("fail"), 0);
    assert_eq!(count("skipped"), 0);
    for name in [
        "published vectors through the WebAssembly API",
        "conversation.json: 30 messages, reordered, every wire byte and gap",
        "a conversation between two accounts made in JavaScript",
        "the browser build (target/wasm/web) loads and talks to the Node build",
        "a login answer to the published challenge verifies only under the pinned relay key",
        "payloads, frames, Argon2id and sealed values",
        "an archive key file the CLI wrote opens in WebAssembly; a wrong passphrase is refused",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.trim_start().starts_with("ok ") && l.ends_with(name)),
            "no passing check `{name}`:\n{report}"
        );
    }
}
