//! What protocol version 2 adds (`docs/protocol.md` §3–§5): hidden headers, a handshake bound
//! to its whole transcript, signed device ids, canonical identities, and the refusal of
//! version-1 sessions.

// Test helpers outside #[test] fns may unwrap: a failure is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hushwire::proto::{BundleError, Codec, IdentityKey, PreKeyBundle, SignedPreKey, labels};
use hushwire::ratchet::MAX_HEADER_KEYS_TRIED;
use hushwire::wire::Message;
use hushwire::{Account, DecryptionError, Session, SessionCreationError, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

fn pair(seed: u8) -> (Session, Session, ChaCha20Rng) {
    let mut rng = rng(seed);
    let alice_account = Account::new(1, 0, &mut rng);
    let mut bob_account = Account::new(7, 0, &mut rng);
    bob_account.generate_one_time_prekeys(1, &mut rng);
    let bundle = bob_account.prekey_bundle().unwrap();
    let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng).unwrap();
    let first = alice.encrypt(b"first").unwrap();
    let mut bob = bob_account.accept(&first, &mut rng).unwrap().session;
    let reply = bob.encrypt(b"reply").unwrap();
    alice.decrypt(&reply, &mut rng).unwrap();
    (alice, bob, rng)
}

fn state(session: &Session) -> Vec<u8> {
    session.seal(&StorageKey::from_bytes([9; 32]), &mut rng(99))
}

/// Nothing the relay sees links two messages of one chain or shows a ratchet turn: no 32-byte
/// window of any message (a ratchet key) or 4-byte counter pattern repeats across messages.
#[test]
fn the_relay_sees_no_ratchet_key_and_no_counter() {
    let (mut alice, mut bob, mut rng) = pair(1);
    let mut wires = Vec::new();
    let mut keys = Vec::new();
    for round in 0..3u8 {
        for i in 0..4u8 {
            let (wire, header) = alice.encrypt_message(&[round, i]).unwrap();
            keys.push(header.ratchet_key);
            bob.decrypt(&wire, &mut rng).unwrap();
            wires.push(wire);
        }
        let reply = bob.encrypt(b"turn").unwrap();
        alice.decrypt(&reply, &mut rng).unwrap();
    }
    for wire in &wires {
        for key in &keys {
            assert!(
                !wire.windows(32).any(|w| w == key.as_bytes()),
                "a ratchet key is visible on the wire"
            );
        }
    }
    // The encrypted headers of consecutive messages of one chain share no byte pattern.
    assert_ne!(wires[0][2..58], wires[1][2..58]);
    assert_ne!(wires[0][2..6], wires[1][2..6]);
}

/// A message from a chain the receiver has retired is still recognised as a duplicate (its
/// header key is remembered), never mistaken for a forgery.
#[test]
fn a_replay_from_a_retired_chain_is_a_duplicate_and_changes_nothing() {
    let (mut alice, mut bob, mut rng) = pair(2);
    let (old, header) = alice.encrypt_message(b"old").unwrap();
    bob.decrypt(&old, &mut rng).unwrap();
    for _ in 0..3 {
        let reply = bob.encrypt(b"turn").unwrap();
        alice.decrypt(&reply, &mut rng).unwrap();
        let m = alice.encrypt(b"new chain").unwrap();
        bob.decrypt(&m, &mut rng).unwrap();
    }
    let before = state(&bob);
    assert_eq!(
        bob.decrypt(&old, &mut rng).unwrap_err(),
        DecryptionError::DuplicateMessage {
            chain: header.ratchet_key,
            index: header.index
        }
    );
    assert_eq!(state(&bob), before);
}

/// A late message of a chain retired long ago still decrypts while its key is kept: the
/// chain's header key is kept as long as it has skipped keys, even past the last five chains.
#[test]
fn a_late_message_of_an_old_chain_still_decrypts() {
    let (mut alice, mut bob, mut rng) = pair(3);
    let held = alice.encrypt(b"held back").unwrap();
    let overtaking = alice.encrypt(b"overtaking").unwrap();
    bob.decrypt(&overtaking, &mut rng).unwrap();
    for _ in 0..8 {
        let reply = bob.encrypt(b"turn").unwrap();
        alice.decrypt(&reply, &mut rng).unwrap();
        let m = alice.encrypt(b"new chain").unwrap();
        bob.decrypt(&m, &mut rng).unwrap();
    }
    assert_eq!(bob.decrypt(&held, &mut rng).unwrap(), b"held back");
    assert!(bob.missing_messages().is_empty());
}

#[test]
fn the_header_key_bound_is_what_the_spec_says() {
    // Current chain, next chain, five retired chains and five older ones with skipped keys.
    assert_eq!(MAX_HEADER_KEYS_TRIED, 12);
}

