//! The store's keys: one 32-byte master key — from a passphrase through Argon2id, or handed over
//! by the embedding app — expanded with HKDF-SHA256 into independent subkeys, and the sealing of
//! every sensitive value the store holds (`docs/client.md` §2).
//!
//! Each value is sealed with XChaCha20-Poly1305 under the values key, a fresh 24-byte nonce and
//! associated data naming what the value is and where it lives (`purpose`, `context`): a sealed
//! contact cannot be replayed as an outbox entry, nor one contact's row moved onto another.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use hushwire::StorageKey;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{ClientError, Result};

/// HKDF info for the key the core's sealed objects (account, sessions, transcript writers) use.
const INFO_STORAGE: &[u8] = b"hushwire-client v1 storage key";
/// HKDF info for the key the client's own sealed values use.
const INFO_VALUES: &[u8] = b"hushwire-client v1 values key";
/// HKDF info for the key of blind indexes (keyed hashes of addresses, so the store can look a
/// contact up without holding the address in the clear).
const INFO_INDEX: &[u8] = b"hushwire-client v1 index key";
/// HKDF info for the value stored to recognise the right secret.
const INFO_CHECK: &[u8] = b"hushwire-client v1 key check";
/// Prefix of every sealed value's associated data.
const AD_PREFIX: &[u8] = b"hushwire-client v1 value\x00";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Shortest passphrase accepted when creating a store.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// What unlocks a store.
pub enum Secret {
    /// A passphrase, stretched with Argon2id (parameters stored in the store).
    Passphrase(Zeroizing<String>),
    /// A 32-byte key from the embedding app (a platform keystore, an HSM): used as the master key.
    Key(Zeroizing<[u8; 32]>),
}

impl Secret {
    /// A passphrase secret.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Self::Passphrase(Zeroizing::new(passphrase.into()))
    }

    /// A raw 32-byte key secret.
    pub fn key(key: [u8; 32]) -> Self {
        Self::Key(Zeroizing::new(key))
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase(_) => "passphrase",
            Self::Key(_) => "key",
        }
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Secret::{}(<redacted>)", self.kind())
    }
}

/// Argon2id cost parameters, stored beside the salt so a store keeps opening after the defaults
/// change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, and above
    /// OWASP's minimum for Argon2id). About half a second on a laptop core.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };

    /// Cheap parameters for tests and examples only: they give a passphrase no protection.
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
}

/// How the master key is derived, stored in the clear in the store's `meta` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum KeyDerivation {
    /// Argon2id over the passphrase with this salt.
    Argon2id { params: KdfParams, salt: [u8; 16] },
    /// The secret is the master key.
    RawKey,
}

