//! The store's keys: one 32-byte master key — from a passphrase through Argon2id, or handed over
//! by the embedding app — expanded with HKDF-SHA256 into independent subkeys, and the sealing of
//! every sensitive value the store holds (`docs/client.md` §2).
//!
//! Each value is sealed with XChaCha20-Poly1305 under the values key, a fresh 24-byte nonce and
//! associated data naming what the value is and where it lives (`purpose`, `context`): a sealed
//! contact cannot be replayed as an outbox entry, nor one contact's row moved onto another.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac as _};
use hushwire::StorageKey;
use hushwire::sealed_file::{SealedFileError, expand};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{ClientError, Result};

/// HKDF info for the key the core's sealed objects (account, sessions, transcript writers) use.
const INFO_STORAGE: &[u8] = b"hushwire-client v1 storage key";
// The values key, the check value and the associated data's prefix are the sealed-file
// format's (`hushwire::sealed_file`): a store's values are sealed the same way.
use hushwire::sealed_file::{AD_PREFIX, INFO_CHECK, INFO_VALUES};
/// HKDF info for the key of blind indexes (keyed hashes of addresses, so the store can look a
/// contact up without holding the address in the clear).
const INFO_INDEX: &[u8] = b"hushwire-client v1 index key";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

// The secret, its cost parameters and the derivation of the master key live in the core
// (`hushwire::sealed_file`), beside the sealed-file format, so WebAssembly can open the files
// the CLI writes; the store uses the same derivation.
pub(crate) use hushwire::sealed_file::KeyDerivation;
pub use hushwire::sealed_file::{KdfParams, MIN_PASSPHRASE_CHARS, Secret};

impl From<SealedFileError> for ClientError {
    fn from(e: SealedFileError) -> Self {
        match e {
            SealedFileError::WeakPassphrase { min_chars } => Self::WeakPassphrase { min_chars },
            SealedFileError::SecretKindMismatch { expected } => {
                Self::SecretKindMismatch { expected }
            }
            SealedFileError::WrongSecret => Self::WrongSecret,
            SealedFileError::Malformed => Self::CorruptStore("key derivation parameters"),
        }
    }
}

/// The subkeys of one unlocked store. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Vault {
    storage: [u8; 32],
    values: [u8; 32],
    index: [u8; 32],
    check: [u8; 32],
}

impl Vault {
    pub(crate) fn from_master(master: &[u8; 32]) -> Self {
        Self {
            storage: expand(master, INFO_STORAGE),
            values: expand(master, INFO_VALUES),
            index: expand(master, INFO_INDEX),
            check: expand(master, INFO_CHECK),
        }
    }

    /// The value stored at creation to recognise the right secret later.
    pub(crate) fn check_value(&self) -> [u8; 32] {
        self.check
    }

    /// Compares a stored check value in constant time.
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.check.as_slice().ct_eq(stored))
    }

    /// HMAC-SHA256 of `value` under the index key: a lookup key that reveals nothing without it.
    pub(crate) fn blind_index(&self, value: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // HMAC takes keys of any length: a 32-byte key is never refused.
        if let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(&self.index) {
            mac.update(value);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    /// The key for the core's sealed objects.
    pub(crate) fn storage_key(&self) -> StorageKey {
        StorageKey::from_bytes(self.storage)
    }

    fn associated_data(purpose: &str, context: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(AD_PREFIX.len() + purpose.len() + 1 + context.len());
        ad.extend_from_slice(AD_PREFIX);
        ad.extend_from_slice(purpose.as_bytes());
        ad.push(0);
        ad.extend_from_slice(context);
        ad
    }

    /// Seals `plaintext` as `purpose` at `context`: `nonce[24] ‖ ciphertext ‖ tag[16]`.
    pub(crate) fn seal<R: CryptoRng + ?Sized>(
        &self,
        purpose: &str,
        context: &[u8],
        plaintext: &[u8],
        rng: &mut R,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&self.values.into());
        let ad = Self::associated_data(purpose, context);
        // Encryption fails only beyond 256 GiB; values are bounded far below.
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed as `purpose` at `context`; `CorruptStore` if it does not
    /// authenticate.
    pub(crate) fn open(
        &self,
        purpose: &'static str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(ClientError::CorruptStore(purpose));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| ClientError::CorruptStore(purpose))?;
        let cipher = XChaCha20Poly1305::new(&self.values.into());
        let ad = Self::associated_data(purpose, context);
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &ad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| ClientError::CorruptStore(purpose))
    }

    /// Seals a serde value (postcard encoding).
    pub(crate) fn seal_value<T: Serialize, R: CryptoRng + ?Sized>(
        &self,
        purpose: &str,
        context: &[u8],
        value: &T,
        rng: &mut R,
    ) -> Vec<u8> {
        let bytes = Zeroizing::new(postcard::to_allocvec(value).unwrap_or_default());
        self.seal(purpose, context, &bytes, rng)
    }

    /// Opens a serde value sealed with [`Vault::seal_value`].
    pub(crate) fn open_value<T: for<'de> Deserialize<'de>>(
        &self,
        purpose: &'static str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<T> {
        let bytes = self.open(purpose, context, sealed)?;
        postcard::from_bytes(&bytes).map_err(|_| ClientError::CorruptStore(purpose))
    }
}

