//! Clinic conversations (`docs/conversations.md`): conversations with several members, their
//! signed and hash-chained **membership history**, the relay frames of the clinic's **queue**,
//! and the clinic's **archive policy** and archive envelopes.
//!
//! Like [`crate::clinic`], everything here is public data with signature checks and nothing
//! that decrypts: the relay (which routes by membership and arbitrates claims) and every client
//! (which refuses a change nobody was entitled to make) run the same checks. Structures start
//! with `CONVERSATION_VERSION ‖ type` and have one canonical encoding; times are Unix seconds.
//!
//! - [`MembershipChange`]: one signed step of the history (§4.2), and [`MembershipLog`], which
//!   applies steps in order and names the rule a refused one breaks ([`MembershipError`], §4.3).
//! - [`queue`]: the bodies of the queue frames (§5): open, on duty, queue listing, claim,
//!   hand-off, membership fetch and push, and their error codes.
//! - [`ArchivePolicy`], [`ArchiveEnvelope`]: the clinic's archive key and retention, and the
//!   layout of a message sealed to it (§7). Sealing and opening are the core's (not built yet).
//!
//! Conversation ids are [`ConversationId`]: 16 random bytes the patient's device chooses (§3).

mod archive;
mod log;
mod membership;
pub mod queue;

pub use crate::audit::ConversationId;
pub use archive::{
    ARCHIVE_ENVELOPE_HEADER_LEN, ARCHIVE_POLICY_LEN, ArchiveEnvelope, ArchivePolicy,
    MAX_ARCHIVE_CIPHERTEXT_LEN,
};
pub use log::{Member, MembershipContext, MembershipError, MembershipLog};
pub use membership::{
    ChangeAction, ChangeProposal, MAX_CHANGE_LEN, MemberRole, MembershipChange, genesis_hash,
};

/// The version byte of every conversation structure.
pub const CONVERSATION_VERSION: u8 = 1;

/// Wire type byte of a [`MembershipChange`].
pub const MEMBERSHIP_CHANGE_TYPE: u8 = 0x70;
/// Wire type byte of an [`ArchivePolicy`].
pub const ARCHIVE_POLICY_TYPE: u8 = 0x71;
/// Wire type byte of an [`ArchiveEnvelope`].
pub const ARCHIVE_ENVELOPE_TYPE: u8 = 0x72;

/// Most devices in one conversation (all members together): pairwise fan-out is specified up
/// to this size (`conversations.md` §2).
pub const MAX_CONVERSATION_DEVICES: usize = 32;
/// Most devices one change adds or removes (one identity's, as its device list allows).
pub const MAX_CHANGE_DEVICES: usize = crate::clinic::MAX_DEVICES;
/// How far ahead of the verifier's clock a change may be issued, in seconds (as for wipe
/// commands, `clinic.md` §6).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

#[cfg(test)]
mod tests;
