//! Membership changes (`docs/conversations.md` §4): one signed, hash-chained step of a
//! conversation's membership history: who added or removed which devices of which identity, in
//! which role, at which epoch, after which previous change.

use core::fmt;

use sha2::{Digest, Sha256};

use super::{CONVERSATION_VERSION, MAX_CHANGE_DEVICES, MEMBERSHIP_CHANGE_TYPE};
use crate::audit::ConversationId;
use crate::clinic::{AgentCertificate, OrgKey};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::{IdentityKey, SIGNATURE_LEN};
use crate::labels;
use crate::signer::Signer;

/// Largest encoded membership change, in bytes: header 2, conversation 16, epoch 8, previous
/// hash 32, issued at 8, action 1, role 1, member 128, count 1, 16 device ids 64, two
/// certificate flags and two certificates of at most 316 bytes, signer 128, signer device 4,
/// signature 64.
pub const MAX_CHANGE_LEN: usize =
    2 + 16 + 8 + 32 + 8 + 1 + 1 + 128 + 1 + 4 * MAX_CHANGE_DEVICES + 2 * (1 + 316) + 128 + 4 + 64;

/// The role a member holds in one conversation (`conversations.md` §4.1), one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// `0x01`: the patient whose conversation it is (the identity that opened it).
    Patient,
    /// `0x02`: a clinic agent answering the patient (needs a certificate with the agent role).
    Agent,
    /// `0x03`: a supervisor reading along, read-only (needs the supervisor role).
    Supervisor,
}

impl MemberRole {
    /// The role's byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Patient => 0x01,
            Self::Agent => 0x02,
            Self::Supervisor => 0x03,
        }
    }

    /// From its byte; other values are refused (`InvalidValue { field: "member role" }`).
    pub fn from_u8(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::Patient),
            0x02 => Ok(Self::Agent),
            0x03 => Ok(Self::Supervisor),
            _ => Err(DecodeError::InvalidValue {
                field: "member role",
            }),
        }
    }

    /// Whether a member in this role may send messages and sign changes other than its own
    /// departure (a supervisor may not).
    pub const fn can_write(self) -> bool {
        !matches!(self, Self::Supervisor)
    }

    /// Whether this is a clinic role (agent or supervisor), whose holder must present a
    /// certificate of the conversation's clinic.
    pub const fn is_staff(self) -> bool {
        !matches!(self, Self::Patient)
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Patient => "patient",
            Self::Agent => "agent",
            Self::Supervisor => "supervisor (read-only)",
        })
    }
}

/// What a change does, one byte: `0x01` add, `0x02` remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeAction {
    /// Adds devices of one identity.
    Add,
    /// Removes devices of one identity.
    Remove,
}

impl ChangeAction {
    /// The action's byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Add => 0x01,
            Self::Remove => 0x02,
        }
    }

    /// From its byte; other values are refused (`InvalidValue { field: "change action" }`).
    pub fn from_u8(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::Add),
            0x02 => Ok(Self::Remove),
            _ => Err(DecodeError::InvalidValue {
                field: "change action",
            }),
        }
    }
}

/// What a change says, before it is signed (`conversations.md` §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeProposal {
    /// The conversation.
    pub conversation: ConversationId,
    /// The change's epoch: 0 for the change that opens the conversation, then one more each.
    pub epoch: u64,
    /// The previous change's hash ([`MembershipChange::hash`]), or the conversation's genesis
    /// hash ([`genesis_hash`]) at epoch 0.
    pub previous_hash: [u8; 32],
    /// When the signer made it (Unix seconds, signer's clock).
    pub issued_at: u64,
    /// Add or remove.
    pub action: ChangeAction,
    /// The role the devices hold (or held) in the conversation.
    pub role: MemberRole,
    /// The identity whose devices are added or removed.
    pub member: IdentityKey,
    /// The devices (any order, duplicates merged; 1 to [`MAX_CHANGE_DEVICES`]).
    pub devices: Vec<u32>,
    /// For an added agent or supervisor: its certificate of the clinic. `None` otherwise.
    pub member_certificate: Option<AgentCertificate>,
}

