//! Session behaviour and every rejection the spec names.

// Test helpers outside #[test] fns may unwrap: a failure is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hushwire::proto::{Codec, DecodeError, PreKeyBundle};
use hushwire::wire::{MAX_PLAINTEXT_LEN, Message};
use hushwire::{
    Account, DecryptionError, EncryptionError, Session, SessionCreationError, StorageKey,
    UnsealError,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

struct Pair {
    alice: Session,
    bob: Session,
    bob_account: Account,
    rng: ChaCha20Rng,
}

/// Alice initiates, Bob accepts her first message, Bob replies once so both have full state.
fn established() -> Pair {
    let mut rng = rng(1);
    let alice_account = Account::new(1, 0, &mut rng);
    let mut bob_account = Account::new(2, 0, &mut rng);
    bob_account.generate_one_time_prekeys(2, &mut rng);
    bob_account.generate_one_time_kem_prekeys(2, &mut rng);
    let bundle = bob_account.prekey_bundle().unwrap();
    let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng).unwrap();
    let first = alice.encrypt(b"first").unwrap();
    let inbound = bob_account.accept(&first, &mut rng).unwrap();
    assert_eq!(inbound.plaintext, b"first");
    let mut bob = inbound.session;
    let reply = bob.encrypt(b"reply").unwrap();
    assert_eq!(alice.decrypt(&reply, &mut rng).unwrap(), b"reply");
    Pair {
        alice,
        bob,
        bob_account,
        rng,
    }
}

/// The session's full state as bytes: sealing is deterministic for a fixed key and nonce RNG.
fn state(session: &Session) -> Vec<u8> {
    session.seal(&StorageKey::from_bytes([9; 32]), &mut rng(99))
}

#[test]
fn initiator_repeats_prekey_message_until_reply() {
    let mut rng = rng(2);
    let alice_account = Account::new(1, 0, &mut rng);
    let mut bob_account = Account::new(2, 0, &mut rng);
    let bundle = bob_account.prekey_bundle().unwrap();
    assert!(
        bundle.one_time_prekey.is_none(),
        "no one-time prekey was generated"
    );
    let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng).unwrap();
    let m1 = alice.encrypt(b"one").unwrap();
    let m2 = alice.encrypt(b"two").unwrap();
    assert!(matches!(
        Message::from_bytes(&m2).unwrap(),
        Message::PreKey(_)
    ));

    let mut inbound = bob_account.accept(&m1, &mut rng).unwrap();
    // The second prekey message names the same base key: the existing session decrypts it.
    assert_eq!(inbound.session.decrypt(&m2, &mut rng).unwrap(), b"two");
    let reply = inbound.session.encrypt(b"ok").unwrap();
    assert!(alice.awaiting_reply());
    alice.decrypt(&reply, &mut rng).unwrap();
    assert!(!alice.awaiting_reply());
    let m3 = alice.encrypt(b"three").unwrap();
    assert!(matches!(
        Message::from_bytes(&m3).unwrap(),
        Message::Ratchet(_)
    ));
    assert_eq!(inbound.session.decrypt(&m3, &mut rng).unwrap(), b"three");
}

#[test]
fn long_conversation_with_ratchet_turns() {
    let mut p = established();
    for round in 0..20u32 {
        for i in 0..(round % 4) {
            let text = format!("a{round}.{i}");
            let m = p.alice.encrypt(text.as_bytes()).unwrap();
            assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), text.as_bytes());
        }
        let text = format!("b{round}");
        let m = p.bob.encrypt(text.as_bytes()).unwrap();
        assert_eq!(p.alice.decrypt(&m, &mut p.rng).unwrap(), text.as_bytes());
    }
    assert!(p.alice.missing_messages().is_empty());
    assert_eq!(p.alice.safety_number(), p.bob.safety_number());
}

