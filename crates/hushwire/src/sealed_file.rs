//! A small secret sealed in a file of its own under a passphrase (or a raw 32-byte key): the
//! clinic's organization key (`hushwire org`) and archive key (`org archive-policy`). Sans-IO:
//! the caller reads and writes the bytes and hands in the randomness, so the same code opens an
//! archive key file in the CLI and in the browser (`hushwire-wasm`).
//!
//! Layout (`docs/conversations.md` §7.5): `HWSEAL01 ‖ len[2, big-endian] ‖ derivation[len] ‖
//! check[32] ‖ nonce[24] ‖ ciphertext ‖ tag[16]`. `derivation` is the postcard encoding of
//! [`KeyDerivation`]; a master key comes from the secret through it (Argon2id for a passphrase),
//! is expanded with HKDF-SHA256 into a values key and a check value, and the secret is sealed
//! with XChaCha20-Poly1305 under the values key with associated data
//! `"hushwire-client v1 value\0" ‖ purpose ‖ 0x00` (the labels keep their `hushwire-client`
//! names: files written before the format moved into the core still open).

use std::fmt;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// HKDF info for the key a sealed value is encrypted under.
pub const INFO_VALUES: &[u8] = b"hushwire-client v1 values key";
/// HKDF info for the value stored to recognise the right secret.
pub const INFO_CHECK: &[u8] = b"hushwire-client v1 key check";
/// Prefix of a sealed value's associated data.
pub const AD_PREFIX: &[u8] = b"hushwire-client v1 value\x00";
/// The first bytes of a sealed file.
pub const MAGIC: &[u8; 8] = b"HWSEAL01";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The largest sealed file [`open`] reads (the secrets it holds are a few dozen bytes).
pub const MAX_SEALED_FILE_LEN: usize = 64 * 1024;
/// The costliest Argon2id parameters [`open`] accepts from a file: 1 GiB, 16 passes, 8 lanes.
/// A file asking for more is refused rather than tying up the machine (or the browser tab).
pub const MAX_KDF_PARAMS: KdfParams = KdfParams {
    memory_kib: 1024 * 1024,
    iterations: 16,
    parallelism: 8,
};

/// Shortest passphrase accepted when sealing.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// What unlocks a sealed file (and a client store).
pub enum Secret {
    /// A passphrase, stretched with Argon2id (parameters stored beside the salt).
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

    /// `"passphrase"` or `"key"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase(_) => "passphrase",
            Self::Key(_) => "key",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret::{}(<redacted>)", self.kind())
    }
}

/// Argon2id cost parameters, stored beside the salt so a file keeps opening after the defaults
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

/// Why a file could not be sealed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedFileError {
    /// The passphrase is shorter than [`MIN_PASSPHRASE_CHARS`] (sealing only).
    WeakPassphrase {
        /// The minimum, in characters.
        min_chars: usize,
    },
    /// A key was given for a passphrase-sealed file, or the other way round.
    SecretKindMismatch {
        /// `"passphrase"` or `"key"`: what the file was sealed with.
        expected: &'static str,
    },
    /// The secret is not the one the file was sealed with.
    WrongSecret,
    /// Not a sealed file, too long, its parameters out of bounds, sealed for another purpose,
    /// or altered.
    Malformed,
}

impl fmt::Display for SealedFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WeakPassphrase { min_chars } => {
                write!(
                    f,
                    "the passphrase is too short (at least {min_chars} characters)"
                )
            }
            Self::SecretKindMismatch { expected } => {
                write!(f, "this file was sealed with a {expected}")
            }
            Self::WrongSecret => f.write_str("wrong passphrase: the file did not open"),
            Self::Malformed => f.write_str("not a sealed file of this kind, or damaged"),
        }
    }
}

