//! Prekeys as published to the relay, and the bundle an initiator fetches.
//!
//! Signatures use the identity's Ed25519 key over a context label and the key's fixed-layout
//! encoding (see [`crate::labels`]), so a signature made for one kind of key never verifies as
//! another. The relay checks them on upload; the initiator checks them again before a handshake,
//! so a compromised relay cannot substitute keys.

use core::fmt;

use crate::codec::{Codec, DecodeError, Reader, read_versioned_header};
use crate::keys::{IdentityKey, KEM_PUBLIC_KEY_LEN, SIGNATURE_LEN, X25519PublicKey, short_hex};
use crate::labels;

/// Wire type byte of a [`PreKeyBundle`].
pub const BUNDLE_TYPE: u8 = 0x10;

/// Why a bundle or prekey failed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The signed prekey's signature does not verify under the bundle's identity.
    BadSignedPreKeySignature,
    /// The ML-KEM prekey's signature does not verify under the bundle's identity.
    BadKemPreKeySignature,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSignedPreKeySignature => "signed prekey signature does not verify",
            Self::BadKemPreKeySignature => "ML-KEM prekey signature does not verify",
        })
    }
}

impl std::error::Error for BundleError {}

/// An X25519 prekey signed by its owner's identity; replaced periodically, used by every
/// handshake until then.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedPreKey {
    /// The owner's identifier for this prekey.
    pub id: u32,
    /// The public key.
    pub key: X25519PublicKey,
    /// Signature over `SIG_SIGNED_PREKEY ‖ device_id ‖ id ‖ key` (`docs/protocol.md` §3.5).
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedPreKey {
    /// The bytes the signature covers after its context: `device_id[4] ‖ id[4] ‖ key[32]`. The
    /// device id is signed so a relay cannot present one device's prekeys as another device's
    /// of the same identity.
    pub fn signed_message(device_id: u32, id: u32, key: &X25519PublicKey) -> [u8; 40] {
        let mut m = [0u8; 40];
        let (d, rest) = m.split_at_mut(4);
        d.copy_from_slice(&device_id.to_be_bytes());
        let (a, b) = rest.split_at_mut(4);
        a.copy_from_slice(&id.to_be_bytes());
        b.copy_from_slice(key.as_bytes());
        m
    }

    /// Checks the signature under `identity` for the device `device_id`.
    pub fn verify(&self, identity: &IdentityKey, device_id: u32) -> Result<(), BundleError> {
        let message = Self::signed_message(device_id, self.id, &self.key);
        if identity.verify(labels::SIG_SIGNED_PREKEY, &message, &self.signature) {
            Ok(())
        } else {
            Err(BundleError::BadSignedPreKeySignature)
        }
    }
}

impl Codec for SignedPreKey {
    const NAME: &'static str = "signed prekey";

    /// `id[4] ‖ key[32] ‖ signature[64]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32("signed prekey id")?,
            key: X25519PublicKey::read_field(r, "signed prekey")?,
            signature: r.array("signed prekey signature")?,
        })
    }
}

/// An unsigned X25519 prekey that is used for at most one handshake (the relay hands each out
/// once; the owner deletes it once used).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OneTimePreKey {
    /// The owner's identifier for this prekey.
    pub id: u32,
    /// The public key.
    pub key: X25519PublicKey,
}

impl Codec for OneTimePreKey {
    const NAME: &'static str = "one-time prekey";

    /// `id[4] ‖ key[32]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32("one-time prekey id")?,
            key: X25519PublicKey::read_field(r, "one-time prekey")?,
        })
    }
}

/// Whether an ML-KEM prekey may be used once or is the last-resort key reused until replaced.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum KemPreKeyKind {
    /// Reused until replaced; handed out when no one-time ML-KEM prekey is left.
    LastResort,
    /// Used for at most one handshake.
    OneTime,
}

impl KemPreKeyKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::LastResort => 0,
            Self::OneTime => 1,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0 => Ok(Self::LastResort),
            1 => Ok(Self::OneTime),
            _ => Err(DecodeError::InvalidValue {
                field: "kem prekey kind",
            }),
        }
    }
}

/// An ML-KEM-1024 encapsulation key, as bytes. Whether the bytes form a valid key (FIPS 203's
/// modulus check) is checked by the party that encapsulates to it.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey(Box<[u8; KEM_PUBLIC_KEY_LEN]>);

