//! The audit chain: a tamper-evident log of metadata events, kept by the relay and by clients.
//!
//! Each [`AuditRecord`] names one [`AuditEvent`] and carries the SHA-256 hash of the record
//! before it, so changing, removing, inserting or reordering any record breaks a link. The
//! first record links to a genesis hash derived from the chain's 16-byte id. Every so often
//! the writer signs the chain's head in an [`AuditCheckpoint`]; a checkpoint commits to every
//! record up to its count, so history behind a checkpoint cannot be cut off or rewritten
//! without the signing key.
//!
//! **Metadata only, by construction.** Events are a closed enum whose fields are fixed-size
//! identifiers ([`DeviceRef`], [`ConversationId`], [`TranscriptId`], [`EnvelopeId`]), counts and
//! small enums. There is no string, byte-vector or length-prefixed field anywhere in this
//! module, so no message content, name or free text can be written into the log.
//!
//! [`AuditChain`] produces records; [`AuditVerifier`] checks a log as a stream in bounded memory
//! and names the first fault precisely ([`AuditFault`]); [`verify`] wraps it for logs already
//! in memory. Byte layouts, hashing and the decision rules are documented in `docs/audit.md`.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use hushwire_proto::audit::{self, AuditChain, AuditEvent, DeviceRef};
//! use hushwire_proto::keys::Fingerprint;
//!
//! let relay_key = SigningKey::from_bytes(&[1; 32]);
//! let mut chain = AuditChain::new([9; 16]);
//! let device = DeviceRef { fingerprint: Fingerprint([2; 32]), device_id: 1 };
//! let records = vec![
//!     chain.append(1_000, AuditEvent::DeviceRegistered { device }),
//!     chain.append(1_005, AuditEvent::DeviceAuthenticated { device }),
//! ];
//! let checkpoint = chain.checkpoint(&relay_key, 1_010);
//!
//! let report = audit::verify([9; 16], &relay_key.verifying_key(), &records, &[checkpoint])
//!     .expect("an untouched chain verifies");
//! assert_eq!((report.records, report.unsigned_tail), (2, 0));
//! ```

use core::borrow::Borrow;
use core::fmt;
use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::codec::{Codec, DecodeError, Reader, read_header};
use crate::keys::{Fingerprint, SIGNATURE_LEN};
use crate::labels;
use crate::signer::{self, Signer};

/// Wire type byte of an [`AuditRecord`].
pub const RECORD_TYPE: u8 = 0x40;
/// Wire type byte of an [`AuditCheckpoint`].
pub const CHECKPOINT_TYPE: u8 = 0x41;
/// Length of an encoded [`AuditCheckpoint`]: `2 + 16 + 8 + 32 + 8 + 64`.
pub const CHECKPOINT_LEN: usize = 130;
/// Length of an encoded [`AuditRecord`] before its event: `version ‖ type ‖ sequence ‖ time_ms ‖
/// previous_hash`.
pub const RECORD_HEADER_LEN: usize = 50;
/// Length of the longest encoded [`AuditEvent`] (`EnvelopeStored`).
pub const MAX_EVENT_LEN: usize = 93;

/// How many of the most recent record hashes an [`AuditVerifier`] keeps, to tell a byte-identical
/// copy of an earlier record ([`AuditFault::Duplicated`]) from a different record that reuses
/// its sequence number ([`AuditFault::Inserted`]). 1024 × 40 bytes.
pub const DUPLICATE_WINDOW: u64 = 1024;
/// How many checkpoints an [`AuditVerifier`] holds while they wait for the records they cover.
pub const MAX_PENDING_CHECKPOINTS: usize = 65_536;

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl Codec for $name {
            const NAME: &'static str = $field;

            /// `id[16]`.
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.0);
            }

            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self(r.array($field)?))
            }
        }
    };
}

id16!(
    /// Names a conversation between two devices. Chosen at random by the device that starts it;
    /// says nothing about who is in it.
    ConversationId,
    "conversation id"
);
id16!(
    /// Names a sealed transcript (random, chosen when the transcript is created).
    TranscriptId,
    "transcript id"
);
id16!(
    /// Names one ciphertext envelope in the relay's mailbox (random, chosen by the relay).
    EnvelopeId,
    "envelope id"
);

/// One device: its identity's fingerprint and its owner's device number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceRef {
    /// SHA-256 fingerprint of the device's identity key.
    pub fingerprint: Fingerprint,
    /// The device number its owner chose.
    pub device_id: u32,
}

impl Codec for DeviceRef {
    const NAME: &'static str = "device";

    /// `fingerprint[32] ‖ device_id[4]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fingerprint.0);
        out.extend_from_slice(&self.device_id.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            fingerprint: Fingerprint(r.array("device fingerprint")?),
            device_id: r.u32("device id")?,
        })
    }
}

/// Why the relay refused to authenticate or register a device. One byte on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AuthFailure {
    /// `0x01`: the challenge response did not verify under the claimed identity.
    BadSignature,
    /// `0x02`: the response answered a challenge that had expired.
    ExpiredChallenge,
    /// `0x03`: the response answered a challenge that was already used.
    ReplayedChallenge,
    /// `0x04`: the device is not registered.
    UnknownDevice,
    /// `0x05`: registration policy refused the device (for example, no valid invite).
    RegistrationRefused,
}

impl AuthFailure {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::BadSignature => 0x01,
            Self::ExpiredChallenge => 0x02,
            Self::ReplayedChallenge => 0x03,
            Self::UnknownDevice => 0x04,
            Self::RegistrationRefused => 0x05,
        }
    }

    /// Parses the wire byte; other values are refused.
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::BadSignature),
            0x02 => Ok(Self::ExpiredChallenge),
            0x03 => Ok(Self::ReplayedChallenge),
            0x04 => Ok(Self::UnknownDevice),
            0x05 => Ok(Self::RegistrationRefused),
            _ => Err(DecodeError::InvalidValue {
                field: "authentication failure reason",
            }),
        }
    }
}

/// One thing the relay or a client did, as metadata. Encoded as `tag[1] ‖ fields`, fields in
/// declaration order, integers big-endian, a [`DeviceRef`] as 36 bytes and each 16-byte id as
/// 16 bytes. Each variant's documentation gives its tag and layout; the tags never change
/// meaning (a new event gets a new tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AuditEvent {
    /// `0x01 ‖ device[36]` (37 bytes): the relay registered a device.
    DeviceRegistered {
        /// The new device.
        device: DeviceRef,
    },
    /// `0x02 ‖ device[36]` (37 bytes): a device answered the relay's challenge.
    DeviceAuthenticated {
        /// The device.
        device: DeviceRef,
    },
    /// `0x03 ‖ reason[1]` (2 bytes): an authentication or registration attempt failed. The
    /// claimed device is deliberately not logged: it is unauthenticated input.
    AuthenticationFailed {
        /// Why.
        reason: AuthFailure,
    },
    /// `0x04 ‖ device[36]` (37 bytes): the relay throttled a device.
    RateLimited {
        /// The device.
        device: DeviceRef,
    },
    /// `0x08 ‖ device[36] ‖ one_time[4] ‖ kem_one_time[4]` (45 bytes): a device uploaded
    /// prekeys.
    PreKeysUploaded {
        /// The device.
        device: DeviceRef,
        /// How many X25519 one-time prekeys it uploaded.
        one_time: u32,
        /// How many ML-KEM one-time prekeys it uploaded.
        kem_one_time: u32,
    },
    /// `0x09 ‖ requester[36] ‖ target[36] ‖ one_time_left[4]` (77 bytes): a device fetched
    /// another device's prekey bundle.
    BundleFetched {
        /// Who fetched.
        requester: DeviceRef,
        /// Whose bundle.
        target: DeviceRef,
        /// X25519 one-time prekeys the target has left after this fetch.
        one_time_left: u32,
    },
    /// `0x10 ‖ sender[36] ‖ recipient[36] ‖ envelope[16] ‖ size[4]` (93 bytes): the relay
    /// durably stored an envelope.
    EnvelopeStored {
        /// The sending device.
        sender: DeviceRef,
        /// The receiving device.
        recipient: DeviceRef,
        /// The stored envelope.
        envelope: EnvelopeId,
        /// Its ciphertext size in bytes.
        size: u32,
    },
    /// `0x11 ‖ recipient[36] ‖ envelope[16]` (53 bytes): the relay delivered an envelope.
    EnvelopeDelivered {
        /// The receiving device.
        recipient: DeviceRef,
        /// The envelope.
        envelope: EnvelopeId,
    },
    /// `0x12 ‖ recipient[36] ‖ envelope[16]` (53 bytes): the recipient acknowledged an envelope,
    /// and the relay deleted it.
    EnvelopeAcknowledged {
        /// The receiving device.
        recipient: DeviceRef,
        /// The envelope.
        envelope: EnvelopeId,
    },
    /// `0x13 ‖ recipient[36] ‖ count[4]` (41 bytes): envelopes passed the retention period
    /// unacknowledged and were deleted.
    EnvelopesExpired {
        /// The device they were for.
        recipient: DeviceRef,
        /// How many.
        count: u32,
    },
    /// `0x20 ‖ device[36] ‖ peer[36] ‖ conversation[16]` (89 bytes): a device started (or
    /// accepted) a session.
    SessionStarted {
        /// The logging device.
        device: DeviceRef,
        /// The other device.
        peer: DeviceRef,
        /// The conversation.
        conversation: ConversationId,
    },
    /// `0x21 ‖ device[36] ‖ peer[36]` (73 bytes): a peer's identity key changed (the safety
    /// number must be compared again).
    IdentityChanged {
        /// The logging device.
        device: DeviceRef,
        /// The peer, under its new identity.
        peer: DeviceRef,
    },
    /// `0x22 ‖ device[36] ‖ peer[36]` (73 bytes): the user confirmed the peer's safety number.
    ContactVerified {
        /// The logging device.
        device: DeviceRef,
        /// The verified peer.
        peer: DeviceRef,
    },
    /// `0x24 ‖ device[36] ‖ peer[36] ‖ requested_by_peer[1]` (74 bytes): a session with the peer
    /// was replaced to heal a conversation (`client.md` §5.13). `requested_by_peer` is 0x00 when
    /// this device could not read the peer's message and asked for the reset, 0x01 when the peer
    /// asked and this device started again and re-sent what was not confirmed.
    SessionReset {
        /// The logging device.
        device: DeviceRef,
        /// The other device.
        peer: DeviceRef,
        /// Whether the peer asked for the reset (else this device did).
        requested_by_peer: bool,
    },
    /// `0x25 ‖ device[36] ‖ peer[36] ‖ message_id[16]` (89 bytes): the user took a queued
    /// message out of the outbox before the relay had it (`client.md` §5.1); its transcript
    /// record, written when it was queued, stays and this record says it never left.
    MessageCancelled {
        /// The logging device.
        device: DeviceRef,
        /// The intended recipient.
        peer: DeviceRef,
        /// The message's id (random, chosen by the sender; the transcript record carries it).
        message_id: [u8; 16],
    },
    /// `0x23 ‖ device[36]` (37 bytes): the device's local store was unlocked (opened with its
    /// passphrase or key): the access to stored ePHI that HIPAA audit controls ask to record.
    StoreUnlocked {
        /// The device.
        device: DeviceRef,
    },
    /// `0x30 ‖ transcript[16] ‖ records[8]` (25 bytes): a transcript checkpoint was signed.
    TranscriptCheckpointed {
        /// The transcript.
        transcript: TranscriptId,
        /// Records the checkpoint covers.
        records: u64,
    },
    /// `0x31 ‖ transcript[16] ‖ records[8] ‖ recipients[1]` (26 bytes): a transcript was
    /// exported, re-sealed to auditors.
    TranscriptExported {
        /// The transcript.
        transcript: TranscriptId,
        /// Records exported.
        records: u64,
        /// How many recipients it was sealed to.
        recipients: u8,
    },
    /// `0x32 ‖ transcript[16] ‖ by[36]` (53 bytes): an exported transcript was opened.
    TranscriptOpened {
        /// The transcript.
        transcript: TranscriptId,
        /// The device that opened it.
        by: DeviceRef,
    },
    /// `0x33 ‖ transcript[16]` (17 bytes): a transcript's key was destroyed (crypto-shredded).
    TranscriptShredded {
        /// The transcript.
        transcript: TranscriptId,
    },
}