/// Every public value of the handshake is bound into the keys: changing any field of the
/// handshake part of a prekey message (which the message's AEAD does not cover) makes the
/// first message fail, and the responder's account is left as it was.
#[test]
fn every_handshake_field_is_bound_into_the_keys() {
    let mut rng = rng(4);
    let alice_account = Account::new(1, 0, &mut rng);
    let mut bob_account = Account::new(7, 0, &mut rng);
    bob_account.generate_one_time_prekeys(2, &mut rng);
    bob_account.generate_one_time_kem_prekeys(2, &mut rng);
    let bundle = bob_account.prekey_bundle().unwrap();
    let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng).unwrap();
    let first = alice.encrypt(b"first").unwrap();
    let Ok(Message::PreKey(prekey)) = Message::from_bytes(&first) else {
        panic!("a first message is a prekey message");
    };
    let mut handshake = Vec::new();
    prekey.encode_handshake(&mut handshake);
    // The KEM ciphertext: changing it changes the transcript (and, by implicit rejection, the
    // ML-KEM secret); both end in an authentication failure.
    let kem_ciphertext_start = handshake.len() - 1568;
    for offset in [kem_ciphertext_start, handshake.len() - 1] {
        let mut altered = first.clone();
        altered[offset] ^= 0x01;
        let counts = bob_account.one_time_prekey_counts();
        assert!(matches!(
            bob_account.accept(&altered, &mut rng).unwrap_err(),
            SessionCreationError::Decryption(DecryptionError::AuthenticationFailed)
        ));
        assert_eq!(bob_account.one_time_prekey_counts(), counts);
    }
    assert_eq!(
        bob_account.accept(&first, &mut rng).unwrap().plaintext,
        b"first"
    );
}

/// The responder's device id is part of the transcript: a responder that is not the device the
/// bundle named derives other keys, even with the same identity and prekeys.
#[test]
fn a_bundle_presented_under_another_device_id_is_refused() {
    let mut rng = rng(5);
    let bob_account = Account::new(7, 0, &mut rng);
    let bundle = bob_account.prekey_bundle().unwrap();
    assert_eq!(bundle.verify(), Ok(()));
    let mut moved = bundle.clone();
    moved.device_id = 8;
    assert_eq!(moved.verify(), Err(BundleError::BadSignedPreKeySignature));
    let alice_account = Account::new(1, 0, &mut rng);
    assert_eq!(
        Session::initiate(alice_account.identity(), &moved, &mut rng).unwrap_err(),
        SessionCreationError::InvalidBundle(BundleError::BadSignedPreKeySignature)
    );
    // Re-signing the signed prekey for device 8 is not enough: the ML-KEM prekey's signature
    // names the device too.
    moved.signed_prekey.signature = bob_account.identity().sign(
        labels::SIG_SIGNED_PREKEY,
        &SignedPreKey::signed_message(8, moved.signed_prekey.id, &moved.signed_prekey.key),
    );
    assert_eq!(moved.verify(), Err(BundleError::BadKemPreKeySignature));
}

/// One identity key has one encoding: non-canonical encodings of an Ed25519 point (a sign bit
/// on x = 0, a y-coordinate ≥ p) are refused, so one key cannot have two fingerprints.
#[test]
fn a_non_canonical_identity_encoding_is_refused() {
    let mut rng = rng(6);
    let account = Account::new(1, 0, &mut rng);
    let bytes = account.identity().public().to_bytes();
    assert!(IdentityKey::from_bytes(&bytes).is_ok());
    // The identity point y = 1 (the neutral element) with the sign bit set: x = 0, so the sign
    // bit has no meaning and the encoding is non-canonical (and weak besides).
    let mut non_canonical = bytes.clone();
    let mut y_one = [0u8; 32];
    y_one[0] = 1;
    y_one[31] |= 0x80;
    non_canonical[..32].copy_from_slice(&y_one);
    assert!(IdentityKey::from_bytes(&non_canonical).is_err());
    // y ≥ p: p + 2 would decode as the field element 2.
    let mut y_big = [0xffu8; 32];
    y_big[0] = 0xef;
    y_big[31] = 0x7f;
    non_canonical[..32].copy_from_slice(&y_big);
    assert!(IdentityKey::from_bytes(&non_canonical).is_err());
}

/// A version-1 prekey message or bundle is refused by its version byte.
#[test]
fn version_1_messages_and_bundles_are_refused() {
    let mut rng = rng(7);
    let mut alice = pair(8).0;
    let m = alice.encrypt(b"x").unwrap();
    let mut v1 = m.clone();
    v1[0] = 1;
    assert!(Message::from_bytes(&v1).is_err());
    let bundle = Account::new(7, 0, &mut rng)
        .prekey_bundle()
        .unwrap()
        .to_bytes();
    let mut v1 = bundle.clone();
    v1[0] = 1;
    assert!(PreKeyBundle::from_bytes(&v1).is_err());
}
