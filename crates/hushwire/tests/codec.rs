//! Canonical encoding: for every wire structure, decode(encode(x)) == x, and for any bytes that
//! decode, encode(decode(b)) == b. Mutated encodings never panic the decoder.

// Test helpers outside #[test] fns may unwrap: a failure is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hushwire::proto::{Codec, PreKeyBundle};
use hushwire::wire::{Message, PreKeyMessage, RatchetMessage};
use hushwire::{Account, Session};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

/// A prekey message, a ratchet message and a bundle (with and without one-time prekey).
fn samples(seed: u8) -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    let without_otpk = bob.prekey_bundle().unwrap();
    bob.generate_one_time_prekeys(1, &mut rng);
    bob.generate_one_time_kem_prekeys(1, &mut rng);
    let with_otpk = bob.prekey_bundle().unwrap();
    let mut s = Session::initiate(alice.identity(), &with_otpk, &mut rng).unwrap();
    let prekey_message = s.encrypt(b"first message").unwrap();
    let mut inbound = bob.accept(&prekey_message, &mut rng).unwrap();
    let ratchet_message = inbound.session.encrypt(b"a reply").unwrap();
    vec![
        prekey_message,
        ratchet_message,
        with_otpk.to_bytes(),
        without_otpk.to_bytes(),
    ]
}

/// Decodes as every structure; where it decodes, re-encoding must reproduce the input exactly.
fn check_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::from_bytes(bytes) {
        prop_assert_eq!(m.to_bytes(), bytes);
    }
    if let Ok(m) = RatchetMessage::from_bytes(bytes) {
        prop_assert_eq!(m.to_bytes(), bytes);
    }
    if let Ok(m) = PreKeyMessage::from_bytes(bytes) {
        prop_assert_eq!(m.to_bytes(), bytes);
    }
    if let Ok(b) = PreKeyBundle::from_bytes(bytes) {
        prop_assert_eq!(b.to_bytes(), bytes);
    }
    Ok(())
}

#[test]
fn valid_structures_round_trip() {
    let s = samples(1);
    assert_eq!(Message::from_bytes(&s[0]).unwrap().to_bytes(), s[0]);
    assert!(matches!(
        Message::from_bytes(&s[0]).unwrap(),
        Message::PreKey(_)
    ));
    assert!(matches!(
        Message::from_bytes(&s[1]).unwrap(),
        Message::Ratchet(_)
    ));
    let bundle = PreKeyBundle::from_bytes(&s[2]).unwrap();
    assert!(bundle.one_time_prekey.is_some());
    assert_eq!(bundle.to_bytes(), s[2]);
    assert!(
        PreKeyBundle::from_bytes(&s[3])
            .unwrap()
            .one_time_prekey
            .is_none()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_encodings_are_total_and_canonical(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut bytes = SAMPLES.with(|s| s[which].clone());
        for (at, value) in edits {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        bytes.extend_from_slice(&extra);
        check_canonical(&bytes)?;
    }

    #[test]
    fn random_bytes_are_total(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_canonical(&bytes)?;
    }
}

thread_local! {
    static SAMPLES: Vec<Vec<u8>> = samples(2);
}
