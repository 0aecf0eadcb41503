//! Contacts: a name the user chose, the address that pins the identity, and what the user has
//! verified. Stored sealed; found by a blind index of the address.

use hushwire::proto::codec::Codec as _;
use hushwire::proto::{Fingerprint, IdentityKey};
use serde::{Deserialize, Serialize};

use crate::address::Address;

/// A contact's id in this store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContactId(pub i64);

impl core::fmt::Display for ContactId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The sealed part of a contact row.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ContactRecord {
    pub name: String,
    pub fingerprint: [u8; 32],
    pub device_id: u32,
    /// The full identity key, once a bundle or a message revealed it (its fingerprint matched).
    pub identity: Option<Vec<u8>>,
    /// The user compared safety numbers and confirmed them.
    pub verified: bool,
    /// The identity changed since the user last verified: sending is blocked.
    pub identity_changed: bool,
    pub added_at_ms: u64,
}

impl ContactRecord {
    pub(crate) fn address(&self) -> Address {
        Address {
            fingerprint: Fingerprint(self.fingerprint),
            device_id: self.device_id,
        }
    }

    pub(crate) fn identity_key(&self) -> Option<IdentityKey> {
        self.identity
            .as_deref()
            .and_then(|b| IdentityKey::from_bytes(b).ok())
    }
}

/// What the app sees of a contact. `Debug` leaves the name out: a patient's name is PHI and
/// `Debug` output ends up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Contact {
    /// Its id.
    pub id: ContactId,
    /// The name the user gave it.
    pub name: String,
    /// Its address.
    pub address: Address,
    /// The user confirmed the safety number.
    pub verified: bool,
    /// The identity key changed since the last verification; sending is blocked.
    pub identity_changed: bool,
    /// Its identity key is known (a session exists or existed).
    pub identity_known: bool,
    /// Whether it is a verified agent of the pinned clinic (`docs/client.md` §8).
    pub agent: crate::client::AgentStatus,
}

impl core::fmt::Debug for Contact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Contact")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("verified", &self.verified)
            .field("identity_changed", &self.identity_changed)
            .field(
                "agent",
                &matches!(self.agent, crate::client::AgentStatus::Verified { .. }),
            )
            .finish_non_exhaustive()
    }
}

impl Contact {
    pub(crate) fn from_record(id: i64, r: &ContactRecord) -> Self {
        Self {
            id: ContactId(id),
            name: r.name.clone(),
            address: r.address(),
            verified: r.verified,
            identity_changed: r.identity_changed,
            identity_known: r.identity.is_some(),
            agent: crate::client::AgentStatus::Unchecked,
        }
    }
}
