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

/// `payloads.json` against the codec itself, not only against the generator: each published
/// encoding decodes to the published fields and re-encodes to itself, and each invalid one is
/// refused with the published error.
#[test]
fn published_payloads_decode_to_their_fields() {
    use hushwire_client::payload::Payload;

    let vectors: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(hushwire_vectors::default_dir().join("payloads.json")).unwrap(),
    )
    .unwrap();
    let valid = vectors["valid"].as_array().unwrap();
    assert!(valid.len() >= 5, "a message, a receipt and three resets");
    let mut kinds = Vec::new();
    for v in valid {
        let name = v["name"].as_str().unwrap();
        let encoded = hex::decode(v["encoded"].as_str().unwrap()).unwrap();
        let payload = Payload::decode(&encoded)
            .unwrap_or_else(|e| panic!("payload vector `{name}` is refused: {e}"));
        let mut fields = hushwire_vectors::payload_json(&payload);
        for (key, value) in fields.as_object().unwrap() {
            assert_eq!(&v[key], value, "payload vector `{name}`, field `{key}`");
        }
        // Every published field (but the name and encoding) came out of the decoder.
        let published = v.as_object().unwrap().len() - 2;
        assert_eq!(fields.as_object_mut().unwrap().len(), published, "{name}");
        assert_eq!(payload.encode().as_slice(), encoded, "{name} re-encodes");
        kinds.push(v["kind"].as_u64().unwrap() * 16 + v["reason"].as_u64().unwrap_or(0));
    }
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [0x10, 0x20, 0x31, 0x32, 0x33],
        "each kind and reset reason once"
    );

    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(!invalid.is_empty());
    for v in invalid {
        let name = v["name"].as_str().unwrap();
        let encoded = hex::decode(v["encoded"].as_str().unwrap()).unwrap();
        match Payload::decode(&encoded) {
            Ok(_) => panic!("invalid payload vector `{name}` decodes"),
            Err(e) => assert_eq!(
                hushwire_vectors::decode_error_json(&e),
                v["error"],
                "invalid payload vector `{name}`"
            ),
        }
    }
}