/// A signed membership change (`conversations.md` §4.2):
///
/// `version[1]=1 ‖ type[1]=0x70 ‖ conversation_id[16] ‖ epoch[8] ‖ previous_hash[32] ‖
/// issued_at[8] ‖ action[1] ‖ role[1] ‖ member[128] ‖ count[1] ‖ device_id[4] × count ‖
/// has_member_certificate[1] ‖ member_certificate? ‖ signer[128] ‖ signer_device_id[4] ‖
/// has_signer_certificate[1] ‖ signer_certificate? ‖ signature[64]`, the signature the signer
/// identity's over `SIG_MEMBERSHIP_CHANGE ‖` every byte before it. At most
/// [`MAX_CHANGE_LEN`] bytes.
///
/// Decoding checks the form: known action and role, 1 to 16 strictly increasing device ids, a
/// member certificate present exactly when an agent or supervisor is added, valid identities
/// and certificates. Whether the change may follow a given history is
/// [`super::MembershipLog::apply`]'s question.
#[derive(Clone, PartialEq, Eq)]
pub struct MembershipChange {
    conversation: ConversationId,
    epoch: u64,
    previous_hash: [u8; 32],
    issued_at: u64,
    action: ChangeAction,
    role: MemberRole,
    member: IdentityKey,
    devices: Vec<u32>,
    member_certificate: Option<Box<AgentCertificate>>,
    signer: IdentityKey,
    signer_device: u32,
    signer_certificate: Option<Box<AgentCertificate>>,
    signature: [u8; SIGNATURE_LEN],
}

/// `SHA-256(MEMBERSHIP_GENESIS ‖ conversation_id ‖ org_key)`: the `previous_hash` of a
/// conversation's first change. It binds the history to one conversation of one clinic.
pub fn genesis_hash(conversation: &ConversationId, org: &OrgKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::MEMBERSHIP_GENESIS);
    h.update(conversation.0);
    h.update(org.to_bytes());
    h.finalize().into()
}

impl MembershipChange {
    /// Signs `proposal` as the device `signer_device` of the identity `signer_identity`, whose
    /// signing key `signer` holds; staff present their certificate (`signer_certificate`).
    ///
    /// # Errors
    /// The form rules of decoding: `InvalidValue` for no device or a member certificate present
    /// when it must be absent (or absent when it must be present); `TooLong` beyond
    /// [`MAX_CHANGE_DEVICES`] devices.
    pub fn sign<S: Signer + ?Sized>(
        proposal: ChangeProposal,
        signer: &S,
        signer_identity: IdentityKey,
        signer_device: u32,
        signer_certificate: Option<AgentCertificate>,
    ) -> Result<Self, DecodeError> {
        let mut devices = proposal.devices;
        devices.sort_unstable();
        devices.dedup();
        check_device_count(devices.len())?;
        check_member_certificate(
            proposal.action,
            proposal.role,
            proposal.member_certificate.is_some(),
        )?;
        let mut change = Self {
            conversation: proposal.conversation,
            epoch: proposal.epoch,
            previous_hash: proposal.previous_hash,
            issued_at: proposal.issued_at,
            action: proposal.action,
            role: proposal.role,
            member: proposal.member,
            devices,
            member_certificate: proposal.member_certificate.map(Box::new),
            signer: signer_identity,
            signer_device,
            signer_certificate: signer_certificate.map(Box::new),
            signature: [0; SIGNATURE_LEN],
        };
        change.signature = signer.sign(labels::SIG_MEMBERSHIP_CHANGE, &change.signed_part());
        Ok(change)
    }

    /// Whether the signature verifies under [`MembershipChange::signer`] (strict Ed25519).
    pub fn verify_signature(&self) -> bool {
        self.signer.verify(
            labels::SIG_MEMBERSHIP_CHANGE,
            &self.signed_part(),
            &self.signature,
        )
    }

