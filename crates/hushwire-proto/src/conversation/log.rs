//! Verifying a conversation's membership history (`docs/conversations.md` §4.3): every client
//! (and the relay, for routing) applies each change in order and refuses the first one that
//! breaks a rule, naming the rule.

use core::fmt;

use super::membership::{ChangeAction, MemberRole, MembershipChange, genesis_hash};
use super::{MAX_CLOCK_SKEW_SECS, MAX_CONVERSATION_DEVICES};
use crate::audit::ConversationId;
use crate::clinic::{
    AgentCertificate, CertificateError, DeviceList, DeviceListError, OrgKey, RevocationList, Role,
};
use crate::keys::{Fingerprint, IdentityKey};

/// What a change is checked against besides the history (`conversations.md` §4.3).
#[derive(Clone, Copy, Debug)]
pub struct MembershipContext<'a> {
    /// The verifier's current revocation list of the clinic, already verified under the clinic's
    /// key (`RevocationList::verify`), if it holds one. A certificate it names is refused for
    /// every change issued at or after the list's `issued_at`.
    pub revocations: Option<&'a RevocationList>,
    /// The patient's current device list (signed by the patient's identity): a device the
    /// patient adds must be on it (rule 14). Give it when a change is made (the relay accepting
    /// it, a client checking its own before sending); `None` when replaying a history received,
    /// whose changes were checked against the list in force when they were made
    /// (`conversations.md` §4.3).
    pub patient_devices: Option<&'a DeviceList>,
    /// The verifier's clock (Unix seconds): a change issued more than
    /// [`MAX_CLOCK_SKEW_SECS`] after it is refused.
    pub now: u64,
}

/// Why a membership change was refused: the first rule of `conversations.md` §4.3 it breaks,
/// checked in the order of the variants below. A refused change changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Rule 1: the change belongs to another conversation.
    WrongConversation,
    /// Rule 2: the epoch is not the next one; it is one already used (a replay or a rollback).
    EpochRollback {
        /// The epoch the next change must carry.
        expected: u64,
        /// The epoch it carried.
        found: u64,
    },
    /// Rule 2: the epoch is beyond the next one (changes are missing in between).
    EpochGap {
        /// The epoch the next change must carry.
        expected: u64,
        /// The epoch it carried.
        found: u64,
    },
    /// Rule 3: `previous_hash` is not the hash of the last change (or the genesis hash).
    WrongPreviousHash,
    /// Rule 4: issued before the previous change (Unix seconds).
    TimeWentBackwards {
        /// The previous change's time.
        previous: u64,
        /// This change's time.
        issued_at: u64,
    },
    /// Rule 4: issued more than [`MAX_CLOCK_SKEW_SECS`] after the verifier's clock.
    FromTheFuture {
        /// This change's time.
        issued_at: u64,
    },
    /// Rule 5: the signature does not verify under the signer's identity.
    BadSignature,
    /// Rule 6: the signer's certificate is not accepted for the clinic at `issued_at`
    /// (another clinic, forged, expired, not yet valid, revoked, or another identity's).
    SignerCertificate(CertificateError),
    /// Rule 7: the added staff member's certificate is not accepted, or lacks the role
    /// (`agent` to join as agent, `supervisor` to join read-only).
    MemberCertificate(CertificateError),
    /// Rule 8: the first change is not the patient adding its own devices (role patient,
    /// signed by one of them, without a certificate).
    NotOpenedByPatient,
    /// Rule 9: the signing device was a member and has been removed.
    SignerRemoved {
        /// The removed device.
        device_id: u32,
    },
    /// Rule 9: the signing device is not a member, and the change is not a staff member
    /// joining by itself.
    SignerNotMember,
    /// Rule 9: an agent joins by itself (a claim) while another agent is on the conversation
    /// whose certificate the verifier's revocation list does not name (a takeover needs every
    /// agent on it revoked).
    ClaimWhileClaimed,
    /// Rule 10: a staff member signs without presenting its certificate, or the patient
    /// presents one.
    SignerCertificatePresence,
    /// Rule 11: a read-only supervisor signs anything but its own departure.
    ReadOnlySigner,
    /// Rule 12: the patient adds devices of another identity, or in another role.
    PatientAddsStranger,
    /// Rule 12: the patient removes a staff member (the patient can only leave).
    PatientRemovesStaff,
    /// Rule 13: staff adds a patient device (only the patient adds its devices).
    StaffAddsPatientDevice,
    /// Rule 13: staff removes a patient device.
    StaffRemovesPatient,
    /// Rule 14: the patient's device list (given in the context) does not verify for the
    /// patient.
    PatientDeviceList(DeviceListError),
    /// Rule 14: a patient device added is not on the patient's device list.
    DeviceNotListed {
        /// The device.
        device_id: u32,
    },
    /// Rule 15: the identity is in the conversation in another role.
    RoleMismatch,
    /// Rule 15: a device added is already a member.
    AlreadyMember {
        /// The device.
        device_id: u32,
    },
    /// Rule 15: a device removed is not a member.
    NotAMember {
        /// The device.
        device_id: u32,
    },
    /// Rule 15: the conversation would hold more than [`MAX_CONVERSATION_DEVICES`] devices.
    TooManyDevices {
        /// How many it would hold.
        count: usize,
    },
}