#[test]
fn bad_bundle_signature_is_refused() {
    let mut rng = rng(3);
    let alice = Account::new(1, 0, &mut rng);
    let bob = Account::new(2, 0, &mut rng);
    let mut bundle = bob.prekey_bundle().unwrap();
    bundle.signed_prekey.signature[0] ^= 1;
    assert_eq!(
        Session::initiate(alice.identity(), &bundle, &mut rng).unwrap_err(),
        SessionCreationError::InvalidBundle(hushwire::proto::BundleError::BadSignedPreKeySignature)
    );
    let mut bundle = bob.prekey_bundle().unwrap();
    bundle.kem_prekey.signature[5] ^= 1;
    assert_eq!(
        Session::initiate(alice.identity(), &bundle, &mut rng).unwrap_err(),
        SessionCreationError::InvalidBundle(hushwire::proto::BundleError::BadKemPreKeySignature)
    );
    // A prekey signed by somebody else does not verify under Bob's identity.
    let mallory = Account::new(3, 0, &mut rng);
    let mut bundle = bob.prekey_bundle().unwrap();
    bundle.signed_prekey = mallory.signed_prekey().unwrap().clone();
    assert!(Session::initiate(alice.identity(), &bundle, &mut rng).is_err());
}

#[test]
fn identity_with_foreign_binding_is_refused_on_decode() {
    let mut rng = rng(4);
    let bob = Account::new(2, 0, &mut rng);
    let mallory = Account::new(3, 0, &mut rng);
    let mut bytes = bob.prekey_bundle().unwrap().to_bytes();
    // Replace Bob's X25519 identity key (offset 2 + 4 + 32) with Mallory's.
    bytes[38..70].copy_from_slice(mallory.identity_key().dh_key().as_bytes());
    assert_eq!(
        PreKeyBundle::from_bytes(&bytes).unwrap_err(),
        DecodeError::InvalidValue {
            field: "identity binding signature"
        }
    );
}

#[test]
fn reused_one_time_prekey_is_refused() {
    let mut rng = rng(5);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    bob.generate_one_time_prekeys(1, &mut rng);
    let bundle = bob.prekey_bundle().unwrap();
    let otpk = bundle.one_time_prekey.as_ref().unwrap().id;
    let mut session = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let first = session.encrypt(b"hi").unwrap();
    bob.accept(&first, &mut rng).unwrap();
    assert_eq!(bob.one_time_prekey_counts().0, 0);
    // Replaying the same handshake, or a new one using the same bundle, is refused.
    assert_eq!(
        bob.accept(&first, &mut rng).unwrap_err(),
        SessionCreationError::UsedOneTimePreKey(otpk)
    );
    let mut again = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let m = again.encrypt(b"hi again").unwrap();
    assert_eq!(
        bob.accept(&m, &mut rng).unwrap_err(),
        SessionCreationError::UsedOneTimePreKey(otpk)
    );
}

#[test]
fn failed_handshake_consumes_nothing() {
    let mut rng = rng(6);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    bob.generate_one_time_prekeys(1, &mut rng);
    bob.generate_one_time_kem_prekeys(1, &mut rng);
    let bundle = bob.prekey_bundle().unwrap();
    let mut session = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let mut first = session.encrypt(b"hi").unwrap();
    let last = first.len() - 1;
    first[last] ^= 0x80;
    assert!(matches!(
        bob.accept(&first, &mut rng).unwrap_err(),
        SessionCreationError::Decryption(DecryptionError::AuthenticationFailed)
    ));
    assert_eq!(
        bob.one_time_prekey_counts(),
        (1, 1),
        "a forged handshake must not burn prekeys"
    );
    first[last] ^= 0x80;
    assert_eq!(bob.accept(&first, &mut rng).unwrap().plaintext, b"hi");
    assert_eq!(bob.one_time_prekey_counts(), (0, 0));
}

#[test]
fn altered_encrypted_header_is_refused_and_changes_nothing() {
    let mut p = established();
    let m = p.alice.encrypt(b"x").unwrap();
    let before = state(&p.bob);
    // The encrypted header is bytes 2..58; no header key opens an altered one, and neither does
    // any other byte of the body's tag, from which the header's nonce comes.
    for i in (2..58).chain(m.len() - 16..m.len()) {
        let mut altered = m.clone();
        altered[i] ^= 0x01;
        assert_eq!(
            p.bob.decrypt(&altered, &mut p.rng).unwrap_err(),
            DecryptionError::AuthenticationFailed,
            "byte {i}"
        );
    }
    assert_eq!(state(&p.bob), before);
    assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), b"x");
}