impl AuditEvent {
    /// The event's wire tag.
    pub fn tag(&self) -> u8 {
        match self {
            Self::DeviceRegistered { .. } => 0x01,
            Self::DeviceAuthenticated { .. } => 0x02,
            Self::AuthenticationFailed { .. } => 0x03,
            Self::RateLimited { .. } => 0x04,
            Self::PreKeysUploaded { .. } => 0x08,
            Self::BundleFetched { .. } => 0x09,
            Self::EnvelopeStored { .. } => 0x10,
            Self::EnvelopeDelivered { .. } => 0x11,
            Self::EnvelopeAcknowledged { .. } => 0x12,
            Self::EnvelopesExpired { .. } => 0x13,
            Self::SessionStarted { .. } => 0x20,
            Self::IdentityChanged { .. } => 0x21,
            Self::ContactVerified { .. } => 0x22,
            Self::StoreUnlocked { .. } => 0x23,
            Self::SessionReset { .. } => 0x24,
            Self::MessageCancelled { .. } => 0x25,
            Self::TranscriptCheckpointed { .. } => 0x30,
            Self::TranscriptExported { .. } => 0x31,
            Self::TranscriptOpened { .. } => 0x32,
            Self::TranscriptShredded { .. } => 0x33,
        }
    }
}

impl Codec for AuditEvent {
    const NAME: &'static str = "audit event";

    /// `tag[1] ‖ fields`; see each variant.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            Self::DeviceRegistered { device }
            | Self::DeviceAuthenticated { device }
            | Self::RateLimited { device }
            | Self::StoreUnlocked { device } => device.encode(out),
            Self::AuthenticationFailed { reason } => out.push(reason.to_byte()),
            Self::PreKeysUploaded {
                device,
                one_time,
                kem_one_time,
            } => {
                device.encode(out);
                out.extend_from_slice(&one_time.to_be_bytes());
                out.extend_from_slice(&kem_one_time.to_be_bytes());
            }
            Self::BundleFetched {
                requester,
                target,
                one_time_left,
            } => {
                requester.encode(out);
                target.encode(out);
                out.extend_from_slice(&one_time_left.to_be_bytes());
            }
            Self::EnvelopeStored {
                sender,
                recipient,
                envelope,
                size,
            } => {
                sender.encode(out);
                recipient.encode(out);
                envelope.encode(out);
                out.extend_from_slice(&size.to_be_bytes());
            }
            Self::EnvelopeDelivered {
                recipient,
                envelope,
            }
            | Self::EnvelopeAcknowledged {
                recipient,
                envelope,
            } => {
                recipient.encode(out);
                envelope.encode(out);
            }
            Self::EnvelopesExpired { recipient, count } => {
                recipient.encode(out);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Self::SessionStarted {
                device,
                peer,
                conversation,
            } => {
                device.encode(out);
                peer.encode(out);
                conversation.encode(out);
            }
            Self::IdentityChanged { device, peer } | Self::ContactVerified { device, peer } => {
                device.encode(out);
                peer.encode(out);
            }
            Self::SessionReset {
                device,
                peer,
                requested_by_peer,
            } => {
                device.encode(out);
                peer.encode(out);
                out.push(u8::from(*requested_by_peer));
            }
            Self::MessageCancelled {
                device,
                peer,
                message_id,
            } => {
                device.encode(out);
                peer.encode(out);
                out.extend_from_slice(message_id);
            }
            Self::TranscriptCheckpointed {
                transcript,
                records,
            } => {
                transcript.encode(out);
                out.extend_from_slice(&records.to_be_bytes());
            }
            Self::TranscriptExported {
                transcript,
                records,
                recipients,
            } => {
                transcript.encode(out);
                out.extend_from_slice(&records.to_be_bytes());
                out.push(*recipients);
            }
            Self::TranscriptOpened { transcript, by } => {
                transcript.encode(out);
                by.encode(out);
            }
            Self::TranscriptShredded { transcript } => transcript.encode(out),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("audit event type")?;
        Ok(match tag {
            0x01 => Self::DeviceRegistered {
                device: DeviceRef::read(r)?,
            },
            0x02 => Self::DeviceAuthenticated {
                device: DeviceRef::read(r)?,
            },
            0x03 => Self::AuthenticationFailed {
                reason: AuthFailure::from_byte(r.u8("authentication failure reason")?)?,
            },
            0x04 => Self::RateLimited {
                device: DeviceRef::read(r)?,
            },
            0x08 => Self::PreKeysUploaded {
                device: DeviceRef::read(r)?,
                one_time: r.u32("one-time prekeys uploaded")?,
                kem_one_time: r.u32("ML-KEM one-time prekeys uploaded")?,
            },
            0x09 => Self::BundleFetched {
                requester: DeviceRef::read(r)?,
                target: DeviceRef::read(r)?,
                one_time_left: r.u32("one-time prekeys left")?,
            },
            0x10 => Self::EnvelopeStored {
                sender: DeviceRef::read(r)?,
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
                size: r.u32("envelope size")?,
            },
            0x11 => Self::EnvelopeDelivered {
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
            },
            0x12 => Self::EnvelopeAcknowledged {
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
            },
            0x13 => Self::EnvelopesExpired {
                recipient: DeviceRef::read(r)?,
                count: r.u32("expired envelope count")?,
            },
            0x20 => Self::SessionStarted {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                conversation: ConversationId::read(r)?,
            },
            0x21 => Self::IdentityChanged {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
            },
            0x22 => Self::ContactVerified {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
            },
            0x25 => Self::MessageCancelled {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                message_id: r.array("message id")?,
            },
            0x24 => Self::SessionReset {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                requested_by_peer: match r.u8("requested by peer")? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "requested by peer",
                        });
                    }
                },
            },
            0x23 => Self::StoreUnlocked {
                device: DeviceRef::read(r)?,
            },
            0x30 => Self::TranscriptCheckpointed {
                transcript: TranscriptId::read(r)?,
                records: r.u64("transcript record count")?,
            },
            0x31 => Self::TranscriptExported {
                transcript: TranscriptId::read(r)?,
                records: r.u64("transcript record count")?,
                recipients: r.u8("export recipient count")?,
            },
            0x32 => Self::TranscriptOpened {
                transcript: TranscriptId::read(r)?,
                by: DeviceRef::read(r)?,
            },
            0x33 => Self::TranscriptShredded {
                transcript: TranscriptId::read(r)?,
            },
            _ => {
                return Err(DecodeError::UnknownType {
                    structure: Self::NAME,
                    tag,
                });
            }
        })
    }
}