    /// `SHA-256(MEMBERSHIP_CHANGE_HASH ‖ encoding)`, signature included: what the next change
    /// names as its `previous_hash`.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::MEMBERSHIP_CHANGE_HASH);
        h.update(self.to_bytes());
        h.finalize().into()
    }

    /// The conversation.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }
    /// The epoch (0 for the opening change).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The hash of the change before it (or the genesis hash).
    pub fn previous_hash(&self) -> &[u8; 32] {
        &self.previous_hash
    }
    /// When it was signed (Unix seconds).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Add or remove.
    pub fn action(&self) -> ChangeAction {
        self.action
    }
    /// The role concerned.
    pub fn role(&self) -> MemberRole {
        self.role
    }
    /// The identity whose devices are added or removed.
    pub fn member(&self) -> &IdentityKey {
        &self.member
    }
    /// The devices, ascending.
    pub fn devices(&self) -> &[u32] {
        &self.devices
    }
    /// The added staff member's certificate.
    pub fn member_certificate(&self) -> Option<&AgentCertificate> {
        self.member_certificate.as_deref()
    }
    /// The identity that signed.
    pub fn signer(&self) -> &IdentityKey {
        &self.signer
    }
    /// The signing device's number.
    pub fn signer_device(&self) -> u32 {
        self.signer_device
    }
    /// The signer's certificate, if the signer is staff.
    pub fn signer_certificate(&self) -> Option<&AgentCertificate> {
        self.signer_certificate.as_deref()
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_CHANGE_LEN);
        out.push(CONVERSATION_VERSION);
        out.push(MEMBERSHIP_CHANGE_TYPE);
        out.extend_from_slice(&self.conversation.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.previous_hash);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.push(self.action.to_u8());
        out.push(self.role.to_u8());
        self.member.encode(&mut out);
        // 1 to MAX_CHANGE_DEVICES (< 256): `sign` and `read` enforce it.
        out.push(u8::try_from(self.devices.len()).unwrap_or(u8::MAX));
        for id in &self.devices {
            out.extend_from_slice(&id.to_be_bytes());
        }
        put_certificate(&mut out, self.member_certificate.as_deref());
        self.signer.encode(&mut out);
        out.extend_from_slice(&self.signer_device.to_be_bytes());
        put_certificate(&mut out, self.signer_certificate.as_deref());
        out
    }
}

fn put_certificate(out: &mut Vec<u8>, certificate: Option<&AgentCertificate>) {
    match certificate {
        Some(c) => {
            out.push(1);
            c.encode(out);
        }
        None => out.push(0),
    }
}

fn read_certificate(
    r: &mut Reader<'_>,
    flag: &'static str,
) -> Result<Option<Box<AgentCertificate>>, DecodeError> {
    if r.flag(flag)? {
        Ok(Some(Box::new(AgentCertificate::read(r)?)))
    } else {
        Ok(None)
    }
}

fn check_device_count(count: usize) -> Result<(), DecodeError> {
    if count == 0 {
        return Err(DecodeError::InvalidValue {
            field: "change devices (empty)",
        });
    }
    if count > MAX_CHANGE_DEVICES {
        return Err(DecodeError::TooLong {
            field: "change devices",
            len: count,
            max: MAX_CHANGE_DEVICES,
        });
    }
    Ok(())
}

/// A member certificate travels exactly when an agent or supervisor is added.
fn check_member_certificate(
    action: ChangeAction,
    role: MemberRole,
    present: bool,
) -> Result<(), DecodeError> {
    if present == (action == ChangeAction::Add && role.is_staff()) {
        Ok(())
    } else {
        Err(DecodeError::InvalidValue {
            field: "member certificate (present exactly when staff is added)",
        })
    }
}

impl Codec for MembershipChange {
    const NAME: &'static str = "membership change";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        crate::codec::read_versioned_header(
            r,
            CONVERSATION_VERSION,
            MEMBERSHIP_CHANGE_TYPE,
            Self::NAME,
        )?;
        let conversation = ConversationId::read(r)?;
        let epoch = r.u64("epoch")?;
        let previous_hash = r.array("previous hash")?;
        let issued_at = r.u64("issued at")?;
        let action = ChangeAction::from_u8(r.u8("change action")?)?;
        let role = MemberRole::from_u8(r.u8("member role")?)?;
        let member = IdentityKey::read(r)?;
        let count = usize::from(r.u8("change device count")?);
        check_device_count(count)?;
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.u32("device id")?;
            if devices.last().is_some_and(|last| id <= *last) {
                return Err(DecodeError::InvalidValue {
                    field: "change devices (must be strictly increasing)",
                });
            }
            devices.push(id);
        }
        let member_certificate = read_certificate(r, "has member certificate")?;
        check_member_certificate(action, role, member_certificate.is_some())?;
        let signer = IdentityKey::read(r)?;
        let signer_device = r.u32("signer device id")?;
        let signer_certificate = read_certificate(r, "has signer certificate")?;
        Ok(Self {
            conversation,
            epoch,
            previous_hash,
            issued_at,
            action,
            role,
            member,
            devices,
            member_certificate,
            signer,
            signer_device,
            signer_certificate,
            signature: r.array("membership change signature")?,
        })
    }
}

impl fmt::Debug for MembershipChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipChange")
            .field("conversation", &self.conversation)
            .field("epoch", &self.epoch)
            .field("issued_at", &self.issued_at)
            .field("action", &self.action)
            .field("role", &self.role)
            .field("member", &self.member.fingerprint())
            .field("devices", &self.devices)
            .field("signer", &self.signer.fingerprint())
            .field("signer_device", &self.signer_device)
            .finish_non_exhaustive()
    }
}
