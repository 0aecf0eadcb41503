//! The clinic archive (`docs/conversations.md` §7): the organization key publishes an X25519
//! **archive key** and a retention period in a signed [`ArchivePolicy`]; every conversation
//! message is also sealed to that key as an [`ArchiveEnvelope`]. This module holds the public
//! structures only; sealing and opening (X25519, HKDF-SHA256, XChaCha20-Poly1305) belong to the
//! core and are specified byte for byte in §7.3.

use core::fmt;

use super::{ARCHIVE_ENVELOPE_TYPE, ARCHIVE_POLICY_TYPE, CONVERSATION_VERSION};
use crate::audit::ConversationId;
use crate::clinic::OrgKey;
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::{SIGNATURE_LEN, X25519PublicKey};
use crate::labels;
use crate::signer::Signer;

/// An archive policy's length in bytes: header 2, org key 32, sequence 8, archive key 32,
/// retention days 2, signature 64.
pub const ARCHIVE_POLICY_LEN: usize = 2 + 32 + 8 + 32 + 2 + 64;

/// An archive envelope's bytes before its ciphertext: header 2, conversation 16, policy
/// sequence 8, ephemeral key 32 (the associated data of the seal), then the length prefix 4.
pub const ARCHIVE_ENVELOPE_HEADER_LEN: usize = 2 + 16 + 8 + 32;

/// Largest archive ciphertext: the archived plaintext (sender fingerprint 32, sender device 4,
/// epoch 8, a padded client payload of at most 65 536 bytes) and the 16-byte tag.
pub const MAX_ARCHIVE_CIPHERTEXT_LEN: usize = 32 + 4 + 8 + 65_536 + 16;

/// A clinic's signed archive policy:
///
/// `version[1]=1 ‖ type[1]=0x71 ‖ org_key[32] ‖ sequence[8] ‖ archive_key[32] ‖
/// retention_days[2] ‖ signature[64]` (140 bytes), the signature the organization key's over
/// `SIG_ARCHIVE_POLICY ‖` every byte before it. `archive_key` is a canonical X25519 key of large
/// order; `retention_days` is 1 to 65 535. A holder keeps the highest sequence
/// (`clinic::is_newer`), so a relay cannot bring back a retired archive key.
#[derive(Clone, PartialEq, Eq)]
pub struct ArchivePolicy {
    org: OrgKey,
    sequence: u64,
    archive_key: X25519PublicKey,
    retention_days: u16,
    signature: [u8; SIGNATURE_LEN],
}

impl ArchivePolicy {
    /// Signs a policy with the organization key.
    ///
    /// # Errors
    /// `InvalidValue` for a retention of 0 days or a weak signer key.
    pub fn issue<S: Signer + ?Sized>(
        org_signer: &S,
        sequence: u64,
        archive_key: X25519PublicKey,
        retention_days: u16,
    ) -> Result<Self, DecodeError> {
        check_retention(retention_days)?;
        let mut policy = Self {
            org: OrgKey::new(org_signer.verifying_key())?,
            sequence,
            archive_key,
            retention_days,
            signature: [0; SIGNATURE_LEN],
        };
        policy.signature = org_signer.sign(labels::SIG_ARCHIVE_POLICY, &policy.signed_part());
        Ok(policy)
    }

    /// Whether the policy is `org`'s and its signature verifies. A policy that fails is ignored.
    pub fn verify(&self, org: &OrgKey) -> bool {
        self.org == *org
            && org.verify(
                labels::SIG_ARCHIVE_POLICY,
                &self.signed_part(),
                &self.signature,
            )
    }

    /// The organization key that signed it.
    pub fn org(&self) -> &OrgKey {
        &self.org
    }
    /// The policy's sequence number (only a higher one replaces a held policy).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// The X25519 key every conversation message is also sealed to.
    pub fn archive_key(&self) -> &X25519PublicKey {
        &self.archive_key
    }
    /// How long archived conversations are kept after their last activity, in days.
    pub fn retention_days(&self) -> u16 {
        self.retention_days
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ARCHIVE_POLICY_LEN);
        out.push(CONVERSATION_VERSION);
        out.push(ARCHIVE_POLICY_TYPE);
        out.extend_from_slice(&self.org.to_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(self.archive_key.as_bytes());
        out.extend_from_slice(&self.retention_days.to_be_bytes());
        out
    }
}

