//! Public keys as they travel on the wire, validated when decoded.
//!
//! A value of these types is always well formed: an [`X25519PublicKey`] is canonical and not of
//! small order, and an [`IdentityKey`] carries a valid binding signature. Code that holds one never
//! re-checks it.

use core::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::codec::{Codec, DecodeError, Reader};
use crate::labels;

/// Length of an X25519 public key.
pub const X25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an ML-KEM-1024 encapsulation key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1568;
/// Length of an ML-KEM-1024 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1568;

/// The canonical u-coordinates of small order on Curve25519 or its twist (the list libsodium
/// refuses). A DH with any of them yields an output the attacker knows, so they are refused on
/// decode.
const SMALL_ORDER_POINTS: [[u8; 32]; 5] = [
    // 0
    [0; 32],
    // 1
    {
        let mut p = [0; 32];
        p[0] = 1;
        p
    },
    // 325606250916557431795983626356110631294008115727848805560023387167927233504 (order 8)
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    // 39382357235489614581723060781553021112529911719440698176882885853963445705823 (order 8)
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p - 1
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// True if `bytes` is the canonical little-endian encoding of a field element: bit 255 is clear
/// and the value is below p = 2^255 - 19.
fn is_canonical_field_element(bytes: &[u8; 32]) -> bool {
    let [first, middle @ .., last] = bytes;
    if *last > 0x7f {
        return false;
    }
    // The only 255-bit values >= p are p..=2^255-1: 0x7f, then thirty 0xff, then a first byte >= 0xed.
    let at_least_p = *last == 0x7f && middle.iter().all(|&b| b == 0xff) && *first >= 0xed;
    !at_least_p
}

/// An X25519 public key: canonical and not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X25519PublicKey([u8; X25519_KEY_LEN]);

impl X25519PublicKey {
    /// Validates raw bytes; `field` names the key in the error.
    pub fn from_array(bytes: [u8; 32], field: &'static str) -> Result<Self, DecodeError> {
        if !is_canonical_field_element(&bytes) || SMALL_ORDER_POINTS.contains(&bytes) {
            return Err(DecodeError::InvalidValue { field });
        }
        Ok(Self(bytes))
    }

    /// Reads and validates a key; `field` names it in the error.
    pub fn read_field(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Self::from_array(r.array(field)?, field)
    }

    /// The 32 encoded bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519PublicKey({})", short_hex(&self.0))
    }
}

/// The first bytes of a public value in hex, for `Debug` output that stays readable.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::new();
    for b in bytes.iter().take(8) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 8 {
        s.push('…');
    }
    s
}

/// Checks an Ed25519 signature strictly (no malleable encodings, no small-order keys) over
/// `context ‖ message`.
pub(crate) fn verify_signature(
    key: &VerifyingKey,
    context: &[u8],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let mut signed = Vec::with_capacity(context.len() + message.len());
    signed.extend_from_slice(context);
    signed.extend_from_slice(message);
    let signature = Signature::from_bytes(signature);
    key.verify_strict(&signed, &signature).is_ok()
}

/// A device's public identity: an Ed25519 signing key and the X25519 key it uses in handshakes,
/// bound together by the signing key's signature over
/// `SIG_IDENTITY_BINDING ‖ signing_key ‖ dh_key`.
///
/// Two keys rather than one converted key: each is used only for its own algorithm, and both
/// come from the audited dalek crates (there is no maintained XEdDSA crate). The binding
/// signature means nobody can pair someone else's signing key with their own DH key.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityKey {
    signing: VerifyingKey,
    dh: X25519PublicKey,
    binding: [u8; SIGNATURE_LEN],
}

/// Decodes an identity's Ed25519 key, refusing an encoding that is not canonical (a
/// y-coordinate ≥ p, or a sign bit on x = 0: the same point re-encoded would differ, so one key
/// would have two fingerprints) and a key of small order (`docs/protocol.md` §3.1).
fn identity_signing_key(bytes: &[u8; ED25519_KEY_LEN]) -> Result<VerifyingKey, DecodeError> {
    canonical_ed25519_key(bytes, "identity signing key")
}

/// Decodes an Ed25519 public key, refusing a non-canonical encoding and a key of small order
/// (the rule for every long-term signing key: identities, organization keys).
pub(crate) fn canonical_ed25519_key(
    bytes: &[u8; ED25519_KEY_LEN],
    field: &'static str,
) -> Result<VerifyingKey, DecodeError> {
    let invalid = DecodeError::InvalidValue { field };
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| invalid)?;
    if key.is_weak() || key.to_edwards().compress().to_bytes() != *bytes {
        return Err(invalid);
    }
    Ok(key)
}

/// The bytes an identity's binding signature covers, after the context.
pub fn identity_binding_message(signing: &[u8; 32], dh: &[u8; 32]) -> [u8; 64] {
    let mut m = [0u8; 64];
    let (a, b) = m.split_at_mut(32);
    a.copy_from_slice(signing);
    b.copy_from_slice(dh);
    m
}

impl IdentityKey {
    /// Assembles an identity from its parts, checking the binding signature.
    pub fn new(
        signing: [u8; ED25519_KEY_LEN],
        dh: X25519PublicKey,
        binding: [u8; SIGNATURE_LEN],
    ) -> Result<Self, DecodeError> {
        let key = identity_signing_key(&signing)?;
        let message = identity_binding_message(&signing, dh.as_bytes());
        if !verify_signature(&key, labels::SIG_IDENTITY_BINDING, &message, &binding) {
            return Err(DecodeError::InvalidValue {
                field: "identity binding signature",
            });
        }
        Ok(Self {
            signing: key,
            dh,
            binding,
        })
    }