/// The `previous_hash` of a chain's first record: SHA-256(`AUDIT_GENESIS ‖ chain_id[16]`). It
/// ties every record to its chain, so records of one chain never verify as another's.
pub fn genesis_hash(chain_id: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::AUDIT_GENESIS);
    h.update(chain_id);
    h.finalize().into()
}

/// One entry of an audit chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditRecord {
    /// Position in the chain, from 0.
    pub sequence: u64,
    /// When the writer logged it, in Unix milliseconds by the writer's clock. Covered by the
    /// hash, but nothing checks that it increases: a clock can step back.
    pub time_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// [`AuditRecord::hash`] of the record before, or [`genesis_hash`] for record 0.
    pub previous_hash: [u8; 32],
}

impl AuditRecord {
    /// SHA-256(`AUDIT_RECORD ‖ encoded record`), version and type bytes included.
    pub fn hash(&self) -> [u8; 32] {
        let mut encoded = Vec::with_capacity(RECORD_HEADER_LEN + MAX_EVENT_LEN);
        self.encode(&mut encoded);
        let mut h = Sha256::new();
        h.update(labels::AUDIT_RECORD);
        h.update(&encoded);
        h.finalize().into()
    }
}

impl Codec for AuditRecord {
    const NAME: &'static str = "audit record";

    /// `version[1] ‖ type[1]=0x40 ‖ sequence[8] ‖ time_ms[8] ‖ previous_hash[32] ‖ event[2..=93]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(RECORD_TYPE);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.previous_hash);
        self.event.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, RECORD_TYPE, Self::NAME)?;
        Ok(Self {
            sequence: r.u64("audit sequence")?,
            time_ms: r.u64("audit time")?,
            previous_hash: r.array("audit previous hash")?,
            event: AuditEvent::read(r)?,
        })
    }
}

/// The writer's signature over its chain's head: every record before `count` is fixed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditCheckpoint {
    /// The chain.
    pub chain_id: [u8; 16],
    /// How many records it covers (sequences `0..count`).
    pub count: u64,
    /// Hash of record `count - 1`, or the genesis hash when `count` is 0.
    pub head_hash: [u8; 32],
    /// When it was signed, in Unix milliseconds by the writer's clock.
    pub time_ms: u64,
    /// Ed25519 signature over `SIG_AUDIT_CHECKPOINT ‖` [`AuditCheckpoint::signed_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl AuditCheckpoint {
    /// The bytes the signature covers after its context:
    /// `chain_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8]`.
    pub fn signed_message(
        chain_id: &[u8; 16],
        count: u64,
        head_hash: &[u8; 32],
        time_ms: u64,
    ) -> [u8; 64] {
        let mut m = [0u8; 64];
        let (id, rest) = m.split_at_mut(16);
        let (c, rest) = rest.split_at_mut(8);
        let (h, t) = rest.split_at_mut(32);
        id.copy_from_slice(chain_id);
        c.copy_from_slice(&count.to_be_bytes());
        h.copy_from_slice(head_hash);
        t.copy_from_slice(&time_ms.to_be_bytes());
        m
    }

    /// Signs a checkpoint over the given head.
    pub fn sign<S: Signer + ?Sized>(
        signer: &S,
        chain_id: [u8; 16],
        count: u64,
        head_hash: [u8; 32],
        time_ms: u64,
    ) -> Self {
        let message = Self::signed_message(&chain_id, count, &head_hash, time_ms);
        Self {
            chain_id,
            count,
            head_hash,
            time_ms,
            signature: signer.sign(labels::SIG_AUDIT_CHECKPOINT, &message),
        }
    }

    /// Checks the signature under `key` (strict Ed25519).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let message =
            Self::signed_message(&self.chain_id, self.count, &self.head_hash, self.time_ms);
        signer::verify(key, labels::SIG_AUDIT_CHECKPOINT, &message, &self.signature)
    }
}

impl Codec for AuditCheckpoint {
    const NAME: &'static str = "audit checkpoint";

    /// `version[1] ‖ type[1]=0x41 ‖ chain_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8] ‖
    /// signature[64]` (130 bytes).
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(CHECKPOINT_TYPE);
        out.extend_from_slice(&self.chain_id);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.head_hash);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, CHECKPOINT_TYPE, Self::NAME)?;
        Ok(Self {
            chain_id: r.array("audit chain id")?,
            count: r.u64("audit checkpoint count")?,
            head_hash: r.array("audit head hash")?,
            time_ms: r.u64("audit checkpoint time")?,
            signature: r.array("audit checkpoint signature")?,
        })
    }
}

/// The writing end of an audit chain: numbers records, links each to the one before, and signs
/// checkpoints. Holds only the chain id, the count and the head hash, so a writer that restarts
/// continues from its stored head with [`AuditChain::resume`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuditChain {
    chain_id: [u8; 16],
    count: u64,
    head: [u8; 32],
}

impl AuditChain {
    /// A new, empty chain. `chain_id` should be random and never reused.
    pub fn new(chain_id: [u8; 16]) -> Self {
        Self {
            chain_id,
            count: 0,
            head: genesis_hash(&chain_id),
        }
    }

    /// Continues a chain that already holds `count` records, the last of which hashes to
    /// `head_hash` (its [`AuditRecord::hash`]; for `count == 0`, the genesis hash).
    pub fn resume(chain_id: [u8; 16], count: u64, head_hash: [u8; 32]) -> Self {
        Self {
            chain_id,
            count,
            head: head_hash,
        }
    }

    /// The chain's id.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// Appends an event: returns the record to store and advances the head. The caller must
    /// store the record before acting on the next event, or the chain will have a gap.
    pub fn append(&mut self, time_ms: u64, event: AuditEvent) -> AuditRecord {
        let record = AuditRecord {
            sequence: self.count,
            time_ms,
            event,
            previous_hash: self.head,
        };
        self.head = record.hash();
        // 2^64 records are out of reach; saturating keeps this total without a panic path.
        self.count = self.count.saturating_add(1);
        record
    }

    /// Signs the current head: every record appended so far becomes fixed.
    pub fn checkpoint<S: Signer + ?Sized>(&self, signer: &S, time_ms: u64) -> AuditCheckpoint {
        AuditCheckpoint::sign(signer, self.chain_id, self.count, self.head, time_ms)
    }

    /// Hash of the last record (the genesis hash while the chain is empty).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// How many records the chain holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the chain holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// What a successful verification established.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AuditReport {
    /// Records verified, all in order and linked.
    pub records: u64,
    /// Checkpoints whose signature verified and whose head matched the log.
    pub checkpoints: u64,
    /// Hash of the last record (the genesis hash for an empty log).
    pub head_hash: [u8; 32],
    /// Records after the last checkpoint. Nothing signed covers them: if records were cut off
    /// the end of the log, or the last of them was altered, no verifier can tell.
    pub unsigned_tail: u64,
}

/// The first problem found in a log, located. Sequence numbers are those the records should
/// carry (their position in an untampered chain). `docs/audit.md` gives the decision rules.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditFault {
    /// The record at stream `position` (counting from 0) could not be decoded.
    Malformed {
        /// How many records were pushed before it.
        position: u64,
        /// Why it could not be decoded.
        error: DecodeError,
    },
    /// The record at `sequence` is not the one that was logged: its hash disagrees with what
    /// the next record or a checkpoint says, or its own link or sequence field was changed.
    Modified {
        /// The altered record.
        sequence: u64,
    },
    /// No record with `sequence` appears (the first missing one, when several are).
    Removed {
        /// The first missing sequence number.
        sequence: u64,
    },
    /// A record that is not part of the chain claims `sequence` (which another record also
    /// claims, or which no place in the chain has room for).
    Inserted {
        /// The sequence number the extra record claims.
        sequence: u64,
    },
    /// A byte-identical second copy of record `sequence` appears.
    Duplicated {
        /// The repeated record.
        sequence: u64,
    },
    /// Every record is present but not in order: `sequence` is the first whose place holds
    /// another record; it appears later (or the record in its place belongs later).
    Reordered {
        /// The first sequence number out of place.
        sequence: u64,
    },
    /// A checkpoint covers `checkpoint_count` records but the log ends after `records`: the
    /// end of the log was cut off.
    Truncated {
        /// The largest count a checkpoint names.
        checkpoint_count: u64,
        /// Records the log holds.
        records: u64,
    },
    /// A checkpoint's signature does not verify under the expected key: forged, altered, or
    /// signed by someone else.
    BadCheckpointSignature {
        /// The count the checkpoint claims.
        count: u64,
    },
    /// A validly signed checkpoint names a head the log does not have although the log links
    /// consistently around it (history was rewritten and re-linked), or two validly signed
    /// checkpoints name different heads for the same count (the writer forked its chain).
    CheckpointMismatch {
        /// The checkpoint's count.
        count: u64,
    },
    /// A checkpoint was pushed when it could no longer be checked: after records past its
    /// count were consumed, or while [`MAX_PENDING_CHECKPOINTS`] others were waiting. A use
    /// error, not evidence of tampering: push each checkpoint right after the record it covers
    /// (as [`verify`] does) or before it.
    CheckpointOutOfOrder {
        /// The checkpoint's count.
        count: u64,
    },
    /// The log or a checkpoint belongs to another chain: record 0 does not link to this chain's
    /// genesis hash although it is intact, or a checkpoint names another chain id.
    WrongChain,
}