impl KemPublicKey {
    /// Wraps raw bytes.
    pub fn from_array(bytes: [u8; KEM_PUBLIC_KEY_LEN]) -> Self {
        Self(Box::new(bytes))
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; KEM_PUBLIC_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPublicKey({})", short_hex(self.0.as_slice()))
    }
}

/// An ML-KEM-1024 prekey signed by its owner's identity.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KemPreKey {
    /// The owner's identifier for this prekey (one id space for both kinds).
    pub id: u32,
    /// One-time or last-resort.
    pub kind: KemPreKeyKind,
    /// The encapsulation key.
    pub key: KemPublicKey,
    /// Signature over `SIG_KEM_PREKEY ‖ device_id ‖ kind ‖ id ‖ key` (`docs/protocol.md` §3.7).
    pub signature: [u8; SIGNATURE_LEN],
}

impl KemPreKey {
    /// The bytes the signature covers after its context:
    /// `device_id[4] ‖ kind[1] ‖ id[4] ‖ key[1568]` (1577 bytes).
    pub fn signed_message(
        device_id: u32,
        kind: KemPreKeyKind,
        id: u32,
        key: &KemPublicKey,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(9 + KEM_PUBLIC_KEY_LEN);
        m.extend_from_slice(&device_id.to_be_bytes());
        m.push(kind.to_byte());
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(key.as_bytes());
        m
    }

    /// Checks the signature under `identity` for the device `device_id`.
    pub fn verify(&self, identity: &IdentityKey, device_id: u32) -> Result<(), BundleError> {
        let message = Self::signed_message(device_id, self.kind, self.id, &self.key);
        if identity.verify(labels::SIG_KEM_PREKEY, &message, &self.signature) {
            Ok(())
        } else {
            Err(BundleError::BadKemPreKeySignature)
        }
    }
}

impl Codec for KemPreKey {
    const NAME: &'static str = "kem prekey";

    /// `id[4] ‖ kind[1] ‖ key[1568] ‖ signature[64]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(self.kind.to_byte());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32("kem prekey id")?,
            kind: KemPreKeyKind::from_byte(r.u8("kem prekey kind")?)?,
            key: KemPublicKey::from_array(r.array("kem prekey")?),
            signature: r.array("kem prekey signature")?,
        })
    }
}

/// What an initiator fetches to start a session with one device: its identity, current signed
/// prekey, at most one one-time prekey (absent when the device has none left) and one ML-KEM
/// prekey (one-time when available, else the last-resort key).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreKeyBundle {
    /// The device this bundle belongs to, as numbered by its owner.
    pub device_id: u32,
    /// The device's identity.
    pub identity: IdentityKey,
    /// The device's current signed prekey.
    pub signed_prekey: SignedPreKey,
    /// A one-time prekey, if the device had one left.
    pub one_time_prekey: Option<OneTimePreKey>,
    /// An ML-KEM prekey.
    pub kem_prekey: KemPreKey,
}

impl PreKeyBundle {
    /// Checks both signatures under the bundle's identity and for the bundle's device id. The
    /// identity's own binding was checked when it was decoded or built.
    pub fn verify(&self) -> Result<(), BundleError> {
        self.signed_prekey.verify(&self.identity, self.device_id)?;
        self.kem_prekey.verify(&self.identity, self.device_id)
    }
}

impl Codec for PreKeyBundle {
    const NAME: &'static str = "prekey bundle";

    /// `version[1] ‖ type[1]=0x10 ‖ device_id[4] ‖ identity[128] ‖ signed_prekey[100] ‖
    /// has_one_time[1] ‖ (one_time_prekey[36])? ‖ kem_prekey[1637]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::SESSION_VERSION);
        out.push(BUNDLE_TYPE);
        out.extend_from_slice(&self.device_id.to_be_bytes());
        self.identity.encode(out);
        self.signed_prekey.encode(out);
        match &self.one_time_prekey {
            Some(k) => {
                out.push(1);
                k.encode(out);
            }
            None => out.push(0),
        }
        self.kem_prekey.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_versioned_header(r, labels::SESSION_VERSION, BUNDLE_TYPE, Self::NAME)?;
        let device_id = r.u32("device id")?;
        let identity = IdentityKey::read(r)?;
        let signed_prekey = SignedPreKey::read(r)?;
        let one_time_prekey = if r.flag("has one-time prekey")? {
            Some(OneTimePreKey::read(r)?)
        } else {
            None
        };
        let kem_prekey = KemPreKey::read(r)?;
        Ok(Self {
            device_id,
            identity,
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        })
    }
}
