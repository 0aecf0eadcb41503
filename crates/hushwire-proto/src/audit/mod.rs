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

mod chain;
mod checkpoint;
mod event;
mod record;
#[cfg(test)]
mod test_support;
mod verify;

pub use chain::AuditChain;
pub use checkpoint::AuditCheckpoint;
pub use event::{AuditEvent, AuthFailure, ConversationId, DeviceRef, EnvelopeId, TranscriptId};
pub use record::{AuditRecord, genesis_hash};
pub use verify::{AuditFault, AuditReport, AuditVerifier, verify};

/// Wire type byte of an [`AuditRecord`].
pub const RECORD_TYPE: u8 = 0x40;
/// Wire type byte of an [`AuditCheckpoint`].
pub const CHECKPOINT_TYPE: u8 = 0x41;
/// Length of an encoded [`AuditCheckpoint`]: `2 + 16 + 8 + 32 + 8 + 64`.
pub const CHECKPOINT_LEN: usize = 130;
/// Length of an encoded [`AuditRecord`] before its event: `version ‖ type ‖ sequence ‖ time_ms ‖
/// previous_hash`.
pub const RECORD_HEADER_LEN: usize = 50;
/// Length of the longest encoded [`AuditEvent`] (`MembershipChanged`).
pub const MAX_EVENT_LEN: usize = 95;

/// How many of the most recent record hashes an [`AuditVerifier`] keeps, to tell a byte-identical
/// copy of an earlier record ([`AuditFault::Duplicated`]) from a different record that reuses
/// its sequence number ([`AuditFault::Inserted`]). 1024 × 40 bytes.
pub const DUPLICATE_WINDOW: u64 = 1024;
/// How many checkpoints an [`AuditVerifier`] holds while they wait for the records they cover.
pub const MAX_PENDING_CHECKPOINTS: usize = 65_536;