#[test]
fn replay_is_refused_and_changes_nothing() {
    let mut p = established();
    let m = p.alice.encrypt(b"once").unwrap();
    assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), b"once");
    let before = state(&p.bob);
    assert!(matches!(
        p.bob.decrypt(&m, &mut p.rng).unwrap_err(),
        DecryptionError::DuplicateMessage { index: 0, .. }
    ));
    assert_eq!(state(&p.bob), before);

    // A replay from a chain that has since been replaced.
    let reply = p.bob.encrypt(b"turn").unwrap();
    p.alice.decrypt(&reply, &mut p.rng).unwrap();
    let m2 = p.alice.encrypt(b"new chain").unwrap();
    p.bob.decrypt(&m2, &mut p.rng).unwrap();
    let before = state(&p.bob);
    assert!(matches!(
        p.bob.decrypt(&m, &mut p.rng).unwrap_err(),
        DecryptionError::DuplicateMessage { index: 0, .. }
    ));
    assert_eq!(state(&p.bob), before);
}

#[test]
fn tampered_message_fails_and_changes_nothing() {
    let mut p = established();
    let m = p.alice.encrypt(b"payload").unwrap();
    let before = state(&p.bob);
    for i in 0..m.len() {
        let mut t = m.clone();
        t[i] ^= 0x01;
        assert!(
            p.bob.decrypt(&t, &mut p.rng).is_err(),
            "flip at byte {i} accepted"
        );
        assert_eq!(state(&p.bob), before, "flip at byte {i} changed state");
    }
    assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), b"payload");
}

/// Issue 10, case 1: Alice encrypts 1,002 messages and only the last reaches Bob. The jump is
/// past `MAX_SKIP`, so the oldest skipped key is given up (counted), the other 1,000 are kept,
/// and every later message still decrypts, in both directions.
#[test]
fn a_burst_of_losses_past_max_skip_costs_only_the_lost_messages() {
    let mut p = established();
    let max = hushwire::ratchet::MAX_SKIP as usize;
    let messages: Vec<Vec<u8>> = (0..max + 2)
        .map(|_| p.alice.encrypt(b"m").unwrap())
        .collect();
    p.bob.decrypt(messages.last().unwrap(), &mut p.rng).unwrap();
    assert_eq!(p.bob.skipped_message_keys(), max);
    assert_eq!(p.bob.discarded_message_keys(), 1);
    assert_eq!(p.bob.missing_messages()[0].missing.len(), max);
    // The given-up message cannot be read; every kept one can.
    let before = state(&p.bob);
    assert!(matches!(
        p.bob.decrypt(&messages[0], &mut p.rng).unwrap_err(),
        DecryptionError::DuplicateMessage { index: 0, .. }
    ));
    assert_eq!(state(&p.bob), before);
    for m in &messages[1..=max] {
        assert_eq!(p.bob.decrypt(m, &mut p.rng).unwrap(), b"m");
    }
    assert!(p.bob.missing_messages().is_empty());
    // They keep talking.
    for round in 0..3u8 {
        let a = p.alice.encrypt(&[round]).unwrap();
        assert_eq!(p.bob.decrypt(&a, &mut p.rng).unwrap(), [round]);
        let b = p.bob.encrypt(&[round, 1]).unwrap();
        assert_eq!(p.alice.decrypt(&b, &mut p.rng).unwrap(), [round, 1]);
    }
}

/// A loss in the chain that a new ratchet key closes: 3,000 of Alice's messages are lost, then
/// she turns her ratchet. Bob keeps the last `MAX_SKIP` keys of the closed chain, counts the
/// rest, and reads her new chain.
#[test]
fn a_loss_in_a_closed_chain_costs_only_the_lost_messages() {
    let mut p = established();
    let max = hushwire::ratchet::MAX_SKIP as usize;
    // Bob has read Alice's current chain up to index 1; its remaining 3,000 are lost.
    let m0 = p.alice.encrypt(b"0").unwrap();
    p.bob.decrypt(&m0, &mut p.rng).unwrap();
    let lost: Vec<Vec<u8>> = (0..3000).map(|_| p.alice.encrypt(b"x").unwrap()).collect();
    let b = p.bob.encrypt(b"from bob").unwrap();
    p.alice.decrypt(&b, &mut p.rng).unwrap();
    let a = p.alice.encrypt(b"new chain").unwrap();
    assert_eq!(p.bob.decrypt(&a, &mut p.rng).unwrap(), b"new chain");
    assert_eq!(p.bob.skipped_message_keys(), max);
    assert_eq!(p.bob.discarded_message_keys(), 2000);
    assert_eq!(p.bob.decrypt(&lost[2999], &mut p.rng).unwrap(), b"x");
}