impl MembershipError {
    /// The rule's short name, as `docs/conversations.md` §4.3 and the vectors spell it.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::WrongConversation => "WrongConversation",
            Self::EpochRollback { .. } => "EpochRollback",
            Self::EpochGap { .. } => "EpochGap",
            Self::WrongPreviousHash => "WrongPreviousHash",
            Self::TimeWentBackwards { .. } => "TimeWentBackwards",
            Self::FromTheFuture { .. } => "FromTheFuture",
            Self::BadSignature => "BadSignature",
            Self::SignerCertificate(_) => "SignerCertificate",
            Self::MemberCertificate(_) => "MemberCertificate",
            Self::NotOpenedByPatient => "NotOpenedByPatient",
            Self::SignerRemoved { .. } => "SignerRemoved",
            Self::SignerNotMember => "SignerNotMember",
            Self::ClaimWhileClaimed => "ClaimWhileClaimed",
            Self::SignerCertificatePresence => "SignerCertificatePresence",
            Self::ReadOnlySigner => "ReadOnlySigner",
            Self::PatientAddsStranger => "PatientAddsStranger",
            Self::PatientRemovesStaff => "PatientRemovesStaff",
            Self::StaffAddsPatientDevice => "StaffAddsPatientDevice",
            Self::StaffRemovesPatient => "StaffRemovesPatient",
            Self::PatientDeviceList(_) => "PatientDeviceList",
            Self::DeviceNotListed { .. } => "DeviceNotListed",
            Self::RoleMismatch => "RoleMismatch",
            Self::AlreadyMember { .. } => "AlreadyMember",
            Self::NotAMember { .. } => "NotAMember",
            Self::TooManyDevices { .. } => "TooManyDevices",
        }
    }
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongConversation => f.write_str("the change belongs to another conversation"),
            Self::EpochRollback { expected, found } => write!(
                f,
                "the change repeats epoch {found} (the next is {expected}): a replay or rollback"
            ),
            Self::EpochGap { expected, found } => write!(
                f,
                "the change is for epoch {found} but the next is {expected}: changes are missing"
            ),
            Self::WrongPreviousHash => {
                f.write_str("the change does not follow the last change of the history")
            }
            Self::TimeWentBackwards {
                previous,
                issued_at,
            } => write!(
                f,
                "the change was issued at {issued_at}, before the previous one ({previous})"
            ),
            Self::FromTheFuture { issued_at } => {
                write!(
                    f,
                    "the change claims to be issued in the future ({issued_at})"
                )
            }
            Self::BadSignature => f.write_str("the change's signature does not verify"),
            Self::SignerCertificate(e) => write!(f, "the signer's certificate: {e}"),
            Self::MemberCertificate(e) => write!(f, "the added member's certificate: {e}"),
            Self::NotOpenedByPatient => {
                f.write_str("a conversation is opened by the patient adding its own devices")
            }
            Self::SignerRemoved { device_id } => write!(
                f,
                "the signing device {device_id} was removed from the conversation"
            ),
            Self::SignerNotMember => f.write_str("the signing device is not in the conversation"),
            Self::ClaimWhileClaimed => {
                f.write_str("an agent is already on the conversation: it cannot be claimed")
            }
            Self::SignerCertificatePresence => {
                f.write_str("staff sign with their certificate, and the patient without one")
            }
            Self::ReadOnlySigner => {
                f.write_str("a read-only supervisor can only leave the conversation")
            }
            Self::PatientAddsStranger => f.write_str("the patient can add only its own devices"),
            Self::PatientRemovesStaff => f.write_str("the patient can remove only its own devices"),
            Self::StaffAddsPatientDevice => f.write_str("only the patient adds its devices"),
            Self::StaffRemovesPatient => f.write_str("staff cannot remove the patient's devices"),
            Self::PatientDeviceList(e) => write!(f, "the patient's device list: {e}"),
            Self::DeviceNotListed { device_id } => {
                write!(f, "device {device_id} is not on the patient's device list")
            }
            Self::RoleMismatch => {
                f.write_str("the identity is in the conversation in another role")
            }
            Self::AlreadyMember { device_id } => {
                write!(f, "device {device_id} is already in the conversation")
            }
            Self::NotAMember { device_id } => {
                write!(f, "device {device_id} is not in the conversation")
            }
            Self::TooManyDevices { count } => write!(
                f,
                "the conversation would have {count} devices, more than {MAX_CONVERSATION_DEVICES}"
            ),
        }
    }
}

