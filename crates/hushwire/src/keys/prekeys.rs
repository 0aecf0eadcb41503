//! Prekey secrets: the signed X25519 prekey, one-time X25519 prekeys and ML-KEM-1024 prekeys.

use core::fmt;

use hushwire_proto::{KemPreKey, KemPreKeyKind, KemPublicKey, OneTimePreKey, SignedPreKey, labels};
use ml_kem::{DecapsulationKey, KeyExport as _, MlKem1024, Seed};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::{IdentityKeyPair, generate_x25519, x25519_from_secret};

/// The private half of a signed prekey.
#[derive(Clone)]
pub struct SignedPreKeySecret {
    pub(crate) secret: StaticSecret,
    pub(crate) public: SignedPreKey,
    /// When it was generated (caller's clock, Unix seconds): drives rotation.
    pub created_at: u64,
}

impl SignedPreKeySecret {
    /// Generates a prekey (32 bytes from `rng`) and signs it with `identity` for the device
    /// `device_id` (`docs/protocol.md` §3.5).
    pub fn generate<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        device_id: u32,
        id: u32,
        created_at: u64,
        rng: &mut R,
    ) -> Self {
        let (secret, key) = generate_x25519(rng);
        Self::with_secret(identity, device_id, id, created_at, secret, key)
    }

    fn with_secret(
        identity: &IdentityKeyPair,
        device_id: u32,
        id: u32,
        created_at: u64,
        secret: StaticSecret,
        key: hushwire_proto::X25519PublicKey,
    ) -> Self {
        let signature = identity.sign(
            labels::SIG_SIGNED_PREKEY,
            &SignedPreKey::signed_message(device_id, id, &key),
        );
        Self {
            secret,
            public: SignedPreKey { id, key, signature },
            created_at,
        }
    }

    /// The public, signed prekey to upload.
    pub fn public(&self) -> &SignedPreKey {
        &self.public
    }

    pub(crate) fn restore(
        identity: &IdentityKeyPair,
        device_id: u32,
        id: u32,
        created_at: u64,
        secret: [u8; 32],
    ) -> Option<Self> {
        let (secret, key) = x25519_from_secret(secret)?;
        Some(Self::with_secret(
            identity, device_id, id, created_at, secret, key,
        ))
    }
}

impl fmt::Debug for SignedPreKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignedPreKeySecret {{ id: {}, created_at: {} }}",
            self.public.id, self.created_at
        )
    }
}

/// The private half of a one-time prekey.
#[derive(Clone)]
pub struct OneTimePreKeySecret {
    pub(crate) secret: StaticSecret,
    pub(crate) public: OneTimePreKey,
}

impl OneTimePreKeySecret {
    /// Generates a one-time prekey (32 bytes from `rng`).
    pub fn generate<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        let (secret, key) = generate_x25519(rng);
        Self {
            secret,
            public: OneTimePreKey { id, key },
        }
    }

    /// The public prekey to upload.
    pub fn public(&self) -> &OneTimePreKey {
        &self.public
    }

    pub(crate) fn restore(id: u32, secret: [u8; 32]) -> Option<Self> {
        let (secret, key) = x25519_from_secret(secret)?;
        Some(Self {
            secret,
            public: OneTimePreKey { id, key },
        })
    }
}

impl fmt::Debug for OneTimePreKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OneTimePreKeySecret {{ id: {} }}", self.public.id)
    }
}

/// The private half of an ML-KEM-1024 prekey, kept as its 64-byte FIPS 203 seed `d ‖ z`.
#[derive(Clone)]
pub struct KemPreKeySecret {
    pub(crate) seed: Zeroizing<[u8; 64]>,
    pub(crate) decapsulation_key: DecapsulationKey<MlKem1024>,
    pub(crate) public: KemPreKey,
}

impl KemPreKeySecret {
    /// Generates a prekey from a 64-byte seed drawn from `rng` and signs it with `identity` for
    /// the device `device_id` (`docs/protocol.md` §3.7).
    pub fn generate<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        device_id: u32,
        id: u32,
        kind: KemPreKeyKind,
        rng: &mut R,
    ) -> Self {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(identity, device_id, id, kind, seed)
    }

    pub(crate) fn from_seed(
        identity: &IdentityKeyPair,
        device_id: u32,
        id: u32,
        kind: KemPreKeyKind,
        seed: Zeroizing<[u8; 64]>,
    ) -> Self {
        let decapsulation_key = DecapsulationKey::<MlKem1024>::from_seed(Seed::from(*seed));
        let encoded = decapsulation_key.encapsulation_key().to_bytes();
        let mut bytes = [0u8; hushwire_proto::keys::KEM_PUBLIC_KEY_LEN];
        bytes.copy_from_slice(encoded.as_slice());
        let key = KemPublicKey::from_array(bytes);
        let signature = identity.sign(
            labels::SIG_KEM_PREKEY,
            &KemPreKey::signed_message(device_id, kind, id, &key),
        );
        Self {
            seed,
            decapsulation_key,
            public: KemPreKey {
                id,
                kind,
                key,
                signature,
            },
        }
    }

    /// The public, signed prekey to upload.
    pub fn public(&self) -> &KemPreKey {
        &self.public
    }
}

impl fmt::Debug for KemPreKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemPreKeySecret {{ id: {}, kind: {:?} }}",
            self.public.id, self.public.kind
        )
    }
}
