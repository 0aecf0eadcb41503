//! Any bytes offered to an established session: decrypt never panics, and a failed decrypt
//! leaves the session's state unchanged.
#![no_main]

use hushwire::{Account, Session, StorageKey};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

fn state(session: &Session) -> Vec<u8> {
    session.seal(&StorageKey::from_bytes([1; 32]), &mut ChaCha20Rng::from_seed([0; 32]))
}

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob_account = Account::new(2, 0, &mut rng);
    let bundle = bob_account.prekey_bundle().expect("bundle");
    let mut alice_session = Session::initiate(alice.identity(), &bundle, &mut rng).expect("initiate");
    let first = alice_session.encrypt(b"hi").expect("encrypt");
    let mut bob = bob_account.accept(&first, &mut rng).expect("accept").session;
    let before = state(&bob);
    if bob.decrypt(data, &mut rng).is_err() {
        assert_eq!(state(&bob), before, "failed decrypt changed the session");
    }
});