    /// Decodes an identity that this program verified before storing it under authenticated
    /// encryption (inside a sealed session), without verifying the binding signature again:
    /// the seal's authentication already proves the bytes are the ones that were verified.
    /// The signing key is still decoded and checked for weakness. Never use this on bytes that
    /// did not come out of such a seal: use [`Codec::from_bytes`], which verifies.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let signing: [u8; ED25519_KEY_LEN] = r.array("identity signing key")?;
        let dh = X25519PublicKey::read_field(&mut r, "identity dh key")?;
        let binding = r.array("identity binding signature")?;
        r.expect_empty(Self::NAME)?;
        // Decoded and checked for weakness, but not re-encoded: the canonical-encoding check
        // (a point compression, a field inversion) passed before the identity was sealed.
        let key = VerifyingKey::from_bytes(&signing)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or(DecodeError::InvalidValue {
                field: "identity signing key",
            })?;
        Ok(Self {
            signing: key,
            dh,
            binding,
        })
    }

    /// The Ed25519 key that signs prekeys, checkpoints and relay challenges.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// The X25519 key used in handshakes.
    pub fn dh_key(&self) -> &X25519PublicKey {
        &self.dh
    }

    /// The binding signature.
    pub fn binding_signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.binding
    }

    /// `signing_key ‖ dh_key`: what the handshake's associated data and fingerprints cover.
    pub fn public_bytes(&self) -> [u8; 64] {
        identity_binding_message(self.signing.as_bytes(), self.dh.as_bytes())
    }

    /// SHA-256(`FINGERPRINT ‖ signing_key ‖ dh_key`): a stable name for this identity.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(labels::FINGERPRINT);
        h.update(self.public_bytes());
        Fingerprint(h.finalize().into())
    }

    /// Checks `signature` over `context ‖ message` with this identity's signing key.
    pub fn verify(&self, context: &[u8], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        verify_signature(&self.signing, context, message, signature)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.fingerprint())
    }
}

impl Codec for IdentityKey {
    const NAME: &'static str = "identity key";

    /// `signing_key[32] ‖ dh_key[32] ‖ binding_signature[64]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out.extend_from_slice(&self.binding);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let signing = r.array("identity signing key")?;
        let dh = X25519PublicKey::read_field(r, "identity dh key")?;
        let binding = r.array("identity binding signature")?;
        Self::new(signing, dh, binding)
    }
}

/// SHA-256 fingerprint of an identity, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn small_order_and_non_canonical_keys_are_refused() {
        for p in SMALL_ORDER_POINTS {
            assert!(X25519PublicKey::from_array(p, "k").is_err());
        }
        // p itself, p + 1 and 2^255 - 1 are non-canonical encodings.
        let mut p = [0xff; 32];
        p[31] = 0x7f;
        p[0] = 0xed;
        assert!(X25519PublicKey::from_array(p, "k").is_err());
        p[0] = 0xee;
        assert!(X25519PublicKey::from_array(p, "k").is_err());
        p[0] = 0xff;
        assert!(X25519PublicKey::from_array(p, "k").is_err());
        // The high bit is never set in a canonical key.
        let mut high = [9u8; 32];
        high[31] |= 0x80;
        assert!(X25519PublicKey::from_array(high, "k").is_err());
        // The base point (u = 9) is fine.
        let mut nine = [0u8; 32];
        nine[0] = 9;
        assert!(X25519PublicKey::from_array(nine, "k").is_ok());
    }

    #[test]
    fn sealed_identity_decoding_skips_only_the_binding_signature() {
        use crate::signer::Signer as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let dh = X25519PublicKey::from_array(nine, "k").unwrap_or_else(|_| unreachable!());
        let message = identity_binding_message(signing.verifying_key().as_bytes(), dh.as_bytes());
        let binding = signing.sign(labels::SIG_IDENTITY_BINDING, &message);
        let identity = IdentityKey::new(signing.verifying_key().to_bytes(), dh, binding)
            .unwrap_or_else(|_| unreachable!());
        let bytes = identity.to_bytes();
        assert_eq!(
            IdentityKey::from_sealed_bytes(&bytes).ok(),
            Some(identity.clone())
        );

        // What it does not re-check: a damaged binding signature (the seal's AEAD guards it).
        let mut bad_binding = bytes.clone();
        bad_binding[127] ^= 1;
        assert!(IdentityKey::from_bytes(&bad_binding).is_err());
        assert!(IdentityKey::from_sealed_bytes(&bad_binding).is_ok());

        // What it still refuses: wrong lengths, a weak signing key, a small-order DH key.
        assert!(IdentityKey::from_sealed_bytes(&bytes[..127]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(IdentityKey::from_sealed_bytes(&long).is_err());
        let mut weak = bytes.clone();
        weak[..32].copy_from_slice(&[0; 32]);
        assert!(IdentityKey::from_sealed_bytes(&weak).is_err());
        let mut small = bytes.clone();
        small[32..64].copy_from_slice(&[0; 32]);
        assert!(IdentityKey::from_sealed_bytes(&small).is_err());
    }
}
