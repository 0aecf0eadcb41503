//! # hushwire-proto
//!
//! What Hushwire clients and the relay share, with **no decryption in it**: the explicit wire
//! codec, public keys, prekeys and bundles with their signature checks, safety numbers, and the
//! tamper-evident audit chain of metadata events that the relay and clients keep.
//! The relay depends on this crate and never on the `hushwire` core, so the relay binary cannot
//! contain code that decrypts a message.
//!
//! Every decoder here is bounded and total: untrusted bytes yield a value or a [`DecodeError`].
//! The byte layouts are in `docs/wire-format.md`.

#![forbid(unsafe_code)]

pub mod audit;
pub mod bundle;
pub mod clinic;
pub mod codec;
pub mod conversation;
pub mod keys;
pub mod labels;
pub mod relay;
pub mod safety;
pub mod signer;

pub use audit::{
    AuditChain, AuditCheckpoint, AuditEvent, AuditFault, AuditRecord, AuditReport, AuditVerifier,
    AuthFailure, ConversationId, DeviceRef, EnvelopeId, TranscriptId,
};
pub use bundle::{
    BundleError, KemPreKey, KemPreKeyKind, KemPublicKey, OneTimePreKey, PreKeyBundle, SignedPreKey,
};
pub use codec::{Codec, DecodeError, Reader};
pub use keys::{Fingerprint, IdentityKey, X25519PublicKey};
pub use safety::SafetyNumber;
pub use signer::Signer;
