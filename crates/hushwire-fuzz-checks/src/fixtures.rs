//! The fixed keys and sessions the targets start from.
//!
//! Each is built from a fixed ChaCha20 seed, once per process: generating accounts (ML-KEM-1024
//! above all) costs far more than running one input, and a fixed starting point makes every
//! crash reproducible from its input alone. The seed generator (`examples/make-seeds.rs`) uses
//! the same fixtures, so its seeds reach past the signature and AEAD checks.

use std::sync::OnceLock;

use hushwire::proto::relay::Challenge;
use hushwire::transcript::AuditorKey;
use hushwire::{Account, IdentityKeyPair, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

/// The key sealed sessions, accounts and transcript writers are opened with in [`crate::unseal`].
pub const UNSEAL_KEY: [u8; 32] = [3; 32];

/// The chain id [`crate::audit_record`] verifies logs against.
pub const AUDIT_CHAIN_ID: [u8; 16] = *b"hushwire-fuzz-au";

/// The relay whose key signs [`relay_challenge`].
pub fn relay_signer() -> &'static IdentityKeyPair {
    static SIGNER: OnceLock<IdentityKeyPair> = OnceLock::new();
    SIGNER.get_or_init(|| IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([0x0d; 32])))
}

/// The challenge relay-frame credentials are checked against in [`crate::relay_frame`],
/// signed by [`relay_signer`] as a relay signs its challenges.
pub fn relay_challenge() -> &'static Challenge {
    static CHALLENGE: OnceLock<Challenge> = OnceLock::new();
    CHALLENGE.get_or_init(|| Challenge::new([0x0c; 32], 1_700_000_000_000, relay_signer()))
}

/// What the first message of [`Pair::first`] says.
pub const FIRST_PLAINTEXT: &[u8] = b"hello";

/// An established session between Alice (initiator) and Bob (responder), as
/// `crates/hushwire/tests/interleavings.rs` builds it.
pub struct Pair {
    /// Alice's session. She has not heard back yet, so she still sends prekey messages.
    pub alice: Session,
    /// Bob's session, created by accepting [`Pair::first`].
    pub bob: Session,
    /// Alice's first (prekey) message, already accepted by Bob.
    pub first: Vec<u8>,
    /// [`session_state`] of [`Pair::bob`], computed once.
    pub bob_state: Vec<u8>,
    /// `(ratchet key, index)` of [`Pair::first`], from its decrypted header.
    pub first_id: ([u8; 32], u32),
}

/// The established pair, built on first use.
pub fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let alice_account = Account::new(1, 0, &mut rng);
        let mut bob_account = Account::new(2, 0, &mut rng);
        bob_account.generate_one_time_prekeys(1, &mut rng);
        let bundle = bob_account
            .prekey_bundle()
            .expect("a new account has a bundle");
        let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng)
            .expect("initiate from a fresh bundle");
        let first = alice.encrypt(FIRST_PLAINTEXT).expect("encrypt");
        let inbound = bob_account
            .accept(&first, &mut rng)
            .expect("accept the first message");
        let bob = inbound.session;
        let bob_state = session_state(&bob);
        Pair {
            alice,
            bob,
            first,
            bob_state,
            first_id: (*inbound.header.ratchet_key.as_bytes(), inbound.header.index),
        }
    })
}

/// A session's whole persistent state, as bytes: sealed under a fixed key with a fixed nonce,
/// so two equal states give equal bytes.
pub fn session_state(session: &Session) -> Vec<u8> {
    session.seal(
        &StorageKey::from_bytes([5; 32]),
        &mut ChaCha20Rng::from_seed([0; 32]),
    )
}

/// Encrypts `plaintext` and returns the message with its `(ratchet key, index)`: which chain
/// and position it holds (the header itself is encrypted on the wire).
pub fn encrypt_with_id(session: &mut Session, plaintext: &[u8]) -> (Vec<u8>, ([u8; 32], u32)) {
    let (bytes, header) = session.encrypt_message(plaintext).expect("encrypt");
    (bytes, (*header.ratchet_key.as_bytes(), header.index))
}

/// The auditor key [`crate::export_reader`] reads exports with.
pub fn auditor_key() -> &'static AuditorKey {
    static KEY: OnceLock<AuditorKey> = OnceLock::new();
    KEY.get_or_init(|| AuditorKey::generate(&mut ChaCha20Rng::from_seed([0x0a; 32])))
}

/// The identity that signs the checkpoints of the audit chain [`AUDIT_CHAIN_ID`].
pub fn audit_signer() -> &'static IdentityKeyPair {
    static SIGNER: OnceLock<IdentityKeyPair> = OnceLock::new();
    SIGNER.get_or_init(|| IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([0x0b; 32])))
}
