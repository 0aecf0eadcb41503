//! Any bytes: unsealing a session or an account never panics.
#![no_main]

use hushwire::{Account, Session, StorageKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = StorageKey::from_bytes([3; 32]);
    let _ = Session::unseal(data, &key);
    let _ = Account::unseal(data, &key);
});