impl fmt::Display for AuditFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { position, error } => {
                write!(f, "record at position {position} is malformed: {error}")
            }
            Self::Modified { sequence } => write!(f, "record {sequence} was modified"),
            Self::Removed { sequence } => write!(f, "record {sequence} was removed"),
            Self::Inserted { sequence } => {
                write!(f, "a record claiming sequence {sequence} was inserted")
            }
            Self::Duplicated { sequence } => write!(f, "record {sequence} appears twice"),
            Self::Reordered { sequence } => write!(f, "records are out of order at {sequence}"),
            Self::Truncated {
                checkpoint_count,
                records,
            } => write!(
                f,
                "log truncated: a checkpoint covers {checkpoint_count} records, the log holds {records}"
            ),
            Self::BadCheckpointSignature { count } => {
                write!(f, "checkpoint at count {count} has an invalid signature")
            }
            Self::CheckpointMismatch { count } => write!(
                f,
                "checkpoint at count {count} names a head the log does not have"
            ),
            Self::CheckpointOutOfOrder { count } => write!(
                f,
                "checkpoint at count {count} was pushed too late or too early to be checked"
            ),
            Self::WrongChain => f.write_str("the log belongs to another audit chain"),
        }
    }
}

impl std::error::Error for AuditFault {}

/// A record seen but not (yet) placed in the chain.
#[derive(Clone, Copy, Debug)]
struct Loose {
    sequence: u64,
    hash: [u8; 32],
    previous_hash: [u8; 32],
}

impl Loose {
    fn of(record: &AuditRecord, hash: [u8; 32]) -> Self {
        Self {
            sequence: record.sequence,
            hash,
            previous_hash: record.previous_hash,
        }
    }
}

/// Where the verifier is. Every mode but `InOrder` follows an anomaly whose classification
/// needs records that have not arrived yet.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// No anomaly so far.
    InOrder,
    /// The last record linked to the head but carried the wrong sequence number. Its sequence
    /// field was changed (Modified), unless the next record is the real successor (Inserted).
    Renumbered(Loose),
    /// The last record skipped ahead and did not link to the head. If the next record is the
    /// expected one and links to the head, the skipped record is a stray; otherwise records are
    /// missing here (Removed, or Reordered if the first missing one turns up later).
    SkippedAhead(Loose),
    /// A stray record was set aside and the chain went on around it. When the chain reaches the
    /// stray's sequence it is resolved: Reordered if it fits there exactly, Duplicated or
    /// Inserted if its sequence turns up a second time, Inserted otherwise.
    Stray {
        stray: Loose,
        /// The sequence expected where the stray appeared.
        missing: u64,
    },
    /// Records are missing from `missing` on. Only sequence numbers are watched now: Reordered
    /// if `missing` turns up, Removed at the end otherwise.
    Gap { missing: u64 },
}

/// What is known about the newest record placed in the chain (the tip). Its verdict waits for
/// the evidence that follows it: the next record's link and any checkpoint at its count.
#[derive(Clone, Copy, Debug)]
struct Tip {
    /// Whether its `previous_hash` matched the record before (or the genesis hash).
    in_link_ok: bool,
    /// Whether a checkpoint confirmed the record before it (or the genesis hash).
    predecessor_signed: bool,
    /// The head hash a checkpoint at its count signed, if one arrived.
    signed_head: Option<[u8; 32]>,
}

/// Verifies an audit log as a stream: push records in log order and checkpoints as they come,
/// then [`finish`](AuditVerifier::finish). Memory is bounded: the head, the last
/// [`DUPLICATE_WINDOW`] record hashes, and checkpoints waiting for their records.
///
/// Push each checkpoint before the record after the last one it covers (right after that
/// record, or any time earlier); [`verify`] does this for logs in memory. The first fault is
/// kept: later pushes return it again. Some faults can only be settled by later records (a
/// missing record is Removed only if it never turns up), so `push_*` may return `Ok` for a log
/// that `finish` rejects.
#[derive(Debug)]
pub struct AuditVerifier {
    chain_id: [u8; 16],
    key: VerifyingKey,
    genesis: [u8; 32],
    genesis_signed: bool,
    /// Records pushed, in stream order.
    position: u64,
    /// Records placed in the chain: sequences `0..accepted` arrived in order.
    accepted: u64,
    /// Hash of record `accepted - 1`, or the genesis hash.
    head: [u8; 32],
    tip: Option<Tip>,
    mode: Mode,
    /// Checkpoints whose count is ahead of `accepted`: count → signed head.
    pending: BTreeMap<u64, [u8; 32]>,
    /// `(sequence, hash)` of recent records, at index `sequence % DUPLICATE_WINDOW`.
    recent: Vec<(u64, [u8; 32])>,
    checkpoints: u64,
    signed_count: u64,
    fault: Option<AuditFault>,
}

impl AuditVerifier {
    /// A verifier for the chain `chain_id`, whose checkpoints `signer_public` signs.
    pub fn new(chain_id: [u8; 16], signer_public: VerifyingKey) -> Self {
        let genesis = genesis_hash(&chain_id);
        Self {
            chain_id,
            key: signer_public,
            genesis,
            genesis_signed: false,
            position: 0,
            accepted: 0,
            head: genesis,
            tip: None,
            mode: Mode::InOrder,
            pending: BTreeMap::new(),
            recent: Vec::new(),
            checkpoints: 0,
            signed_count: 0,
            fault: None,
        }
    }

