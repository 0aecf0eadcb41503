//! Sealing persisted state (sessions, accounts) under a key the caller owns.
//!
//! ```text
//! sealed = version[1]=0x01 ‖ kind[1] ‖ key_check[16] ‖ nonce[24] ‖ XChaCha20-Poly1305(contents)
//! enc_key   = HKDF-SHA256(salt = 0^32, ikm = storage_key, info = KDF_SEAL_KEY, L = 32)
//! key_check = HKDF-SHA256(salt = 0^32, ikm = storage_key, info = KDF_SEAL_KEY_CHECK, L = 16)
//! AEAD associated data = the 42 header bytes before the ciphertext
//! ```
//!
//! The key-check value lets unsealing say "wrong key" rather than "corrupt" (ChaCha20-Poly1305
//! alone cannot tell the two apart); it reveals nothing about the key beyond a 128-bit tag. The
//! random 24-byte nonce makes nonce reuse under one storage key negligible however often state is
//! saved. Contents are a postcard encoding of a versioned serde enum.

use core::fmt;

use hushwire_proto::labels;
use rand_core::CryptoRng;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::cipher::provider;
use crate::error::UnsealError;
use crate::kdf::hkdf;

/// The sealed format's version byte.
pub const SEAL_VERSION: u8 = 1;
/// Kind byte of a sealed [`crate::Session`].
pub const KIND_SESSION: u8 = 0x30;
/// Kind byte of a sealed [`crate::Account`].
pub const KIND_ACCOUNT: u8 = 0x31;
/// Kind byte of a sealed application value ([`seal_value`]): what a client keeps beside its
/// account and sessions (the browser client's IndexedDB records, `docs/browser.md`).
pub const KIND_VALUE: u8 = 0x33;
/// Largest sealed blob accepted (16 MiB): more than any account or session reaches.
pub const MAX_SEALED_LEN: usize = 16 * 1024 * 1024;
const HEADER_LEN: usize = 2 + 16 + 24;

/// A 32-byte key, owned by the caller, under which state is sealed. It holds the two keys
/// derived from it (the encryption key and the key-check value), computed once when it is made,
/// so sealing and unsealing run no KDF. Zeroized on drop; `Debug` prints nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StorageKey {
    enc_key: [u8; 32],
    check: [u8; 16],
}

impl StorageKey {
    /// Wraps key bytes (from a KDF over a passphrase, a platform keystore, …).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        Self {
            enc_key: *hkdf::<32>(&[0u8; 32], bytes.as_slice(), labels::KDF_SEAL_KEY),
            check: *hkdf::<16>(&[0u8; 32], bytes.as_slice(), labels::KDF_SEAL_KEY_CHECK),
        }
    }

    fn derive(&self) -> (&[u8; 32], &[u8; 16]) {
        (&self.enc_key, &self.check)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(<redacted>)")
    }
}

/// Seals `contents` as `kind`, drawing the 24-byte nonce from `rng`.
pub(crate) fn seal<R: CryptoRng + ?Sized>(
    kind: u8,
    contents: &[u8],
    key: &StorageKey,
    rng: &mut R,
) -> Vec<u8> {
    let (enc_key, check) = key.derive();
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(HEADER_LEN + contents.len() + 16);
    out.push(SEAL_VERSION);
    out.push(kind);
    out.extend_from_slice(check.as_slice());
    out.extend_from_slice(&nonce);
    let ciphertext = provider().xseal(enc_key, &nonce, &out, contents);
    out.extend_from_slice(&ciphertext);
    out
}

/// Seals arbitrary bytes under `key` in the same format as accounts and sessions, with the kind
/// byte [`KIND_VALUE`], drawing the 24-byte nonce from `rng`.
pub fn seal_value<R: CryptoRng + ?Sized>(
    contents: &[u8],
    key: &StorageKey,
    rng: &mut R,
) -> Vec<u8> {
    seal(KIND_VALUE, contents, key, rng)
}

/// Opens bytes sealed by [`seal_value`]: "wrong key", "corrupt" and the other
/// [`UnsealError`]s as for accounts and sessions.
pub fn unseal_value(sealed: &[u8], key: &StorageKey) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    unseal(KIND_VALUE, sealed, key)
}

/// Opens a blob sealed as `kind`.
pub(crate) fn unseal(
    kind: u8,
    sealed: &[u8],
    key: &StorageKey,
) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    if sealed.len() > MAX_SEALED_LEN {
        return Err(UnsealError::TooLarge);
    }
    if sealed.len() < HEADER_LEN + 16 {
        return Err(UnsealError::Truncated);
    }
    let (header, ciphertext) = sealed.split_at(HEADER_LEN);
    let (fixed, nonce) = header.split_at(18);
    let (version_kind, stored_check) = fixed.split_at(2);
    if let [version, found] = version_kind {
        if *version != SEAL_VERSION {
            return Err(UnsealError::UnsupportedVersion(*version));
        }
        if *found != kind {
            return Err(UnsealError::WrongKind {
                expected: kind,
                found: *found,
            });
        }
    }
    let (enc_key, check) = key.derive();
    if !bool::from(check.as_slice().ct_eq(stored_check)) {
        return Err(UnsealError::WrongKey);
    }
    let mut nonce_bytes = [0u8; 24];
    nonce_bytes.copy_from_slice(nonce);
    provider()
        .xopen(enc_key, &nonce_bytes, header, ciphertext)
        .map(Zeroizing::new)
        .ok_or(UnsealError::Corrupt)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    /// Sealed values open under their key only, and no other sealed kind opens as a value
    /// (nor a value as another kind), so a browser record cannot be swapped for an account.
    #[test]
    fn values_are_their_own_kind() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let key = StorageKey::from_bytes([2; 32]);
        let sealed = seal_value(b"record", &key, &mut rng);
        assert_eq!(unseal_value(&sealed, &key).unwrap().as_slice(), b"record");
        assert_eq!(
            unseal_value(&sealed, &StorageKey::from_bytes([3; 32])).unwrap_err(),
            UnsealError::WrongKey
        );
        for kind in [KIND_SESSION, KIND_ACCOUNT, 0x32] {
            assert!(unseal_value(&seal(kind, b"x", &key, &mut rng), &key).is_err());
            assert!(unseal(kind, &sealed, &key).is_err());
        }
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            unseal_value(&altered, &key).unwrap_err(),
            UnsealError::Corrupt
        );
    }
}
