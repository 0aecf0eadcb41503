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
    assert!(
        valid.len() >= 6,
        "a message, a receipt, three resets and a sent copy"
    );
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
        [
            0x10, 0x20, 0x31, 0x32, 0x33, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90
        ],
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

/// `clinic.json` against the codec itself: each published structure decodes and re-encodes to
/// itself, the link's text form parses, and each invalid encoding is refused naming the
/// published field (`docs/clinic.md` §1).
#[test]
fn published_clinic_structures_decode_and_invalid_ones_are_refused() {
    use hushwire::proto::Codec;
    use hushwire::proto::DecodeError;
    use hushwire::proto::clinic::{
        AgentCertificate, ClinicLink, DeviceList, OrgKey, RevocationList, WipeCommand,
    };

    let v: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(hushwire_vectors::default_dir().join("clinic.json")).unwrap(),
    )
    .unwrap();
    let bytes = |s: &serde_json::Value| hex::decode(s.as_str().unwrap()).unwrap();
    fn canonical<T: Codec>(b: &[u8]) -> T {
        let value = T::from_bytes(b).unwrap();
        assert_eq!(value.to_bytes(), b, "{} is not canonical", T::NAME);
        value
    }

    let org = OrgKey::from_bytes(&bytes(&v["org_key"]).try_into().unwrap()).unwrap();
    assert_eq!(
        org.fingerprint().to_string(),
        v["org_key_fingerprint"].as_str().unwrap()
    );
    let link: ClinicLink = canonical(&bytes(&v["link"]));
    assert_eq!(
        v["link_text"]
            .as_str()
            .unwrap()
            .parse::<ClinicLink>()
            .unwrap(),
        link
    );
    assert_eq!(link.org(), &org);
    let agent: AgentCertificate = canonical(&bytes(&v["agent_certificate"]));
    let now = v["checks"]["now"].as_u64().unwrap();
    assert!(agent.verify(&org, now, None).is_ok());
    let revocations: RevocationList = canonical(&bytes(&v["revocation_list"]["bytes"]));
    assert!(revocations.verify(&org));
    assert!(agent.verify(&org, now, Some(&revocations)).is_err());
    let _: DeviceList = canonical(&bytes(&v["device_list"]["bytes"]));
    let wipe: WipeCommand = canonical(&bytes(&v["wipe_command"]["bytes"]));
    assert!(wipe.verify(&org, now, Some(&revocations)).is_ok());

    let field_of = |e: DecodeError| match e {
        DecodeError::InvalidValue { field } | DecodeError::TooLong { field, .. } => field,
        DecodeError::UnsupportedVersion { .. } => "version",
        other => panic!("unexpected refusal {other:?}"),
    };
    let cases = v["invalid"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let b = bytes(&case["bytes"]);
        let refused = match case["structure"].as_str().unwrap() {
            "clinic link" => ClinicLink::from_bytes(&b).err(),
            "agent certificate" => AgentCertificate::from_bytes(&b).err(),
            "revocation list" => RevocationList::from_bytes(&b).err(),
            "device list" => DeviceList::from_bytes(&b).err(),
            other => panic!("unknown structure {other}"),
        };
        let name = case["name"].as_str().unwrap();
        let e = refused.unwrap_or_else(|| panic!("{name} decoded"));
        assert_eq!(field_of(e), case["field"].as_str().unwrap(), "{name}");
    }
}

/// `conversation_membership.json` against the proto code itself: the published history verifies
/// from its bytes, and each invalid change, applied after its prefix, is refused with the
/// published rule and error (`docs/conversations.md` §4.3).
#[test]
fn published_membership_history_and_refusals() {
    use hushwire::proto::Codec;
    use hushwire::proto::clinic::{DeviceList, OrgKey, RevocationList};
    use hushwire::proto::conversation::{
        ConversationId, MembershipChange, MembershipContext, MembershipLog,
    };

    let v: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(hushwire_vectors::default_dir().join("conversation_membership.json"))
            .unwrap(),
    )
    .unwrap();
    let bytes = |value: &serde_json::Value| hex::decode(value.as_str().unwrap()).unwrap();
    let org = OrgKey::from_bytes(&bytes(&v["org_key"]).try_into().unwrap()).unwrap();
    let conversation = ConversationId(bytes(&v["conversation_id"]).try_into().unwrap());
    let devices = DeviceList::from_bytes(&bytes(&v["patient_device_list"])).unwrap();
    let history: Vec<MembershipChange> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| MembershipChange::from_bytes(&bytes(&e["bytes"])).unwrap())
        .collect();
    let ctx = |now: u64, revocations| MembershipContext {
        revocations,
        patient_devices: Some(&devices),
        now,
    };
    let now = v["now"].as_u64().unwrap();
    let log = MembershipLog::verify_all(conversation, org, &history, &ctx(now, None)).unwrap();
    assert_eq!(log.head().to_vec(), bytes(&v["history"][8]["hash"]));
    let invalid = v["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 15);
    for case in invalid {
        let after = usize::try_from(case["after"].as_u64().unwrap()).unwrap();
        let mut log =
            MembershipLog::verify_all(conversation, org, &history[..after], &ctx(now, None))
                .unwrap();
        let list = case
            .get("revocation_list")
            .map(|l| RevocationList::from_bytes(&bytes(l)).unwrap());
        let change = MembershipChange::from_bytes(&bytes(&case["change"])).unwrap();
        let case_ctx = MembershipContext {
            revocations: list.as_ref(),
            patient_devices: Some(&devices),
            now: case["now"].as_u64().unwrap(),
        };
        let err = log.apply(&change, &case_ctx).unwrap_err();
        assert_eq!(err.rule(), case["rule"].as_str().unwrap());
        assert_eq!(format!("{err:?}"), case["error"].as_str().unwrap());
    }
    // §4.3 rule 9: each takeover is accepted with its list, and the revoked agents leave.
    let takeovers = v["takeovers"].as_array().unwrap();
    assert!(!takeovers.is_empty());
    for case in takeovers {
        let after = usize::try_from(case["after"].as_u64().unwrap()).unwrap();
        let mut log =
            MembershipLog::verify_all(conversation, org, &history[..after], &ctx(now, None))
                .unwrap();
        let list = RevocationList::from_bytes(&bytes(&case["revocation_list"])).unwrap();
        let change = MembershipChange::from_bytes(&bytes(&case["change"])).unwrap();
        let mut without = log.clone();
        assert!(without.apply(&change, &ctx(now, None)).is_err());
        let with_list = MembershipContext {
            revocations: Some(&list),
            patient_devices: Some(&devices),
            now: case["now"].as_u64().unwrap(),
        };
        log.apply(&change, &with_list).unwrap();
        let published: Vec<Vec<u64>> = case["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect()
            })
            .collect();
        let got: Vec<Vec<u64>> = log
            .members()
            .iter()
            .map(|m| m.devices().iter().map(|d| u64::from(*d)).collect())
            .collect();
        assert_eq!(got, published, "{}", case["name"]);
    }
    // Each published queue frame decodes to its type and re-encodes to itself.
    for f in v["queue_frames"].as_array().unwrap() {
        use hushwire::proto::conversation::queue::QueueFrame;
        let encoded = bytes(&f["bytes"]);
        let (request_id, frame) = QueueFrame::from_frame(&encoded).unwrap();
        assert_eq!(u64::from(frame.type_byte()), f["type"].as_u64().unwrap());
        assert_eq!(frame.to_frame(request_id), encoded);
    }
}