impl std::error::Error for MembershipError {}

/// One identity in a conversation: its role, its member devices and, for staff, the serial of
/// the certificate it was added with (`conversations.md` §4.3, rule 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    identity: IdentityKey,
    role: MemberRole,
    devices: Vec<u32>,
    certificate_serial: Option<u64>,
}

impl Member {
    /// The member's identity.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }
    /// Its role in the conversation.
    pub fn role(&self) -> MemberRole {
        self.role
    }
    /// Its member devices, ascending (never empty).
    pub fn devices(&self) -> &[u32] {
        &self.devices
    }
    /// The serial of the certificate presented when its devices were last added (the member
    /// certificate of that change, `clinic.md` §3); `None` for the patient. What a revocation
    /// list is checked against for a takeover (`conversations.md` §4.3, rule 9).
    pub fn certificate_serial(&self) -> Option<u64> {
        self.certificate_serial
    }
    /// Whether this member is staff whose certificate `list` names (the list must be the
    /// clinic's: the caller verified it under the organization key).
    fn revoked_by(&self, list: &RevocationList) -> bool {
        self.certificate_serial
            .is_some_and(|serial| list.is_revoked(serial))
    }
}

/// A conversation's verified membership: the state after its changes (`conversations.md`
/// §4.3). It only grows by [`MembershipLog::apply`], which either accepts a change whole or
/// refuses it and changes nothing.
#[derive(Clone, Debug)]
pub struct MembershipLog {
    conversation: ConversationId,
    org: OrgKey,
    next_epoch: u64,
    head: [u8; 32],
    last_issued_at: u64,
    patient: Option<Fingerprint>,
    members: Vec<Member>,
    removed: Vec<(Fingerprint, u32)>,
}