    /// Pushes the next record of the log.
    pub fn push_record(&mut self, record: &AuditRecord) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let result = self.step(record);
        self.position = self.position.saturating_add(1);
        self.keep(result)
    }

    /// Decodes and pushes the next record of the log; undecodable bytes are
    /// [`AuditFault::Malformed`] at this position.
    pub fn push_encoded_record(&mut self, bytes: &[u8]) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        match AuditRecord::from_bytes(bytes) {
            Ok(record) => self.push_record(&record),
            Err(error) => self.keep(Err(AuditFault::Malformed {
                position: self.position,
                error,
            })),
        }
    }

    /// Pushes a checkpoint: its chain id and signature are checked at once, its head when the
    /// record it covers is in.
    pub fn push_checkpoint(&mut self, checkpoint: &AuditCheckpoint) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let result = self.witness(checkpoint);
        self.keep(result)
    }

    /// Ends the log: settles what was waiting for more records and reports.
    pub fn finish(self) -> Result<AuditReport, AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        match self.mode {
            Mode::Gap { missing } => return Err(AuditFault::Removed { sequence: missing }),
            Mode::Renumbered(_) => {
                return Err(AuditFault::Modified {
                    sequence: self.accepted,
                });
            }
            Mode::SkippedAhead(_) => {
                self.settle_tip(None)?;
                return Err(AuditFault::Removed {
                    sequence: self.accepted,
                });
            }
            Mode::Stray { stray, missing } => {
                let fits = self.settle_tip(None).is_ok()
                    && self.accepted == stray.sequence
                    && stray.previous_hash == self.head;
                return Err(if fits {
                    AuditFault::Reordered { sequence: missing }
                } else {
                    AuditFault::Inserted {
                        sequence: stray.sequence,
                    }
                });
            }
            Mode::InOrder => self.settle_tip(None)?,
        }
        if let Some((&checkpoint_count, _)) = self.pending.last_key_value() {
            return Err(AuditFault::Truncated {
                checkpoint_count,
                records: self.accepted,
            });
        }
        Ok(AuditReport {
            records: self.accepted,
            checkpoints: self.checkpoints,
            head_hash: self.head,
            unsigned_tail: self.accepted.saturating_sub(self.signed_count),
        })
    }

    fn keep(&mut self, result: Result<(), AuditFault>) -> Result<(), AuditFault> {
        if let Err(fault) = result {
            self.fault = Some(fault);
        }
        result
    }

    fn step(&mut self, record: &AuditRecord) -> Result<(), AuditFault> {
        let hash = record.hash();
        let expected = self.accepted;
        match self.mode {
            Mode::InOrder => self.in_order(record, hash),
            Mode::Gap { missing } => {
                if record.sequence == missing {
                    Err(AuditFault::Reordered { sequence: missing })
                } else {
                    Ok(())
                }
            }
            Mode::Renumbered(loose) => {
                if record.sequence == expected && record.previous_hash == self.head {
                    // The chain goes on from the head without it: it was slipped in.
                    Err(AuditFault::Inserted {
                        sequence: loose.sequence,
                    })
                } else {
                    Err(AuditFault::Modified { sequence: expected })
                }
            }
            Mode::SkippedAhead(loose) => {
                if record.sequence == expected && record.previous_hash == self.head {
                    self.mode = Mode::Stray {
                        stray: loose,
                        missing: expected,
                    };
                    self.in_order(record, hash)
                } else {
                    self.settle_tip(None)?;
                    self.mode = Mode::Gap { missing: expected };
                    if record.sequence == expected {
                        Err(AuditFault::Reordered { sequence: expected })
                    } else {
                        Ok(())
                    }
                }
            }
            Mode::Stray { stray, missing } => {
                if record.sequence == stray.sequence {
                    return Err(if hash == stray.hash {
                        AuditFault::Duplicated {
                            sequence: stray.sequence,
                        }
                    } else {
                        AuditFault::Inserted {
                            sequence: stray.sequence,
                        }
                    });
                }
                let inserted = AuditFault::Inserted {
                    sequence: stray.sequence,
                };
                if expected == stray.sequence {
                    // The stray's own place: it belongs here if it links to the head and the
                    // next record links to it.
                    return Err(
                        if stray.previous_hash == self.head && record.previous_hash == stray.hash {
                            AuditFault::Reordered { sequence: missing }
                        } else {
                            inserted
                        },
                    );
                }
                if record.sequence == expected && record.previous_hash == self.head {
                    // A second fault before the stray is placed: the stray is the first, and
                    // it cannot be a moved record any more.
                    self.in_order(record, hash).map_err(|_| inserted)
                } else {
                    Err(inserted)
                }
            }
        }
    }

    /// Handles a record while everything before it is in order.
    fn in_order(&mut self, record: &AuditRecord, hash: [u8; 32]) -> Result<(), AuditFault> {
        let expected = self.accepted;
        let links = record.previous_hash == self.head;
        if record.sequence == expected {
            self.settle_tip(Some(links))?;
            self.accept(record.sequence, hash, links);
            Ok(())
        } else if links {
            self.settle_tip(Some(true))?;
            self.mode = Mode::Renumbered(Loose::of(record, hash));
            Ok(())
        } else if record.sequence < expected {
            // A sequence number seen before. A repeat of the tip's explains a broken link into
            // the tip (the tip was the extra record), so the tip is not judged first then.
            if record.sequence.saturating_add(1) != expected {
                self.settle_tip(None)?;
            }
            Err(self.repeated(record.sequence, hash))
        } else {
            self.mode = Mode::SkippedAhead(Loose::of(record, hash));
            Ok(())
        }
    }

    /// Classifies a second record with `sequence`.
    fn repeated(&self, sequence: u64, hash: [u8; 32]) -> AuditFault {
        let slot = usize::try_from(sequence % DUPLICATE_WINDOW).unwrap_or(0);
        match self.recent.get(slot) {
            Some(&(seen, seen_hash)) if seen == sequence && seen_hash == hash => {
                AuditFault::Duplicated { sequence }
            }
            // Different content, or too far back to compare: reported as the more serious.
            _ => AuditFault::Inserted { sequence },
        }
    }

    /// Places a record at the end of the chain.
    fn accept(&mut self, sequence: u64, hash: [u8; 32], in_link_ok: bool) {
        let predecessor_signed = match &self.tip {
            Some(tip) => tip.signed_head == Some(self.head),
            None => self.genesis_signed,
        };
        self.head = hash;
        self.accepted = self.accepted.saturating_add(1);
        let slot = usize::try_from(sequence % DUPLICATE_WINDOW).unwrap_or(0);
        match self.recent.get_mut(slot) {
            Some(entry) => *entry = (sequence, hash),
            None => self.recent.push((sequence, hash)),
        }
        self.tip = Some(Tip {
            in_link_ok,
            predecessor_signed,
            signed_head: self.pending.remove(&self.accepted),
        });
    }

    /// Judges the tip once the evidence after it is in. `successor_links` is whether the next
    /// record links to it (`None`: there is no next record to ask).
    ///
    /// With its own link intact, the tip is wrong only if a checkpoint disagrees with it. With
    /// its link broken, either it (its `previous_hash`) or its predecessor (any other byte) was
    /// changed: a checkpoint on the predecessor, then a checkpoint on the tip, then the next
    /// record's link decide which; with no evidence the earlier record is named.
    fn settle_tip(&self, successor_links: Option<bool>) -> Result<(), AuditFault> {
        let Some(tip) = &self.tip else {
            return Ok(());
        };
        let sequence = self.accepted.saturating_sub(1);
        let signed = tip.signed_head.map(|head| head == self.head);
        if tip.in_link_ok {
            return match signed {
                // The next record vouches for the tip as it is, the signature does not: the
                // log was re-linked after the fact.
                Some(false) if successor_links == Some(true) => {
                    Err(AuditFault::CheckpointMismatch {
                        count: self.accepted,
                    })
                }
                Some(false) => Err(AuditFault::Modified { sequence }),
                _ => Ok(()),
            };
        }
        if tip.predecessor_signed {
            return Err(AuditFault::Modified { sequence });
        }
        let tip_intact = signed.or(successor_links).unwrap_or(true);
        Err(match (tip_intact, sequence.checked_sub(1)) {
            (false, _) => AuditFault::Modified { sequence },
            (true, Some(predecessor)) => AuditFault::Modified {
                sequence: predecessor,
            },
            // Record 0 is intact but does not link to this chain's genesis.
            (true, None) => AuditFault::WrongChain,
        })
    }

    fn witness(&mut self, checkpoint: &AuditCheckpoint) -> Result<(), AuditFault> {
        let count = checkpoint.count;
        if checkpoint.chain_id != self.chain_id {
            return Err(AuditFault::WrongChain);
        }
        if !checkpoint.verify(&self.key) {
            return Err(AuditFault::BadCheckpointSignature { count });
        }
        self.checkpoints = self.checkpoints.saturating_add(1);
        self.signed_count = self.signed_count.max(count);
        if matches!(self.mode, Mode::Gap { .. }) {
            // The log is already known to be broken; only sequence numbers matter now.
            return Ok(());
        }
        let head = checkpoint.head_hash;
        if count < self.accepted {
            return Err(AuditFault::CheckpointOutOfOrder { count });
        }
        if count == self.accepted {
            match &mut self.tip {
                None if head == self.genesis => self.genesis_signed = true,
                None => return Err(AuditFault::CheckpointMismatch { count }),
                Some(tip) => match tip.signed_head {
                    Some(earlier) if earlier != head => {
                        return Err(AuditFault::CheckpointMismatch { count });
                    }
                    _ => tip.signed_head = Some(head),
                },
            }
            return Ok(());
        }
        match self.pending.get(&count) {
            Some(earlier) if *earlier != head => Err(AuditFault::CheckpointMismatch { count }),
            Some(_) => Ok(()),
            None if self.pending.len() >= MAX_PENDING_CHECKPOINTS => {
                Err(AuditFault::CheckpointOutOfOrder { count })
            }
            None => {
                self.pending.insert(count, head);
                Ok(())
            }
        }
    }
}