/// How the master key is derived, stored in the clear (in a sealed file's header, and in a
/// client store's `meta` table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KeyDerivation {
    /// Argon2id over the passphrase with this salt.
    Argon2id {
        /// Its cost.
        params: KdfParams,
        /// Its salt.
        salt: [u8; 16],
    },
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
    ///
    /// # Errors
    /// [`SealedFileError::WeakPassphrase`] for a passphrase shorter than
    /// [`MIN_PASSPHRASE_CHARS`].
    pub fn new_for<R: CryptoRng + ?Sized>(
        secret: &Secret,
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Self, SealedFileError> {
        Ok(match secret {
            Secret::Passphrase(p) => {
                if p.chars().count() < MIN_PASSPHRASE_CHARS {
                    return Err(SealedFileError::WeakPassphrase {
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
    ///
    /// # Errors
    /// [`SealedFileError::SecretKindMismatch`] for the wrong kind of secret,
    /// [`SealedFileError::Malformed`] for parameters Argon2 refuses.
    pub fn master_key(&self, secret: &Secret) -> Result<Zeroizing<[u8; 32]>, SealedFileError> {
        let mut master = Zeroizing::new([0u8; 32]);
        match (self, secret) {
            (Self::Argon2id { params, salt }, Secret::Passphrase(p)) => {
                let argon_params = argon2::Params::new(
                    params.memory_kib,
                    params.iterations,
                    params.parallelism,
                    Some(32),
                )
                .map_err(|_| SealedFileError::Malformed)?;
                argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    argon_params,
                )
                .hash_password_into(p.as_bytes(), salt, master.as_mut())
                .map_err(|_| SealedFileError::Malformed)?;
            }
            (Self::RawKey, Secret::Key(k)) => master.copy_from_slice(k.as_slice()),
            _ => {
                return Err(SealedFileError::SecretKindMismatch {
                    expected: self.kind(),
                });
            }
        }
        Ok(master)
    }

    /// Whether its cost is within [`MAX_KDF_PARAMS`].
    fn bounded(&self) -> bool {
        match self {
            Self::Argon2id { params, .. } => {
                params.memory_kib <= MAX_KDF_PARAMS.memory_kib
                    && params.iterations <= MAX_KDF_PARAMS.iterations
                    && params.parallelism <= MAX_KDF_PARAMS.parallelism
            }
            Self::RawKey => true,
        }
    }
}

/// HKDF-SHA256 of `master` (no salt) for `info`, 32 bytes.
pub fn expand(master: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit: expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(None, master).expand(info, &mut out);
    out
}

/// The keys of one sealed file. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
struct FileKeys {
    values: [u8; 32],
    check: [u8; 32],
}

impl FileKeys {
    fn from_master(master: &[u8; 32]) -> Self {
        Self {
            values: expand(master, INFO_VALUES),
            check: expand(master, INFO_CHECK),
        }
    }

    fn associated_data(purpose: &str) -> Vec<u8> {
        let mut ad = Vec::with_capacity(AD_PREFIX.len() + purpose.len() + 1);
        ad.extend_from_slice(AD_PREFIX);
        ad.extend_from_slice(purpose.as_bytes());
        ad.push(0);
        ad
    }
}

/// Seals `plaintext` as `purpose` under `secret` (Argon2id with a fresh salt and `params` for a
/// passphrase): the bytes of a sealed file.
///
/// # Errors
/// [`SealedFileError::WeakPassphrase`] for a short passphrase, [`SealedFileError::Malformed`]
/// for Argon2 parameters it refuses.
pub fn seal<R: CryptoRng + ?Sized>(
    secret: &Secret,
    params: KdfParams,
    purpose: &str,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, SealedFileError> {
    let derivation = KeyDerivation::new_for(secret, params, rng)?;
    let master = derivation.master_key(secret)?;
    let keys = FileKeys::from_master(&master);
    let header = postcard::to_allocvec(&derivation).map_err(|_| SealedFileError::Malformed)?;
    let header_len = u16::try_from(header.len()).map_err(|_| SealedFileError::Malformed)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ad = FileKeys::associated_data(purpose);
    let ciphertext = XChaCha20Poly1305::new(&keys.values.into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &ad,
            },
        )
        .map_err(|_| SealedFileError::Malformed)?;
    let mut out = Vec::with_capacity(8 + 2 + header.len() + 32 + NONCE_LEN + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&keys.check);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens the bytes of a file sealed by [`seal`] as `purpose`.
///
/// # Errors
/// [`SealedFileError::WrongSecret`] if `secret` is not the one it was sealed with,
/// [`SealedFileError::SecretKindMismatch`] for the wrong kind of secret,
/// [`SealedFileError::Malformed`] if it is not such a file (or longer than
/// [`MAX_SEALED_FILE_LEN`], or asks for Argon2id beyond [`MAX_KDF_PARAMS`]), was sealed for
/// another purpose, or was altered.
pub fn open(
    secret: &Secret,
    purpose: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealedFileError> {
    use SealedFileError::Malformed;
    if sealed.len() > MAX_SEALED_FILE_LEN {
        return Err(Malformed);
    }
    let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or(Malformed)?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or(Malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len + 32 {
        return Err(Malformed);
    }
    let (header, rest) = rest.split_at(len);
    let (check, body) = rest.split_at(32);
    let (derivation, unread): (KeyDerivation, _) =
        postcard::take_from_bytes(header).map_err(|_| Malformed)?;
    if !unread.is_empty() || !derivation.bounded() {
        return Err(Malformed);
    }
    let master = derivation.master_key(secret)?;
    let keys = FileKeys::from_master(&master);
    if !bool::from(keys.check.as_slice().ct_eq(check)) {
        return Err(SealedFileError::WrongSecret);
    }
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(Malformed);
    }
    let (nonce, ciphertext) = body.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Malformed)?;
    let ad = FileKeys::associated_data(purpose);
    XChaCha20Poly1305::new(&keys.values.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::from_seed([7; 32])
    }

    #[test]
    fn a_sealed_file_opens_only_with_its_secret_and_purpose() {
        let secret = Secret::passphrase("correct horse battery");
        let sealed = seal(
            &secret,
            KdfParams::INSECURE_FOR_TESTS,
            "org key",
            b"k",
            &mut rng(),
        )
        .unwrap();
        assert_eq!(open(&secret, "org key", &sealed).unwrap().as_slice(), b"k");
        assert_eq!(
            open(
                &Secret::passphrase("wrong horse battery"),
                "org key",
                &sealed
            ),
            Err(SealedFileError::WrongSecret)
        );
        assert_eq!(
            open(&Secret::key([1; 32]), "org key", &sealed),
            Err(SealedFileError::SecretKindMismatch {
                expected: "passphrase"
            })
        );
        assert_eq!(
            open(&secret, "other", &sealed),
            Err(SealedFileError::Malformed)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open(&secret, "org key", &altered),
            Err(SealedFileError::Malformed)
        );
        assert!(
            seal(
                &Secret::passphrase("short"),
                KdfParams::INSECURE_FOR_TESTS,
                "k",
                b"",
                &mut rng()
            )
            .is_err()
        );
        let raw = Secret::key([5; 32]);
        let sealed = seal(&raw, KdfParams::DEFAULT, "k", b"raw", &mut rng()).unwrap();
        assert_eq!(open(&raw, "k", &sealed).unwrap().as_slice(), b"raw");
        assert_eq!(
            open(&Secret::key([6; 32]), "k", &sealed),
            Err(SealedFileError::WrongSecret)
        );
    }

    #[test]
    fn every_truncation_and_any_garbage_is_refused_without_panicking() {
        let secret = Secret::passphrase("correct horse battery");
        let sealed = seal(
            &secret,
            KdfParams::INSECURE_FOR_TESTS,
            "p",
            &[9; 32],
            &mut rng(),
        )
        .unwrap();
        for cut in 0..sealed.len() {
            assert!(open(&secret, "p", &sealed[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&secret, "p", &longer).is_err());
        assert_eq!(
            open(&secret, "p", &vec![0u8; MAX_SEALED_FILE_LEN + 1]),
            Err(SealedFileError::Malformed)
        );
        assert_eq!(
            open(&secret, "p", b"HWSEAL01\xff\xff"),
            Err(SealedFileError::Malformed)
        );
    }

    #[test]
    fn a_file_asking_for_too_costly_a_derivation_is_refused_before_deriving() {
        let derivation = KeyDerivation::Argon2id {
            params: KdfParams {
                memory_kib: u32::MAX,
                iterations: 1,
                parallelism: 1,
            },
            salt: [0; 16],
        };
        let header = postcard::to_allocvec(&derivation).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&u16::try_from(header.len()).unwrap().to_be_bytes());
        file.extend_from_slice(&header);
        file.extend_from_slice(&[0; 32 + NONCE_LEN + TAG_LEN]);
        assert_eq!(
            open(&Secret::passphrase("correct horse battery"), "p", &file),
            Err(SealedFileError::Malformed)
        );
    }

    #[test]
    fn passphrase_derivation_is_deterministic_and_secret_kinds_do_not_mix() {
        let mut rng = rng();
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
        assert_eq!(
            kdf.master_key(&Secret::key([1; 32])).map(|_| ()),
            Err(SealedFileError::SecretKindMismatch {
                expected: "passphrase"
            })
        );
        assert!(matches!(
            KeyDerivation::new_for(&Secret::passphrase("short"), KdfParams::DEFAULT, &mut rng),
            Err(SealedFileError::WeakPassphrase { .. })
        ));
    }

    /// An archive key file written by `hushwire org archive-policy` before the format moved
    /// out of `hushwire-client` (passphrase "archive passphrase", fast test parameters) still
    /// opens, and its key is the one its policy names.
    #[test]
    fn an_archive_key_file_written_by_the_old_client_code_opens() {
        let file = include_bytes!("../tests/fixtures/archive-key-v1.sealed");
        let policy = include_str!("../tests/fixtures/archive-policy-v1.txt");
        let seed = open(
            &Secret::passphrase("archive passphrase"),
            crate::archive::ARCHIVE_KEY_FILE_PURPOSE,
            file,
        )
        .unwrap();
        let seed: [u8; 32] = seed.as_slice().try_into().unwrap();
        let key = crate::archive::ArchiveSecretKey::from_secret_bytes(seed).unwrap();
        use base64::Engine as _;
        use hushwire_proto::codec::Codec as _;
        let policy = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(policy.trim())
            .unwrap();
        let policy = hushwire_proto::conversation::ArchivePolicy::from_bytes(&policy).unwrap();
        assert_eq!(policy.archive_key(), key.public());
        assert_eq!(
            open(
                &Secret::passphrase("organization passphrase"),
                crate::archive::ARCHIVE_KEY_FILE_PURPOSE,
                file
            ),
            Err(SealedFileError::WrongSecret)
        );
    }
}