impl MembershipLog {
    /// An empty history of `conversation` with the clinic whose organization key is `org`
    /// (the patient's pinned clinic, or the relay's).
    pub fn new(conversation: ConversationId, org: OrgKey) -> Self {
        Self {
            conversation,
            org,
            next_epoch: 0,
            head: genesis_hash(&conversation, &org),
            last_issued_at: 0,
            patient: None,
            members: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Verifies a whole history from its first change.
    ///
    /// # Errors
    /// The index of the first refused change and why.
    pub fn verify_all<'c>(
        conversation: ConversationId,
        org: OrgKey,
        changes: impl IntoIterator<Item = &'c MembershipChange>,
        ctx: &MembershipContext<'_>,
    ) -> Result<Self, (usize, MembershipError)> {
        let mut log = Self::new(conversation, org);
        for (i, change) in changes.into_iter().enumerate() {
            log.apply(change, ctx).map_err(|e| (i, e))?;
        }
        Ok(log)
    }

    /// The conversation.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }
    /// The epoch the next change must carry (the number of changes applied).
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch
    }
    /// The `issued_at` of the newest change applied (Unix seconds; 0 before the first): when
    /// the membership last changed, by its signer's clock.
    pub fn last_issued_at(&self) -> u64 {
        self.last_issued_at
    }

    /// The hash the next change must name as `previous_hash`.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }
    /// The members, in the order they joined.
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    /// How many devices are members: the fan-out of a message is this minus one.
    pub fn device_count(&self) -> usize {
        self.members.iter().map(|m| m.devices.len()).sum()
    }
    /// Whether the device `(identity, device_id)` is a member now.
    pub fn is_member(&self, identity: &Fingerprint, device_id: u32) -> bool {
        self.member(identity)
            .is_some_and(|m| m.devices.contains(&device_id))
    }
    /// Whether an agent is on the conversation (else it is waiting in the queue).
    pub fn is_claimed(&self) -> bool {
        self.members.iter().any(|m| m.role == MemberRole::Agent)
    }