/// Past `MAX_JUMP` a message is refused before any work beyond the bound, and the session is
/// unchanged; a closed chain longer than `MAX_JUMP` is given up whole without walking it.
#[test]
fn a_jump_past_max_jump_is_refused_and_a_longer_closed_chain_is_given_up() {
    let mut p = established();
    let jump = hushwire::ratchet::MAX_JUMP;
    let mut messages: Vec<Vec<u8>> = (0..jump + 2)
        .map(|_| p.alice.encrypt(b"m").unwrap())
        .collect();
    let before = state(&p.bob);
    let too_far = messages.pop().unwrap();
    assert_eq!(
        p.bob.decrypt(&too_far, &mut p.rng).unwrap_err(),
        DecryptionError::TooFarAhead {
            index: jump + 1,
            skip: jump + 1
        }
    );
    assert_eq!(state(&p.bob), before);
    // Exactly MAX_JUMP ahead is walked.
    let at_bound = messages.pop().unwrap();
    p.bob.decrypt(&at_bound, &mut p.rng).unwrap();
    assert_eq!(
        p.bob.discarded_message_keys(),
        u64::from(jump - hushwire::ratchet::MAX_SKIP)
    );

    // Now a closed chain of MAX_JUMP + 5 unread messages.
    let mut q = established();
    let m0 = q.alice.encrypt(b"0").unwrap();
    q.bob.decrypt(&m0, &mut q.rng).unwrap();
    for _ in 0..jump + 5 {
        q.alice.encrypt(b"lost").unwrap();
    }
    let b = q.bob.encrypt(b"from bob").unwrap();
    q.alice.decrypt(&b, &mut q.rng).unwrap();
    let a = q.alice.encrypt(b"after").unwrap();
    assert_eq!(q.bob.decrypt(&a, &mut q.rng).unwrap(), b"after");
    assert_eq!(q.bob.discarded_message_keys(), u64::from(jump + 5));
    assert_eq!(q.bob.skipped_message_keys(), 0);
}

#[test]
fn skipped_key_store_discards_oldest_and_keeps_working() {
    let mut p = established();
    // Three rounds, each 900 messages of which only the last is delivered: 2700 skipped keys,
    // more than MAX_SKIPPED_KEYS, so the oldest are discarded, and the session keeps working.
    let mut held_back = Vec::new();
    for _ in 0..3 {
        let batch: Vec<_> = (0..900).map(|_| p.alice.encrypt(b"m").unwrap()).collect();
        p.bob.decrypt(batch.last().unwrap(), &mut p.rng).unwrap();
        held_back.push(batch);
        let reply = p.bob.encrypt(b"r").unwrap();
        p.alice.decrypt(&reply, &mut p.rng).unwrap();
    }
    assert_eq!(
        p.bob.skipped_message_keys(),
        hushwire::ratchet::MAX_SKIPPED_KEYS
    );
    assert_eq!(p.bob.discarded_message_keys(), 3 * 899 - 2000);
    // The oldest held-back message is gone; the newest is still readable.
    assert!(matches!(
        p.bob.decrypt(&held_back[0][0], &mut p.rng).unwrap_err(),
        DecryptionError::DuplicateMessage { .. }
    ));
    assert_eq!(p.bob.decrypt(&held_back[2][0], &mut p.rng).unwrap(), b"m");
}