fn check_retention(days: u16) -> Result<(), DecodeError> {
    if days == 0 {
        Err(DecodeError::InvalidValue {
            field: "retention days",
        })
    } else {
        Ok(())
    }
}

impl Codec for ArchivePolicy {
    const NAME: &'static str = "archive policy";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        crate::codec::read_versioned_header(
            r,
            CONVERSATION_VERSION,
            ARCHIVE_POLICY_TYPE,
            Self::NAME,
        )?;
        let org = OrgKey::from_bytes(&r.array("organization key")?)?;
        let sequence = r.u64("sequence")?;
        let archive_key = X25519PublicKey::read_field(r, "archive key")?;
        let retention_days = r.u16("retention days")?;
        check_retention(retention_days)?;
        Ok(Self {
            org,
            sequence,
            archive_key,
            retention_days,
            signature: r.array("archive policy signature")?,
        })
    }
}

impl fmt::Debug for ArchivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchivePolicy")
            .field("org", &self.org)
            .field("sequence", &self.sequence)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

/// One conversation message sealed to the clinic's archive key:
///
/// `version[1]=1 ‖ type[1]=0x72 ‖ conversation_id[16] ‖ policy_sequence[8] ‖ ephemeral[32] ‖
/// ciphertext_len[4] ‖ ciphertext[16..=MAX_ARCHIVE_CIPHERTEXT_LEN]`. The first
/// [`ARCHIVE_ENVELOPE_HEADER_LEN`] bytes are the seal's associated data (`conversations.md`
/// §7.3); `ephemeral` is a canonical X25519 key of large order. Opaque to the relay.
#[derive(Clone, PartialEq, Eq)]
pub struct ArchiveEnvelope {
    /// The conversation the message belongs to.
    pub conversation: ConversationId,
    /// The sequence of the archive policy whose key sealed it.
    pub policy_sequence: u64,
    /// The sender's ephemeral X25519 key for this message.
    pub ephemeral: X25519PublicKey,
    /// XChaCha20-Poly1305 output: the archived plaintext, then the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl ArchiveEnvelope {
    /// The associated data of the seal: the envelope's first
    /// [`ARCHIVE_ENVELOPE_HEADER_LEN`] bytes.
    pub fn associated_data(&self) -> [u8; ARCHIVE_ENVELOPE_HEADER_LEN] {
        let mut out = [0u8; ARCHIVE_ENVELOPE_HEADER_LEN];
        let mut v = Vec::with_capacity(ARCHIVE_ENVELOPE_HEADER_LEN);
        self.encode_header(&mut v);
        out.copy_from_slice(&v);
        out
    }

    fn encode_header(&self, out: &mut Vec<u8>) {
        out.push(CONVERSATION_VERSION);
        out.push(ARCHIVE_ENVELOPE_TYPE);
        out.extend_from_slice(&self.conversation.0);
        out.extend_from_slice(&self.policy_sequence.to_be_bytes());
        out.extend_from_slice(self.ephemeral.as_bytes());
    }
}

impl Codec for ArchiveEnvelope {
    const NAME: &'static str = "archive envelope";

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_header(out);
        crate::codec::put_bytes_u32(out, &self.ciphertext);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        crate::codec::read_versioned_header(
            r,
            CONVERSATION_VERSION,
            ARCHIVE_ENVELOPE_TYPE,
            Self::NAME,
        )?;
        let conversation = ConversationId::read(r)?;
        let policy_sequence = r.u64("policy sequence")?;
        let ephemeral = X25519PublicKey::read_field(r, "ephemeral key")?;
        let ciphertext = r.bytes_u32(MAX_ARCHIVE_CIPHERTEXT_LEN, "archive ciphertext")?;
        if ciphertext.len() < 16 {
            return Err(DecodeError::InvalidValue {
                field: "archive ciphertext",
            });
        }
        Ok(Self {
            conversation,
            policy_sequence,
            ephemeral,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

impl fmt::Debug for ArchiveEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveEnvelope")
            .field("conversation", &self.conversation)
            .field("policy_sequence", &self.policy_sequence)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}