impl KeyDerivation {
    fn kind(&self) -> &'static str {
        match self {
            Self::Argon2id { .. } => "passphrase",
            Self::RawKey => "key",
        }
    }

    /// A new derivation for `secret`, with a fresh salt for passphrases.
    pub(crate) fn new_for<R: CryptoRng + ?Sized>(
        secret: &Secret,
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Self> {
        Ok(match secret {
            Secret::Passphrase(p) => {
                if p.chars().count() < MIN_PASSPHRASE_CHARS {
                    return Err(ClientError::WeakPassphrase {
                        min_chars: MIN_PASSPHRASE_CHARS,
                    });
                }
                let mut salt = [0u8; 16];
                rng.fill_bytes(&mut salt);
                Self::Argon2id { params, salt }
            }
            Secret::Key(_) => Self::RawKey,
        })
    }

    /// The master key `secret` yields under this derivation.
    pub(crate) fn master_key(&self, secret: &Secret) -> Result<Zeroizing<[u8; 32]>> {
        let mut master = Zeroizing::new([0u8; 32]);
        match (self, secret) {
            (Self::Argon2id { params, salt }, Secret::Passphrase(p)) => {
                let argon_params = argon2::Params::new(
                    params.memory_kib,
                    params.iterations,
                    params.parallelism,
                    Some(32),
                )
                .map_err(|_| ClientError::CorruptStore("key derivation parameters"))?;
                argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    argon_params,
                )
                .hash_password_into(p.as_bytes(), salt, master.as_mut())
                .map_err(|_| ClientError::CorruptStore("key derivation parameters"))?;
            }
            (Self::RawKey, Secret::Key(k)) => master.copy_from_slice(k.as_slice()),
            _ => {
                return Err(ClientError::SecretKindMismatch {
                    expected: self.kind(),
                });
            }
        }
        Ok(master)
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

fn expand(master: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit: expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(None, master).expand(info, &mut out);
    out
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

/// The first bytes of a file sealed by [`seal_secret_file`].
const SEALED_FILE_MAGIC: &[u8; 8] = b"HWSEAL01";

/// Seals a small secret for a file of its own (a clinic's organization key, `hushwire org`)
/// the way a store is sealed: a master key from `secret` (Argon2id with a fresh salt and
/// `params` for a passphrase), expanded into a values key and a check value, and the secret
/// sealed as `purpose` with XChaCha20-Poly1305. Layout: `HWSEAL01 ‖ len[2] ‖ derivation ‖
/// check[32] ‖ nonce[24] ‖ ciphertext ‖ tag[16]`. [`ClientError::WeakPassphrase`] for a short
/// passphrase.
pub fn seal_secret_file(
    secret: &Secret,
    params: KdfParams,
    purpose: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut rng = crate::os::rng();
    let derivation = KeyDerivation::new_for(secret, params, &mut rng)?;
    let master = derivation.master_key(secret)?;
    let vault = Vault::from_master(&master);
    let header = postcard::to_allocvec(&derivation).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + 2 + header.len() + 32 + plaintext.len() + 40);
    out.extend_from_slice(SEALED_FILE_MAGIC);
    out.extend_from_slice(
        &u16::try_from(header.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&header);
    out.extend_from_slice(&vault.check_value());
    out.extend_from_slice(&vault.seal(purpose, b"", plaintext, &mut rng));
    Ok(out)
}

/// Opens a file sealed by [`seal_secret_file`] as `purpose`: [`ClientError::WrongSecret`] if
/// `secret` is not the one it was sealed with, [`ClientError::CorruptStore`] if the file is
/// not such a file or was altered.
pub fn open_secret_file(
    secret: &Secret,
    purpose: &'static str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let bad = ClientError::CorruptStore(purpose);
    let rest = sealed
        .strip_prefix(SEALED_FILE_MAGIC.as_slice())
        .ok_or(bad)?;
    let (Some(len), Some(rest)) = (rest.get(..2), rest.get(2..)) else {
        return Err(ClientError::CorruptStore(purpose));
    };
    let len = usize::from(u16::from_be_bytes(
        len.try_into()
            .map_err(|_| ClientError::CorruptStore(purpose))?,
    ));
    if rest.len() < len + 32 {
        return Err(ClientError::CorruptStore(purpose));
    }
    let (header, rest) = rest.split_at(len);
    let (check, body) = rest.split_at(32);
    let derivation: KeyDerivation =
        postcard::from_bytes(header).map_err(|_| ClientError::CorruptStore(purpose))?;
    let master = derivation.master_key(secret)?;
    let vault = Vault::from_master(&master);
    if !vault.matches(check) {
        return Err(ClientError::WrongSecret);
    }
    vault.open(purpose, b"", body)
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

    #[test]
    fn passphrase_derivation_is_deterministic_and_secret_kinds_do_not_mix() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([4; 32]);
        let secret = Secret::passphrase("correct horse battery");
        let kdf = KeyDerivation::new_for(&secret, KdfParams::INSECURE_FOR_TESTS, &mut rng).unwrap();
        let a = kdf.master_key(&secret).unwrap();
        let b = kdf
            .master_key(&Secret::passphrase("correct horse battery"))
            .unwrap();
        assert_eq!(*a, *b);
        let other = kdf
            .master_key(&Secret::passphrase("correct horse battery!"))
            .unwrap();
        assert_ne!(*a, *other);
        assert!(matches!(
            kdf.master_key(&Secret::key([1; 32])),
            Err(ClientError::SecretKindMismatch {
                expected: "passphrase"
            })
        ));
        assert!(matches!(
            KeyDerivation::new_for(&Secret::passphrase("short"), KdfParams::DEFAULT, &mut rng),
            Err(ClientError::WeakPassphrase { .. })
        ));
    }
}