#[test]
fn gaps_name_chain_and_indices() {
    let mut p = established();
    let (ms, headers): (Vec<_>, Vec<_>) = (0..5)
        .map(|i| p.alice.encrypt_message(&[i]).unwrap())
        .unzip();
    p.bob.decrypt(&ms[0], &mut p.rng).unwrap();
    p.bob.decrypt(&ms[3], &mut p.rng).unwrap();
    let gaps = p.bob.missing_messages();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].missing, vec![1, 2]);
    assert_eq!(gaps[0].chain, headers[0].ratchet_key);
    // Message 4 is not a gap: nothing after it has arrived.
    p.bob.decrypt(&ms[2], &mut p.rng).unwrap();
    assert_eq!(p.bob.missing_messages()[0].missing, vec![1]);
}

#[test]
fn sealed_session_round_trips_and_refuses_wrong_key_and_corruption() {
    let mut p = established();
    let key = StorageKey::from_bytes([42; 32]);
    let sealed = p.bob.seal(&key, &mut p.rng);
    let mut restored = Session::unseal(&sealed, &key).unwrap();
    assert_eq!(state(&restored), state(&p.bob));
    let m = p.alice.encrypt(b"after restore").unwrap();
    assert_eq!(restored.decrypt(&m, &mut p.rng).unwrap(), b"after restore");

    assert_eq!(
        Session::unseal(&sealed, &StorageKey::from_bytes([43; 32])).unwrap_err(),
        UnsealError::WrongKey
    );
    let mut corrupt = sealed.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert_eq!(
        Session::unseal(&corrupt, &key).unwrap_err(),
        UnsealError::Corrupt
    );
    assert_eq!(
        Session::unseal(&sealed[..30], &key).unwrap_err(),
        UnsealError::Truncated
    );
    let mut version = sealed.clone();
    version[0] = 9;
    assert_eq!(
        Session::unseal(&version, &key).unwrap_err(),
        UnsealError::UnsupportedVersion(9)
    );
    let account_blob = p.bob_account.seal(&key, &mut p.rng);
    assert_eq!(
        Session::unseal(&account_blob, &key).unwrap_err(),
        UnsealError::WrongKind {
            expected: 0x30,
            found: 0x31
        }
    );
}

#[test]
fn sealed_account_round_trips() {
    let mut rng = rng(7);
    let mut bob = Account::new(2, 1000, &mut rng);
    bob.generate_one_time_prekeys(3, &mut rng);
    bob.generate_one_time_kem_prekeys(2, &mut rng);
    bob.rotate_signed_prekey(2000, &mut rng);
    let key = StorageKey::from_bytes([1; 32]);
    let restored = Account::unseal(&bob.seal(&key, &mut rng), &key).unwrap();
    assert_eq!(restored.prekey_bundle(), bob.prekey_bundle());
    assert_eq!(restored.one_time_prekey_counts(), (3, 2));
    assert_eq!(restored.signed_prekey_created_at(), Some(2000));
    // The restored account accepts a handshake made against the original's bundle.
    let alice = Account::new(1, 0, &mut rng);
    let mut restored = restored;
    let mut s =
        Session::initiate(alice.identity(), &bob.prekey_bundle().unwrap(), &mut rng).unwrap();
    let m = s.encrypt(b"hello").unwrap();
    assert_eq!(restored.accept(&m, &mut rng).unwrap().plaintext, b"hello");
}

#[test]
fn handshake_against_previous_signed_prekey_still_completes() {
    let mut rng = rng(8);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    let old_bundle = bob.prekey_bundle().unwrap();
    bob.rotate_signed_prekey(10, &mut rng);
    let mut s = Session::initiate(alice.identity(), &old_bundle, &mut rng).unwrap();
    let m = s.encrypt(b"late").unwrap();
    assert_eq!(bob.accept(&m, &mut rng).unwrap().plaintext, b"late");
    // After KEPT_ROTATED_PREKEYS rotations the old key is gone, and the error says so.
    for t in 1..hushwire::KEPT_ROTATED_PREKEYS as u64 {
        bob.rotate_signed_prekey(20 + t, &mut rng);
    }
    let mut s = Session::initiate(alice.identity(), &old_bundle, &mut rng).unwrap();
    let m = s.encrypt(b"too late").unwrap();
    assert_eq!(
        bob.accept(&m, &mut rng).unwrap_err(),
        SessionCreationError::RetiredSignedPreKey(old_bundle.signed_prekey.id)
    );
}