    /// Whether agents are on the conversation and `revocations` (the clinic's list, verified
    /// under its key) names the certificate of every one of them: no verified agent answers it,
    /// it is back in the clinic's queue and any agent may take it over with a claim
    /// (`conversations.md` §4.3, rule 9; §5.4). False without a list, with another clinic's
    /// list, or with no agent on it (then it waits in the queue anyway).
    pub fn agents_all_revoked(&self, revocations: Option<&RevocationList>) -> bool {
        let Some(list) = revocations.filter(|l| l.org() == &self.org) else {
            return false;
        };
        let mut agents = self
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Agent)
            .peekable();
        agents.peek().is_some() && agents.all(|m| m.revoked_by(list))
    }

    /// Whether the conversation waits for an agent: none is on it, or every agent on it is
    /// revoked by `revocations` (`conversations.md` §4.3, rule 9): a claim is then accepted.
    pub fn is_claimable(&self, revocations: Option<&RevocationList>) -> bool {
        !self.is_claimed() || self.agents_all_revoked(revocations)
    }

    fn member(&self, identity: &Fingerprint) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.identity.fingerprint() == *identity)
    }

    /// Applies `change` if every rule of `conversations.md` §4.3 holds, in order.
    ///
    /// # Errors
    /// The first rule the change breaks ([`MembershipError`]); the log is then unchanged.
    pub fn apply(
        &mut self,
        change: &MembershipChange,
        ctx: &MembershipContext<'_>,
    ) -> Result<(), MembershipError> {
        use MembershipError as E;
        // 1–4: the chain.
        if change.conversation() != self.conversation {
            return Err(E::WrongConversation);
        }
        let (expected, found) = (self.next_epoch, change.epoch());
        if found < expected {
            return Err(E::EpochRollback { expected, found });
        }
        if found > expected {
            return Err(E::EpochGap { expected, found });
        }
        if *change.previous_hash() != self.head {
            return Err(E::WrongPreviousHash);
        }
        let issued_at = change.issued_at();
        if issued_at < self.last_issued_at {
            return Err(E::TimeWentBackwards {
                previous: self.last_issued_at,
                issued_at,
            });
        }
        if issued_at > ctx.now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(E::FromTheFuture { issued_at });
        }
        // 5–7: signature and certificates.
        if !change.verify_signature() {
            return Err(E::BadSignature);
        }
        if let Some(cert) = change.signer_certificate() {
            self.check_certificate(cert, change.signer(), issued_at, ctx, None)
                .map_err(E::SignerCertificate)?;
        }
        if let Some(cert) = change.member_certificate() {
            let role = match change.role() {
                MemberRole::Supervisor => Role::Supervisor,
                _ => Role::Agent,
            };
            self.check_certificate(cert, change.member(), issued_at, ctx, Some(role))
                .map_err(E::MemberCertificate)?;
        }

        let signer = change.signer().fingerprint();
        let member = change.member().fingerprint();
        let signer_device = change.signer_device();
        let staff_signer = change.signer_certificate().is_some();

        if self.next_epoch == 0 {
            // 8: the patient opens the conversation with its own devices.
            if change.action() != ChangeAction::Add
                || change.role() != MemberRole::Patient
                || signer != member
                || staff_signer
                || !change.devices().contains(&signer_device)
            {
                return Err(E::NotOpenedByPatient);
            }
            self.check_patient_devices(change, ctx)?;
            return self.commit(change);
        }

        // 9: the signer is a member now, or joins by itself.
        let signer_role = match self.member(&signer) {
            Some(m) if m.devices.contains(&signer_device) => Some(m.role),
            _ => None,
        };
        let Some(signer_role) = signer_role else {
            let self_join = signer == member
                && change.action() == ChangeAction::Add
                && change.role().is_staff()
                && staff_signer
                && change.devices().contains(&signer_device);
            if !self_join {
                return Err(if self.removed.contains(&(signer, signer_device)) {
                    E::SignerRemoved {
                        device_id: signer_device,
                    }
                } else {
                    E::SignerNotMember
                });
            }
            if change.role() == MemberRole::Agent {
                if !self.is_claimable(ctx.revocations) {
                    return Err(E::ClaimWhileClaimed);
                }
                // A takeover: the revoked agents are gone from this change on.
                return self.commit_claim(change, ctx.revocations);
            }
            return self.commit(change);
        };

        // 10: staff sign with their certificate, the patient without.
        if staff_signer != signer_role.is_staff() {
            return Err(E::SignerCertificatePresence);
        }
        match signer_role {
            // 11: a supervisor only leaves.
            MemberRole::Supervisor => {
                if change.action() != ChangeAction::Remove || member != signer {
                    return Err(E::ReadOnlySigner);
                }
            }
            // 12: the patient adds and removes only its own devices.
            MemberRole::Patient => {
                if member != signer || change.role() != MemberRole::Patient {
                    return Err(match change.action() {
                        ChangeAction::Add => E::PatientAddsStranger,
                        ChangeAction::Remove => E::PatientRemovesStaff,
                    });
                }
                if change.action() == ChangeAction::Add {
                    self.check_patient_devices(change, ctx)?;
                }
            }
            // 13: an agent adds and removes staff, never the patient's devices.
            MemberRole::Agent => {
                if change.role() == MemberRole::Patient {
                    return Err(match change.action() {
                        ChangeAction::Add => E::StaffAddsPatientDevice,
                        ChangeAction::Remove => E::StaffRemovesPatient,
                    });
                }
            }
        }
        self.commit(change)
    }

    /// Rule 6/7: the certificate is the given identity's, accepted for the clinic at `at`, not
    /// revoked by a list issued at or before `at`, and grants `role` if asked.
    fn check_certificate(
        &self,
        cert: &AgentCertificate,
        subject: &IdentityKey,
        at: u64,
        ctx: &MembershipContext<'_>,
        role: Option<Role>,
    ) -> Result<(), CertificateError> {
        cert.verify(&self.org, at, None)?;
        if let Some(list) = ctx.revocations {
            if list.org() != &self.org {
                return Err(CertificateError::ForeignRevocationList);
            }
            if at >= list.issued_at() && list.is_revoked(cert.serial()) {
                return Err(CertificateError::Revoked {
                    serial: cert.serial(),
                });
            }
        }
        if cert.subject() != subject {
            return Err(CertificateError::WrongSubject);
        }
        match role {
            Some(role) if !cert.roles().contains(role) => Err(CertificateError::MissingRole(role)),
            _ => Ok(()),
        }
    }

    /// Rule 14: patient devices added are on the patient's device list, if the verifier holds
    /// one.
    fn check_patient_devices(
        &self,
        change: &MembershipChange,
        ctx: &MembershipContext<'_>,
    ) -> Result<(), MembershipError> {
        let Some(list) = ctx.patient_devices else {
            return Ok(());
        };
        list.verify(change.member())
            .map_err(MembershipError::PatientDeviceList)?;
        match change.devices().iter().find(|d| !list.contains(**d)) {
            Some(device_id) => Err(MembershipError::DeviceNotListed {
                device_id: *device_id,
            }),
            None => Ok(()),
        }
    }

    /// A claim (rule 9) takes effect: the agents on the conversation, all revoked by
    /// `revocations` if any is on it, leave it (their devices count as removed, as if each had
    /// left in this change), then rule 15 and the claim apply. Unchanged on a refusal.
    fn commit_claim(
        &mut self,
        change: &MembershipChange,
        revocations: Option<&RevocationList>,
    ) -> Result<(), MembershipError> {
        let before = (self.members.clone(), self.removed.clone());
        if self.is_claimed() && self.agents_all_revoked(revocations) {
            for m in self.members.iter().filter(|m| m.role == MemberRole::Agent) {
                let fingerprint = m.identity.fingerprint();
                self.removed
                    .extend(m.devices.iter().map(|d| (fingerprint, *d)));
            }
            self.members.retain(|m| m.role != MemberRole::Agent);
        }
        let result = self.commit(change);
        if result.is_err() {
            (self.members, self.removed) = before;
        }
        result
    }

    /// Rule 15, then the change takes effect.
    fn commit(&mut self, change: &MembershipChange) -> Result<(), MembershipError> {
        use MembershipError as E;
        let fingerprint = change.member().fingerprint();
        let index = self
            .members
            .iter()
            .position(|m| m.identity.fingerprint() == fingerprint);
        if index.is_some_and(|i| self.members.get(i).map(|m| m.role) != Some(change.role())) {
            return Err(E::RoleMismatch);
        }
        let mut members = self.members.clone();
        let mut removed = self.removed.clone();
        match change.action() {
            ChangeAction::Add => {
                let entry = match index.and_then(|i| members.get_mut(i)) {
                    Some(m) => m,
                    None => {
                        members.push(Member {
                            identity: change.member().clone(),
                            role: change.role(),
                            devices: Vec::new(),
                            certificate_serial: None,
                        });
                        members.last_mut().ok_or(E::RoleMismatch)?
                    }
                };
                if let Some(cert) = change.member_certificate() {
                    entry.certificate_serial = Some(cert.serial());
                }
                for &d in change.devices() {
                    if entry.devices.contains(&d) {
                        return Err(E::AlreadyMember { device_id: d });
                    }
                    entry.devices.push(d);
                }
                entry.devices.sort_unstable();
                let count: usize = members.iter().map(|m| m.devices.len()).sum();
                if count > MAX_CONVERSATION_DEVICES {
                    return Err(E::TooManyDevices { count });
                }
                removed.retain(|(f, d)| *f != fingerprint || !change.devices().contains(d));
            }
            ChangeAction::Remove => {
                let first = change.devices().first().copied().unwrap_or(0);
                let Some(entry) = index.and_then(|i| members.get_mut(i)) else {
                    return Err(E::NotAMember { device_id: first });
                };
                for &d in change.devices() {
                    let Some(at) = entry.devices.iter().position(|x| *x == d) else {
                        return Err(E::NotAMember { device_id: d });
                    };
                    entry.devices.remove(at);
                    removed.push((fingerprint, d));
                }
                members.retain(|m| !m.devices.is_empty());
            }
        }
        if self.next_epoch == 0 {
            self.patient = Some(fingerprint);
        }
        self.members = members;
        self.removed = removed;
        self.next_epoch += 1;
        self.head = change.hash();
        self.last_issued_at = change.issued_at();
        Ok(())
    }

    /// The patient's identity fingerprint (after the first change).
    pub fn patient(&self) -> Option<Fingerprint> {
        self.patient
    }
}
