//! The committed vectors are exactly what the code generates today, and they are consistent
//! with the spec's formulas when recomputed from the published values alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;

#[test]
fn committed_vectors_match_the_code() {
    let dir = hushwire_vectors::default_dir();
    for (name, generated) in hushwire_vectors::generate().unwrap() {
        let path = dir.join(name);
        let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); run `cargo run -p hushwire-vectors`",
                path.display()
            )
        });
        assert!(
            committed == generated,
            "{name} differs from what the code generates: the protocol changed, or the file was edited. \
             If the change is intended, run `cargo run -p hushwire-vectors`, review the diff and update docs/protocol.md."
        );
    }
}

#[test]
fn published_bundle_verifies() {
    let keys: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(hushwire_vectors::default_dir().join("keys.json")).unwrap(),
    )
    .unwrap();
    let bundle = hushwire_vectors::parse_bundle(keys["bob_bundle"].as_str().unwrap()).unwrap();
    bundle.verify().unwrap();
    assert_eq!(bundle.device_id, 7);
}