/// Seals a small secret for a file of its own (a clinic's organization key or archive key,
/// `hushwire org`) in the core's sealed-file format ([`hushwire::sealed_file`], layout in
/// `docs/conversations.md` §7.5). [`ClientError::WeakPassphrase`] for a short passphrase.
pub fn seal_secret_file(
    secret: &Secret,
    params: KdfParams,
    purpose: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut rng = crate::os::rng();
    Ok(hushwire::sealed_file::seal(
        secret, params, purpose, plaintext, &mut rng,
    )?)
}

/// Opens a file sealed by [`seal_secret_file`] as `purpose`: [`ClientError::WrongSecret`] if
/// `secret` is not the one it was sealed with, [`ClientError::CorruptStore`] if the file is
/// not such a file or was altered.
pub fn open_secret_file(
    secret: &Secret,
    purpose: &'static str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    hushwire::sealed_file::open(secret, purpose, sealed).map_err(|e| match e {
        SealedFileError::Malformed => ClientError::CorruptStore(purpose),
        e => e.into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::SeedableRng as _;

    #[test]
    fn a_sealed_file_opens_only_with_its_secret_and_purpose() {
        let secret = Secret::passphrase("correct horse battery");
        let sealed =
            seal_secret_file(&secret, KdfParams::INSECURE_FOR_TESTS, "org key", b"k").unwrap();
        assert_eq!(
            open_secret_file(&secret, "org key", &sealed)
                .unwrap()
                .as_slice(),
            b"k"
        );
        assert!(matches!(
            open_secret_file(
                &Secret::passphrase("wrong horse battery"),
                "org key",
                &sealed
            ),
            Err(ClientError::WrongSecret)
        ));
        assert!(open_secret_file(&secret, "other", &sealed).is_err());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(open_secret_file(&secret, "org key", &altered).is_err());
        assert!(open_secret_file(&secret, "org key", b"HWSEAL01").is_err());
        assert!(matches!(
            seal_secret_file(
                &Secret::passphrase("short"),
                KdfParams::INSECURE_FOR_TESTS,
                "k",
                b""
            ),
            Err(ClientError::WeakPassphrase { .. })
        ));
    }

    #[test]
    fn sealed_values_are_bound_to_purpose_and_context() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        let vault = Vault::from_master(&[9; 32]);
        let sealed = vault.seal("contact", b"1", b"alice", &mut rng);
        assert_eq!(
            vault.open("contact", b"1", &sealed).unwrap().as_slice(),
            b"alice"
        );
        assert!(vault.open("contact", b"2", &sealed).is_err());
        assert!(vault.open("outbox", b"1", &sealed).is_err());
        assert!(
            Vault::from_master(&[8; 32])
                .open("contact", b"1", &sealed)
                .is_err()
        );
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(vault.open("contact", b"1", &flipped).is_err());
        assert!(vault.open("contact", b"1", &sealed[..20]).is_err());
    }
}