/// Verifies a log held in memory: `records` in log order, `checkpoints` in any order. Each
/// checkpoint is pushed right after the record at its count's position in `records`.
pub fn verify<I>(
    chain_id: [u8; 16],
    signer: &VerifyingKey,
    records: I,
    checkpoints: &[AuditCheckpoint],
) -> Result<AuditReport, AuditFault>
where
    I: IntoIterator,
    I::Item: Borrow<AuditRecord>,
{
    let mut due: Vec<&AuditCheckpoint> = checkpoints.iter().collect();
    due.sort_by_key(|c| c.count);
    let mut due = due.into_iter().peekable();
    let mut verifier = AuditVerifier::new(chain_id, *signer);
    let mut pushed = 0u64;
    for record in records {
        while let Some(checkpoint) = due.next_if(|c| c.count <= pushed) {
            verifier.push_checkpoint(checkpoint)?;
        }
        verifier.push_record(record.borrow())?;
        pushed = pushed.saturating_add(1);
    }
    for checkpoint in due {
        verifier.push_checkpoint(checkpoint)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    use super::*;

    const CHAIN: [u8; 16] = [0x5a; 16];

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn device(n: u8) -> DeviceRef {
        DeviceRef {
            fingerprint: Fingerprint([n; 32]),
            device_id: u32::from(n),
        }
    }

    /// One event of every kind, in tag order.
    fn every_event() -> Vec<AuditEvent> {
        let (a, b) = (device(1), device(2));
        let envelope = EnvelopeId([3; 16]);
        let transcript = TranscriptId([4; 16]);
        vec![
            AuditEvent::DeviceRegistered { device: a },
            AuditEvent::DeviceAuthenticated { device: a },
            AuditEvent::AuthenticationFailed {
                reason: AuthFailure::ReplayedChallenge,
            },
            AuditEvent::RateLimited { device: a },
            AuditEvent::PreKeysUploaded {
                device: a,
                one_time: 100,
                kem_one_time: 50,
            },
            AuditEvent::BundleFetched {
                requester: a,
                target: b,
                one_time_left: 99,
            },
            AuditEvent::EnvelopeStored {
                sender: a,
                recipient: b,
                envelope,
                size: 1234,
            },
            AuditEvent::EnvelopeDelivered {
                recipient: b,
                envelope,
            },
            AuditEvent::EnvelopeAcknowledged {
                recipient: b,
                envelope,
            },
            AuditEvent::EnvelopesExpired {
                recipient: b,
                count: 7,
            },
            AuditEvent::SessionStarted {
                device: a,
                peer: b,
                conversation: ConversationId([5; 16]),
            },
            AuditEvent::IdentityChanged { device: a, peer: b },
            AuditEvent::ContactVerified { device: a, peer: b },
            AuditEvent::StoreUnlocked { device: a },
            AuditEvent::SessionReset {
                device: a,
                peer: b,
                requested_by_peer: true,
            },
            AuditEvent::MessageCancelled {
                device: a,
                peer: b,
                message_id: [6; 16],
            },
            AuditEvent::TranscriptCheckpointed {
                transcript,
                records: 10,
            },
            AuditEvent::TranscriptExported {
                transcript,
                records: 10,
                recipients: 2,
            },
            AuditEvent::TranscriptOpened { transcript, by: b },
            AuditEvent::TranscriptShredded { transcript },
        ]
    }

    /// `n` records cycling through every event kind, and a checkpoint at each count in `at`.
    fn chain_with(n: u64, at: &[u64]) -> (Vec<AuditRecord>, Vec<AuditCheckpoint>) {
        let signer = key(1);
        let events = every_event();
        let mut chain = AuditChain::new(CHAIN);
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        for i in 0..=n {
            if at.contains(&i) {
                checkpoints.push(chain.checkpoint(&signer, 1_000_000 + i));
            }
            if i < n {
                let event = events[(i as usize) % events.len()];
                records.push(chain.append(1_000 + i, event));
            }
        }
        (records, checkpoints)
    }

    fn check(
        records: &[AuditRecord],
        checkpoints: &[AuditCheckpoint],
    ) -> Result<AuditReport, AuditFault> {
        verify(CHAIN, &key(1).verifying_key(), records, checkpoints)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // ---- encoding ----

    #[test]
    fn every_event_round_trips_with_its_documented_tag_and_length() {
        let expected: [(u8, usize); 20] = [
            (0x01, 37),
            (0x02, 37),
            (0x03, 2),
            (0x04, 37),
            (0x08, 45),
            (0x09, 77),
            (0x10, 93),
            (0x11, 53),
            (0x12, 53),
            (0x13, 41),
            (0x20, 89),
            (0x21, 73),
            (0x22, 73),
            (0x23, 37),
            (0x24, 74),
            (0x25, 89),
            (0x30, 25),
            (0x31, 26),
            (0x32, 53),
            (0x33, 17),
        ];
        for (event, (tag, len)) in every_event().into_iter().zip(expected) {
            let bytes = event.to_bytes();
            assert_eq!(bytes[0], tag, "{event:?}");
            assert_eq!(event.tag(), tag);
            assert_eq!(bytes.len(), len, "{event:?}");
            assert!(len <= MAX_EVENT_LEN);
            assert_eq!(AuditEvent::from_bytes(&bytes), Ok(event));
        }
    }

    #[test]
    fn every_auth_failure_round_trips_and_others_are_refused() {
        for reason in [
            AuthFailure::BadSignature,
            AuthFailure::ExpiredChallenge,
            AuthFailure::ReplayedChallenge,
            AuthFailure::UnknownDevice,
            AuthFailure::RegistrationRefused,
        ] {
            assert_eq!(AuthFailure::from_byte(reason.to_byte()), Ok(reason));
        }
        for b in [0x00, 0x06, 0xff] {
            assert!(AuthFailure::from_byte(b).is_err());
        }
    }

    #[test]
    fn decoding_refuses_bad_headers_tags_and_trailing_bytes() {
        let (records, checkpoints) = chain_with(1, &[1]);
        let bytes = records[0].to_bytes();
        assert_eq!(bytes.len(), RECORD_HEADER_LEN + 37);

        let mut b = bytes.clone();
        b[0] = 2;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        let mut b = bytes.clone();
        b[1] = CHECKPOINT_TYPE;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnknownType {
                structure: "audit record",
                tag: CHECKPOINT_TYPE
            })
        );
        let mut b = bytes.clone();
        b[RECORD_HEADER_LEN] = 0x7f;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnknownType {
                structure: "audit event",
                tag: 0x7f
            })
        );
        let mut b = bytes.clone();
        b.push(0);
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::TrailingBytes {
                structure: "audit record"
            })
        );
        assert!(matches!(
            AuditRecord::from_bytes(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));

        let c = checkpoints[0].to_bytes();
        assert_eq!(c.len(), CHECKPOINT_LEN);
        assert_eq!(AuditCheckpoint::from_bytes(&c), Ok(checkpoints[0]));
        let mut longer = c.clone();
        longer.push(0);
        assert!(AuditCheckpoint::from_bytes(&longer).is_err());
        assert!(AuditCheckpoint::from_bytes(&bytes).is_err());
    }

    /// Fixed values an independent implementation can check against (also in docs/audit.md).
    #[test]
    fn test_vector() {
        let chain_id = [0x11; 16];
        assert_eq!(
            hex(&genesis_hash(&chain_id)),
            "58a90539d8570a63b57b58891cfe3f4d52d9a6eba84502af478e21aff3c1c48d"
        );
        let mut chain = AuditChain::new(chain_id);
        let record = chain.append(
            1_700_000_000_000,
            AuditEvent::EnvelopeDelivered {
                recipient: DeviceRef {
                    fingerprint: Fingerprint([0x22; 32]),
                    device_id: 3,
                },
                envelope: EnvelopeId([0x33; 16]),
            },
        );
        assert_eq!(
            hex(&record.to_bytes()),
            concat!(
                "0140",
                "0000000000000000",
                "0000018bcfe56800",
                "58a90539d8570a63b57b58891cfe3f4d52d9a6eba84502af478e21aff3c1c48d",
                "11",
                "2222222222222222222222222222222222222222222222222222222222222222",
                "00000003",
                "33333333333333333333333333333333",
            )
        );
        assert_eq!(
            hex(&record.hash()),
            "c41ce6f72b63cef525a213e520aadccc4c44ecc66b33dc7bfdadf7605c6e8c44"
        );
        let checkpoint = chain.checkpoint(&key(0x44), 1_700_000_001_000);
        assert_eq!(
            hex(&checkpoint.to_bytes()),
            concat!(
                "0141",
                "11111111111111111111111111111111",
                "0000000000000001",
                "c41ce6f72b63cef525a213e520aadccc4c44ecc66b33dc7bfdadf7605c6e8c44",
                "0000018bcfe56be8",
                "da8ffac4d7cfa25518955dd927eda1a36a97a524b65b7148e7b3d0202f7f8961",
                "e8ce94ed186ebdc5f7c033d66e54f6f9de05acfd714443d893cb129df2e8b203",
            )
        );
    }

    // ---- the writer ----

    #[test]
    fn resume_continues_the_same_chain() {
        let (records, _) = chain_with(20, &[]);
        let mut chain = AuditChain::new(CHAIN);
        for r in &records[..12] {
            chain.append(r.time_ms, r.event);
        }
        let mut resumed = AuditChain::resume(CHAIN, chain.len(), chain.head());
        let rest: Vec<_> = records[12..]
            .iter()
            .map(|r| resumed.append(r.time_ms, r.event))
            .collect();
        assert_eq!(rest, records[12..]);
        assert_eq!(resumed.len(), 20);
        assert!(!resumed.is_empty());
        assert_eq!(resumed.head(), records[19].hash());
        assert_eq!(resumed.chain_id(), CHAIN);
        assert!(AuditChain::new(CHAIN).is_empty());
        assert_eq!(AuditChain::new(CHAIN).head(), genesis_hash(&CHAIN));
    }

    #[test]
    fn checkpoint_signature_covers_every_field() {
        let (_, checkpoints) = chain_with(3, &[3]);
        let good = checkpoints[0];
        let public = key(1).verifying_key();
        assert!(good.verify(&public));
        let mut c = good;
        c.count += 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.time_ms += 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.head_hash[0] ^= 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.chain_id[0] ^= 1;
        assert!(!c.verify(&public));
        assert!(!good.verify(&key(2).verifying_key()));
    }

    // ---- verification: untouched logs ----

    #[test]
    fn ten_thousand_untouched_records_verify() {
        let at: Vec<u64> = (0..=10).map(|k| k * 1000).collect();
        let (records, checkpoints) = chain_with(10_000, &at);
        let report = check(&records, &checkpoints).unwrap();
        assert_eq!(
            report,
            AuditReport {
                records: 10_000,
                checkpoints: 11,
                head_hash: records[9_999].hash(),
                unsigned_tail: 0,
            }
        );

        // The same log as a stream of encoded records, every checkpoint pushed up front.
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        for c in checkpoints.iter().rev() {
            v.push_checkpoint(c).unwrap();
        }
        for r in &records {
            v.push_encoded_record(&r.to_bytes()).unwrap();
        }
        assert_eq!(v.finish(), Ok(report));
    }

    #[test]
    fn empty_and_unsigned_logs_verify_and_report_their_unsigned_tail() {
        assert_eq!(
            check(&[], &[]),
            Ok(AuditReport {
                records: 0,
                checkpoints: 0,
                head_hash: genesis_hash(&CHAIN),
                unsigned_tail: 0
            })
        );
        let (records, checkpoints) = chain_with(30, &[0, 10, 20]);
        let report = check(&records, &checkpoints).unwrap();
        assert_eq!(
            (report.records, report.checkpoints, report.unsigned_tail),
            (30, 3, 10)
        );
        let report = check(&records, &[]).unwrap();
        assert_eq!(report.unsigned_tail, 30);
    }

    #[test]
    fn checkpoints_may_come_in_any_order_and_more_than_once() {
        let (records, mut checkpoints) = chain_with(40, &[5, 17, 40]);
        checkpoints.reverse();
        checkpoints.push(checkpoints[1]);
        assert_eq!(check(&records, &checkpoints).unwrap().checkpoints, 4);
    }

    // ---- verification: checkpoint faults ----

    #[test]
    fn a_checkpoint_signed_by_another_key_fails() {
        let (records, _) = chain_with(10, &[]);
        let mut chain = AuditChain::resume(CHAIN, 10, records[9].hash());
        let forged = chain.checkpoint(&key(2), 5);
        assert_eq!(
            check(&records, &[forged]),
            Err(AuditFault::BadCheckpointSignature { count: 10 })
        );
        // The whole log re-signed under another key does not pass either.
        chain.append(
            6,
            AuditEvent::TranscriptShredded {
                transcript: TranscriptId([0; 16]),
            },
        );
        assert_eq!(
            verify(
                CHAIN,
                &key(2).verifying_key(),
                &records,
                &[chain.checkpoint(&key(1), 7)]
            ),
            Err(AuditFault::BadCheckpointSignature { count: 11 })
        );
    }

    #[test]
    fn another_chains_log_or_checkpoint_is_the_wrong_chain() {
        let (records, checkpoints) = chain_with(10, &[10]);
        let other = [0xa5; 16];
        let public = key(1).verifying_key();
        assert_eq!(
            verify(other, &public, &records, &[]),
            Err(AuditFault::WrongChain)
        );
        assert_eq!(
            verify(other, &public, &records[..0], &checkpoints),
            Err(AuditFault::WrongChain)
        );
        // A single foreign record with nothing after it is still attributed to the chain.
        assert_eq!(
            verify(other, &public, &records[..1], &[]),
            Err(AuditFault::WrongChain)
        );
    }

    #[test]
    fn a_consistently_rewritten_history_contradicts_its_checkpoint() {
        let (records, checkpoints) = chain_with(20, &[10]);
        // A writer re-creates the log from record 4 on with different events.
        let mut forger = AuditChain::resume(CHAIN, 4, records[3].hash());
        let mut rewritten = records[..4].to_vec();
        for r in &records[4..] {
            rewritten.push(forger.append(r.time_ms + 1, r.event));
        }
        assert_eq!(
            check(&rewritten, &checkpoints),
            Err(AuditFault::CheckpointMismatch { count: 10 })
        );
        // With nothing after the checkpoint's head, the rewrite looks like one changed record.
        assert_eq!(
            check(&rewritten[..10], &checkpoints),
            Err(AuditFault::Modified { sequence: 9 })
        );
    }

    #[test]
    fn two_signed_heads_for_one_count_are_a_fork() {
        let (records, checkpoints) = chain_with(10, &[5]);
        let fork = AuditCheckpoint::sign(&key(1), CHAIN, 5, [9; 32], 0);
        assert_eq!(
            check(&records, &[checkpoints[0], fork]),
            Err(AuditFault::CheckpointMismatch { count: 5 })
        );
        assert_eq!(
            check(&records, &[fork, checkpoints[0]]),
            Err(AuditFault::CheckpointMismatch { count: 5 })
        );
        let bad_genesis = AuditCheckpoint::sign(&key(1), CHAIN, 0, [9; 32], 0);
        assert_eq!(
            check(&records, &[bad_genesis]),
            Err(AuditFault::CheckpointMismatch { count: 0 })
        );
    }

    #[test]
    fn a_late_checkpoint_is_a_use_error_and_faults_stick() {
        let (records, checkpoints) = chain_with(10, &[3]);
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        for r in &records[..5] {
            v.push_record(r).unwrap();
        }
        let late = AuditFault::CheckpointOutOfOrder { count: 3 };
        assert_eq!(v.push_checkpoint(&checkpoints[0]), Err(late));
        assert_eq!(v.push_record(&records[5]), Err(late));
        assert_eq!(v.push_encoded_record(&[]), Err(late));
        assert_eq!(v.finish(), Err(late));
    }

    #[test]
    fn an_undecodable_record_is_located_by_position() {
        let (records, _) = chain_with(5, &[]);
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        v.push_encoded_record(&records[0].to_bytes()).unwrap();
        v.push_encoded_record(&records[1].to_bytes()).unwrap();
        let mut broken = records[2].to_bytes();
        broken.pop();
        assert!(matches!(
            v.push_encoded_record(&broken),
            Err(AuditFault::Malformed { position: 2, .. })
        ));
    }

    // ---- verification: located tampering, by hand ----

    #[test]
    fn each_kind_of_tampering_is_named_where_it_happened() {
        let (records, checkpoints) = chain_with(12, &[6, 12]);
        let run = |f: &dyn Fn(&mut Vec<AuditRecord>)| {
            let mut log = records.clone();
            f(&mut log);
            check(&log, &checkpoints)
        };
        assert_eq!(
            run(&|log| log[4].time_ms += 1),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[4].previous_hash[31] ^= 1),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[4].sequence = 9),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[11].event = AuditEvent::RateLimited { device: device(9) }),
            Err(AuditFault::Modified { sequence: 11 })
        );
        assert_eq!(
            run(&|log| {
                log.remove(4);
            }),
            Err(AuditFault::Removed { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.insert(8, log[3])),
            Err(AuditFault::Duplicated { sequence: 3 })
        );
        assert_eq!(
            run(&|log| log.swap(4, 5)),
            Err(AuditFault::Reordered { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.swap(2, 9)),
            Err(AuditFault::Reordered { sequence: 2 })
        );
        assert_eq!(
            run(&|log| {
                let mut forged = log[4];
                forged.event = AuditEvent::RateLimited { device: device(9) };
                log.insert(5, forged);
            }),
            Err(AuditFault::Inserted { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.truncate(9)),
            Err(AuditFault::Truncated {
                checkpoint_count: 12,
                records: 9
            })
        );
    }

    // ---- properties ----

    fn arb_device() -> impl Strategy<Value = DeviceRef> {
        (any::<[u8; 32]>(), any::<u32>()).prop_map(|(f, device_id)| DeviceRef {
            fingerprint: Fingerprint(f),
            device_id,
        })
    }

    fn arb_event() -> impl Strategy<Value = AuditEvent> {
        let d = arb_device;
        let id = any::<[u8; 16]>;
        let reason = prop_oneof![
            Just(AuthFailure::BadSignature),
            Just(AuthFailure::ExpiredChallenge),
            Just(AuthFailure::ReplayedChallenge),
            Just(AuthFailure::UnknownDevice),
            Just(AuthFailure::RegistrationRefused),
        ];
        prop_oneof![
            d().prop_map(|device| AuditEvent::DeviceRegistered { device }),
            d().prop_map(|device| AuditEvent::DeviceAuthenticated { device }),
            reason.prop_map(|reason| AuditEvent::AuthenticationFailed { reason }),
            d().prop_map(|device| AuditEvent::RateLimited { device }),
            (d(), any::<u32>(), any::<u32>()).prop_map(|(device, one_time, kem_one_time)| {
                AuditEvent::PreKeysUploaded {
                    device,
                    one_time,
                    kem_one_time,
                }
            }),
            (d(), d(), any::<u32>()).prop_map(|(requester, target, one_time_left)| {
                AuditEvent::BundleFetched {
                    requester,
                    target,
                    one_time_left,
                }
            }),
            (d(), d(), id(), any::<u32>()).prop_map(|(sender, recipient, e, size)| {
                AuditEvent::EnvelopeStored {
                    sender,
                    recipient,
                    envelope: EnvelopeId(e),
                    size,
                }
            }),
            (d(), id()).prop_map(|(recipient, e)| AuditEvent::EnvelopeDelivered {
                recipient,
                envelope: EnvelopeId(e)
            }),
            (d(), id()).prop_map(|(recipient, e)| AuditEvent::EnvelopeAcknowledged {
                recipient,
                envelope: EnvelopeId(e)
            }),
            (d(), any::<u32>())
                .prop_map(|(recipient, count)| AuditEvent::EnvelopesExpired { recipient, count }),
            (d(), d(), id()).prop_map(|(device, peer, c)| AuditEvent::SessionStarted {
                device,
                peer,
                conversation: ConversationId(c)
            }),
            (d(), d()).prop_map(|(device, peer)| AuditEvent::IdentityChanged { device, peer }),
            (d(), d()).prop_map(|(device, peer)| AuditEvent::ContactVerified { device, peer }),
            (d(), d(), any::<[u8; 16]>()).prop_map(|(device, peer, message_id)| {
                AuditEvent::MessageCancelled {
                    device,
                    peer,
                    message_id,
                }
            }),
            (d(), d(), any::<bool>()).prop_map(|(device, peer, requested_by_peer)| {
                AuditEvent::SessionReset {
                    device,
                    peer,
                    requested_by_peer,
                }
            }),
            d().prop_map(|device| AuditEvent::StoreUnlocked { device }),
            (id(), any::<u64>()).prop_map(|(t, records)| AuditEvent::TranscriptCheckpointed {
                transcript: TranscriptId(t),
                records
            }),
            (id(), any::<u64>(), any::<u8>()).prop_map(|(t, records, recipients)| {
                AuditEvent::TranscriptExported {
                    transcript: TranscriptId(t),
                    records,
                    recipients,
                }
            }),
            (id(), d()).prop_map(|(t, by)| AuditEvent::TranscriptOpened {
                transcript: TranscriptId(t),
                by
            }),
            id().prop_map(|t| AuditEvent::TranscriptShredded {
                transcript: TranscriptId(t)
            }),
        ]
    }

    fn arb_record() -> impl Strategy<Value = AuditRecord> {
        (any::<u64>(), any::<u64>(), arb_event(), any::<[u8; 32]>()).prop_map(
            |(sequence, time_ms, event, previous_hash)| AuditRecord {
                sequence,
                time_ms,
                event,
                previous_hash,
            },
        )
    }

    fn arb_checkpoint() -> impl Strategy<Value = AuditCheckpoint> {
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(chain_id, count, head_hash, time_ms, s1, s2)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&s1);
                signature[32..].copy_from_slice(&s2);
                AuditCheckpoint {
                    chain_id,
                    count,
                    head_hash,
                    time_ms,
                    signature,
                }
            })
    }

    /// A log of the given events with checkpoints at the counts in `extra` (all below the
    /// log's length) and, if `signed_end`, one over the whole log.
    fn signed_log(
        events: &[AuditEvent],
        extra: &[u64],
        signed_end: bool,
    ) -> (Vec<AuditRecord>, Vec<AuditCheckpoint>) {
        let n = events.len() as u64;
        let signer = key(1);
        let mut chain = AuditChain::new(CHAIN);
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let i = i as u64;
            if extra.contains(&i) {
                checkpoints.push(chain.checkpoint(&signer, i));
            }
            records.push(chain.append(i * 7, *event));
        }
        if signed_end {
            checkpoints.push(chain.checkpoint(&signer, n));
        }
        (records, checkpoints)
    }

    /// `(records, checkpoints, signed_end)`: mostly logs signed to the end; in one case of four
    /// the tail after the last checkpoint (perhaps the whole log) is unsigned.
    fn arb_log() -> impl Strategy<Value = (Vec<AuditRecord>, Vec<AuditCheckpoint>, bool)> {
        (
            prop::collection::vec(arb_event(), 1..40),
            prop::collection::vec(0u64..40, 0..6),
            prop::bool::weighted(0.75),
        )
            .prop_map(|(events, extra, signed_end)| {
                let (records, checkpoints) = signed_log(&events, &extra, signed_end);
                (records, checkpoints, signed_end)
            })
    }

    /// The largest count a checkpoint names (0 without checkpoints).
    fn signed_count(checkpoints: &[AuditCheckpoint]) -> u64 {
        checkpoints.iter().map(|c| c.count).max().unwrap_or(0)
    }

    proptest! {
        #[test]
        fn records_round_trip(record in arb_record()) {
            let bytes = record.to_bytes();
            prop_assert!(bytes.len() <= RECORD_HEADER_LEN + MAX_EVENT_LEN);
            prop_assert_eq!(AuditRecord::from_bytes(&bytes), Ok(record));
        }

        #[test]
        fn checkpoints_round_trip(checkpoint in arb_checkpoint()) {
            let bytes = checkpoint.to_bytes();
            prop_assert_eq!(bytes.len(), CHECKPOINT_LEN);
            prop_assert_eq!(AuditCheckpoint::from_bytes(&bytes), Ok(checkpoint));
        }

        /// Decoding is total, and whatever decodes re-encodes to exactly the input.
        #[test]
        fn decoding_is_total_and_canonical(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = AuditRecord::from_bytes(&bytes) {
                prop_assert_eq!(r.to_bytes(), bytes.clone());
            }
            if let Ok(c) = AuditCheckpoint::from_bytes(&bytes) {
                prop_assert_eq!(c.to_bytes(), bytes.clone());
            }
            if let Ok(e) = AuditEvent::from_bytes(&bytes) {
                prop_assert_eq!(e.to_bytes(), bytes);
            }
        }

        /// Random bytes rarely decode at all; start from valid encodings and damage them.
        #[test]
        fn damaged_encodings_decode_canonically_or_not_at_all(
            record in arb_record(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<bool>(),
        ) {
            let mut bytes = record.to_bytes();
            if cut {
                bytes.truncate(at.index(bytes.len()));
            } else {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
            if let Ok(r) = AuditRecord::from_bytes(&bytes) {
                prop_assert_eq!(r.to_bytes(), bytes);
            }
        }

        /// Any one byte of any record changed: located at that record.
        #[test]
        fn a_changed_byte_is_located((records, checkpoints, signed_end) in arb_log(),
                                     which in any::<prop::sample::Index>(),
                                     at in any::<prop::sample::Index>(),
                                     xor in 1u8..) {
            // The last record's content is unprotected when nothing signs it (documented).
            let n = records.len() - usize::from(!signed_end);
            if n == 0 {
                return Ok(());
            }
            let k = which.index(n);
            let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
            let mut due: Vec<_> = checkpoints.clone();
            due.sort_by_key(|c| c.count);
            let mut due = due.into_iter().peekable();
            let mut result = Ok(());
            for (i, r) in records.iter().enumerate() {
                while let Some(c) = due.next_if(|c| c.count <= i as u64) {
                    result = result.and(v.push_checkpoint(&c));
                }
                let mut bytes = r.to_bytes();
                if i == k {
                    let j = at.index(bytes.len());
                    bytes[j] ^= xor;
                }
                result = result.and(v.push_encoded_record(&bytes));
            }
            for c in due {
                result = result.and(v.push_checkpoint(&c));
            }
            let outcome = result.and_then(|()| v.finish().map(|_| ()));
            let mut bytes = records[k].to_bytes();
            let j = at.index(bytes.len());
            bytes[j] ^= xor;
            match AuditRecord::from_bytes(&bytes) {
                Err(error) => prop_assert_eq!(
                    outcome,
                    Err(AuditFault::Malformed { position: k as u64, error })
                ),
                Ok(_) => prop_assert_eq!(outcome, Err(AuditFault::Modified { sequence: k as u64 })),
            }
        }

        #[test]
        fn a_dropped_record_is_located((records, checkpoints, signed_end) in arb_log(),
                                       which in any::<prop::sample::Index>()) {
            let n = records.len() as u64;
            let i = which.index(records.len());
            let mut log = records.clone();
            log.remove(i);
            let outcome = check(&log, &checkpoints);
            if i as u64 == n - 1 {
                // Dropping the last record is truncation: seen only if a checkpoint covers it.
                if signed_end {
                    let truncated = AuditFault::Truncated { checkpoint_count: n, records: n - 1 };
                    prop_assert_eq!(outcome, Err(truncated));
                } else {
                    prop_assert_eq!(outcome.map(|r| r.records), Ok(n - 1));
                }
            } else {
                prop_assert_eq!(outcome, Err(AuditFault::Removed { sequence: i as u64 }));
            }
        }

        #[test]
        fn a_duplicated_record_is_located((records, checkpoints, _) in arb_log(),
                                          which in any::<prop::sample::Index>(),
                                          to in any::<prop::sample::Index>()) {
            let i = which.index(records.len());
            let p = to.index(records.len() + 1);
            let mut log = records.clone();
            log.insert(p, records[i]);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Duplicated { sequence: i as u64 })
            );
        }

        #[test]
        fn swapped_records_are_located((records, checkpoints, _) in arb_log(),
                                       a in any::<prop::sample::Index>(),
                                       b in any::<prop::sample::Index>()) {
            let n = records.len();
            if n < 2 {
                return Ok(());
            }
            let i = a.index(n);
            let j = (i + 1 + b.index(n - 1)) % n;
            let mut log = records.clone();
            log.swap(i, j);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Reordered { sequence: i.min(j) as u64 })
            );
        }

        #[test]
        fn a_moved_record_is_located((records, checkpoints, _) in arb_log(),
                                     from in any::<prop::sample::Index>(),
                                     to in any::<prop::sample::Index>()) {
            let n = records.len();
            if n < 2 {
                return Ok(());
            }
            let i = from.index(n);
            let p = (i + 1 + to.index(n - 1)) % n;
            let mut log = records.clone();
            let moved = log.remove(i);
            log.insert(p, moved);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Reordered { sequence: i.min(p) as u64 })
            );
        }

        /// A forged record, claiming any sequence number and linking either where it stands or
        /// nowhere, inserted anywhere but after the last record (where it is an unsigned
        /// append, or a Modified record when a checkpoint covers its predecessor).
        #[test]
        fn an_inserted_record_is_located((records, checkpoints, _) in arb_log(),
                                         to in any::<prop::sample::Index>(),
                                         claim in 0u64..48,
                                         links in any::<bool>(),
                                         junk in any::<[u8; 32]>(),
                                         time_ms in any::<u64>(),
                                         event in arb_event()) {
            let p = to.index(records.len());
            let previous_hash = if links {
                if p == 0 { genesis_hash(&CHAIN) } else { records[p - 1].hash() }
            } else {
                junk
            };
            let forged = AuditRecord { sequence: claim, time_ms, event, previous_hash };
            prop_assume!(records.get(claim as usize) != Some(&forged));
            let mut log = records.clone();
            log.insert(p, forged);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Inserted { sequence: claim })
            );
        }

        /// Truncation is detected exactly when it cuts behind a checkpoint.
        #[test]
        fn truncation_behind_a_checkpoint_is_detected((records, checkpoints, _) in arb_log(),
                                                      keep in any::<prop::sample::Index>()) {
            let m = keep.index(records.len()) as u64;
            let signed = signed_count(&checkpoints);
            let outcome = check(&records[..m as usize], &checkpoints);
            if m < signed {
                let truncated = AuditFault::Truncated { checkpoint_count: signed, records: m };
                prop_assert_eq!(outcome, Err(truncated));
            } else {
                // Cut inside the unsigned tail: undetectable, and the report says how much of
                // what is left nothing signs.
                prop_assert_eq!(outcome.map(|r| r.unsigned_tail), Ok(m - signed));
            }
        }

        #[test]
        fn untouched_logs_verify((records, checkpoints, signed_end) in arb_log()) {
            let report = check(&records, &checkpoints).unwrap();
            let n = records.len() as u64;
            prop_assert_eq!(report.records, n);
            prop_assert_eq!(report.checkpoints, checkpoints.len() as u64);
            prop_assert_eq!(report.unsigned_tail, n - signed_count(&checkpoints));
            prop_assert_eq!(signed_end, report.unsigned_tail == 0);
        }
    }
}