#[test]
fn oversized_and_truncated_input_is_refused() {
    let mut p = established();
    assert_eq!(
        p.alice
            .encrypt(&vec![0; MAX_PLAINTEXT_LEN + 1])
            .unwrap_err(),
        EncryptionError::PlaintextTooLong {
            len: MAX_PLAINTEXT_LEN + 1
        }
    );
    let max = p.alice.encrypt(&vec![7; MAX_PLAINTEXT_LEN]).unwrap();
    assert_eq!(
        p.bob.decrypt(&max, &mut p.rng).unwrap().len(),
        MAX_PLAINTEXT_LEN
    );

    let m = p.alice.encrypt(b"hello").unwrap();
    let before = state(&p.bob);
    for len in 0..m.len() {
        assert!(
            p.bob.decrypt(&m[..len], &mut p.rng).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut long = m.clone();
    long.push(0);
    assert_eq!(
        p.bob.decrypt(&long, &mut p.rng).unwrap_err(),
        DecryptionError::Malformed(DecodeError::TrailingBytes {
            structure: "message"
        })
    );
    // A length prefix beyond the limit is refused before allocating.
    let mut huge = m[..58].to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        p.bob.decrypt(&huge, &mut p.rng).unwrap_err(),
        DecryptionError::Malformed(DecodeError::TooLong {
            field: "ciphertext",
            ..
        })
    ));
    assert_eq!(state(&p.bob), before);
    assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), b"hello");
}

#[test]
fn prekey_message_for_another_session_is_reported() {
    let mut p = established();
    let mut rng = rng(10);
    let carol = Account::new(3, 0, &mut rng);
    let mut bob_account = p.bob_account;
    let mut s = Session::initiate(
        carol.identity(),
        &bob_account.prekey_bundle().unwrap(),
        &mut rng,
    )
    .unwrap();
    let m = s.encrypt(b"from carol").unwrap();
    assert_eq!(
        p.bob.decrypt(&m, &mut p.rng).unwrap_err(),
        DecryptionError::OtherSession
    );
    assert_eq!(
        bob_account.accept(&m, &mut rng).unwrap().plaintext,
        b"from carol"
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut p = established();
    let key = StorageKey::from_bytes([0xAB; 32]);
    assert_eq!(format!("{key:?}"), "StorageKey(<redacted>)");
    let account_debug = format!("{:?}", p.bob_account);
    let session_debug = format!("{:?}", p.bob);
    let identity_debug = format!("{:?}", p.bob_account.identity());
    // Sealed contents hold every secret; none of their 8-byte windows may appear in Debug output.
    let sealed = p.bob.seal(&key, &mut p.rng);
    for text in [&account_debug, &session_debug, &identity_debug] {
        assert!(!text.contains("secret:"), "{text}");
        assert!(text.len() < 2000, "Debug output unexpectedly large: {text}");
    }
    assert!(
        session_debug.starts_with("Session { local: IdentityKey("),
        "{session_debug}"
    );
    assert!(
        identity_debug.starts_with("IdentityKeyPair("),
        "{identity_debug}"
    );
    assert!(!sealed.is_empty());
}

/// Issue 10, case 6: a one-time prekey id the account never issued is reported as such, not as
/// a replay; a used one is reported as used.
#[test]
fn a_never_issued_one_time_prekey_is_told_apart_from_a_used_one() {
    let mut rng = rng(21);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    bob.generate_one_time_prekeys(1, &mut rng);
    let mut bundle = bob.prekey_bundle().unwrap();
    let real = bundle.one_time_prekey.clone().unwrap();
    let mut bogus = real.clone();
    bogus.id = 4_000_000;
    bundle.one_time_prekey = Some(bogus);
    let mut s = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let m = s.encrypt(b"x").unwrap();
    assert_eq!(
        bob.accept(&m, &mut rng).unwrap_err(),
        SessionCreationError::UnknownOneTimePreKey(4_000_000)
    );
    assert!(
        SessionCreationError::UnknownOneTimePreKey(4_000_000)
            .to_string()
            .contains("never issued")
    );
    assert!(
        SessionCreationError::UsedOneTimePreKey(real.id)
            .to_string()
            .contains("already used")
    );
}
