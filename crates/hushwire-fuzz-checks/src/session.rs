//! What an established session and the local store are handed: arbitrary message bytes, and
//! sealed blobs read back from storage the attacker may have written to.

use hushwire::transcript::TranscriptWriter;
use hushwire::{Account, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

use crate::fixtures::{UNSEAL_KEY, pair, session_state};

/// Any bytes offered to Bob's established session: decrypt never panics; a failed decrypt
/// leaves the session byte-identical; a message that decrypts does so only once, and its
/// replay also leaves the session unchanged.
pub fn session_decrypt(data: &[u8]) {
    let fixture = pair();
    let mut bob = fixture.bob.clone();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    if bob.decrypt(data, &mut rng).is_err() {
        assert_eq!(
            session_state(&bob),
            fixture.bob_state,
            "a failed decrypt changed the session"
        );
        return;
    }
    let after = session_state(&bob);
    assert!(
        bob.decrypt(data, &mut rng).is_err(),
        "a message decrypted twice"
    );
    assert_eq!(session_state(&bob), after, "a replay changed the session");
}

/// Any bytes as a sealed session, account or transcript writer under [`UNSEAL_KEY`]: unsealing
/// never panics, and whatever unseals seals and unseals again to the same state.
pub fn unseal(data: &[u8]) {
    let key = StorageKey::from_bytes(UNSEAL_KEY);
    let mut rng = ChaCha20Rng::from_seed([0; 32]);
    if let Ok(session) = Session::unseal(data, &key) {
        let again = Session::unseal(&session.seal(&key, &mut rng), &key)
            .expect("a session we sealed unseals");
        assert_eq!(session_state(&again), session_state(&session));
    }
    if let Ok(account) = Account::unseal(data, &key) {
        let resealed = account.seal(&key, &mut ChaCha20Rng::from_seed([0; 32]));
        let again = Account::unseal(&resealed, &key).expect("an account we sealed unseals");
        assert_eq!(
            again.seal(&key, &mut ChaCha20Rng::from_seed([0; 32])),
            resealed
        );
    }
    if let Ok(writer) = TranscriptWriter::unseal(data, &key) {
        let resealed = writer.seal(&key, &mut ChaCha20Rng::from_seed([0; 32]));
        let again = TranscriptWriter::unseal(&resealed, &key).expect("a writer we sealed unseals");
        assert_eq!(
            again.seal(&key, &mut ChaCha20Rng::from_seed([0; 32])),
            resealed
        );
    }
}
