//! Clinic conversations (`docs/conversations.md`): a patient opens a conversation with its
//! pinned clinic, agents list the queue and claim, and every member verifies the signed
//! membership history (§4.3) before believing it.
//!
//! Built so far: opening, on-duty, the queue, claiming, fetching and verifying the history, and
//! the member list with verified names. The verified history is sealed in the store (table
//! `conversations`) and checked again when loaded; fan-out, receipts, recall and hand-off are specified,
//! not built (§0).

use std::collections::HashMap;

use hushwire::proto::clinic::{DeviceList, RevocationList, Role};
use hushwire::proto::codec::Codec;
use hushwire::proto::conversation::queue::{QueueEntry, QueueFrame};
use hushwire::proto::conversation::{
    ChangeAction, ChangeProposal, ConversationId, MemberRole, MembershipChange, MembershipContext,
    MembershipLog,
};
use hushwire::proto::keys::Fingerprint;
use hushwire::proto::relay::{ErrorCode, FrameBody};

use super::Client;
use crate::error::{ClientError, Result};
use crate::os::{now_ms, rng};
use crate::store;

/// Whose change [`Client::verify`] checks: this device's own, before it is sent, or one
/// received from the relay (a history fetched, a push, the store).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verifying {
    Proposal,
    Received,
}

/// One conversation as this device verified it.
#[derive(Clone)]
pub(super) struct Conv {
    pub(super) log: MembershipLog,
    /// The encodings of the changes `log` applied, in epoch order: what the store keeps
    /// (sealed) and replays through the same checks when it loads the conversation.
    pub(super) changes: Vec<Vec<u8>>,
    /// Staff from the certificates of the changes that added them (verified by the log).
    pub(super) names: HashMap<[u8; 32], StaffName>,
    /// The clinic's revocation list held when this copy was taken: a member whose certificate
    /// it revokes is shown as revoked, not verified.
    pub(super) revocations: Option<hushwire::proto::clinic::RevocationList>,
}

/// A staff member as the certificate in the change that added them names them.
#[derive(Clone)]
pub(super) struct StaffName {
    /// The certificate's name.
    pub(super) name: String,
    /// "agent" or "supervisor".
    role: &'static str,
    /// The certificate's serial, checked against the revocation list when shown.
    pub(super) serial: u64,
    /// The clinic's name, from its signed link.
    clinic: String,
}

/// One member of a conversation, as the verified history shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationMember {
    /// The member's identity fingerprint.
    pub fingerprint: Fingerprint,
    /// Patient, agent or supervisor.
    pub role: MemberRole,
    /// Its member devices.
    pub devices: Vec<u32>,
    /// "Name — verified agent of Clinic" ("… supervisor of …") for staff, from the
    /// certificate the history verified; "patient" for the patient.
    pub shown: String,
    /// Staff whose certificate the clinic's revocation list held here names: no longer
    /// verified, sent nothing (`conversations.md` §4.3 rule 9).
    pub revoked: bool,
}

impl StaffName {
    /// "Name — verified agent of Clinic", or, once the clinic revoked the certificate (in the
    /// revocation list this device holds), "Name — certificate REVOKED by Clinic".
    pub(super) fn shown(
        &self,
        revocations: Option<&hushwire::proto::clinic::RevocationList>,
    ) -> String {
        if revocations.is_some_and(|l| l.is_revoked(self.serial)) {
            format!(
                "{} — {} certificate REVOKED by {} (not verified)",
                self.name, self.role, self.clinic
            )
        } else {
            format!("{} — verified {} of {}", self.name, self.role, self.clinic)
        }
    }
}

/// What fetching a conversation's history found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum History {
    /// Verified up to the relay's head.
    Current,
    /// The relay does not let this device read it (`NotOnConversation`); what was verified
    /// here before stays.
    NotReadable,
}

/// How a claim ended: losing a race is an answer, not an error (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This agent is now on the conversation.
    Claimed,
    /// Another agent claimed it first; nothing changed here.
    AlreadyClaimed,
}

fn refused(what: &str, code: ErrorCode) -> ClientError {
    let why = match code {
        ErrorCode::ConversationExists => "the relay already has a conversation with this id",
        ErrorCode::UnknownConversation => "the relay knows no such conversation",
        ErrorCode::NotOnConversation => "this device is not a member of the conversation",
        ErrorCode::MembershipRefused => "the relay refused the membership change",
        ErrorCode::StaleEpoch => "another change came first (fetch and try again)",
        ErrorCode::Forbidden => {
            "the relay refused: this device's clinic certificate lacks the role this needs \
             (see the command's help: on duty, the queue and claiming need the agent role; \
             reading along and the archive the supervisor role)"
        }
        _ => return ClientError::Relay(code),
    };
    ClientError::Conversation(format!("{what}: {why} ({code:?})"))
}

fn unexpected() -> ClientError {
    ClientError::Connection("unexpected answer to a conversation request".into())
}

/// What signing a change needs from this device.
struct Me {
    identity: hushwire::proto::keys::IdentityKey,
    device: u32,
    certificate: Option<hushwire::proto::clinic::AgentCertificate>,
    org: hushwire::proto::clinic::OrgKey,
    clinic_name: String,
    revocations: Option<hushwire::proto::clinic::RevocationList>,
}

impl Client {
    async fn me(&self) -> Result<Me> {
        let state = self.inner.state.lock().await;
        let clinic = state.clinic.as_ref().ok_or(ClientError::NoClinic)?;
        Ok(Me {
            identity: state.account.identity_key().clone(),
            device: state.account.device_id(),
            certificate: clinic.own_certificate().cloned(),
            org: *clinic.link().org(),
            clinic_name: clinic.link().name().to_owned(),
            revocations: clinic.revocations().cloned(),
        })
    }

    async fn sign_change(&self, proposal: ChangeProposal, me: &Me) -> Result<MembershipChange> {
        let state = self.inner.state.lock().await;
        MembershipChange::sign(
            proposal,
            state.account.identity(),
            me.identity.clone(),
            me.device,
            me.certificate.clone(),
        )
        .map_err(|e| ClientError::Conversation(format!("the change does not encode: {e}")))
    }

    pub(super) async fn queue_call(&self, what: &str, frame: QueueFrame) -> Result<QueueFrame> {
        self.queue_call_raw(frame).await.map_err(|e| match e {
            ClientError::Relay(code) => refused(what, code),
            e => e,
        })
    }

    /// A queue request whose refusal stays `ClientError::Relay(code)`, for callers that act on
    /// the code.
    async fn queue_call_raw(&self, frame: QueueFrame) -> Result<QueueFrame> {
        let link = self.require_link()?;
        match link.call(FrameBody::Queue(Box::new(frame))).await? {
            FrameBody::Queue(answer) => Ok(*answer),
            FrameBody::Ok => Ok(QueueFrame::FetchQueue),
            _ => Err(unexpected()),
        }
    }

    /// Applies `change` to `conv` under this device's context; the rule it breaks otherwise.
    /// Rule 14 (the patient's devices are on the patient's device list) is checked only for a
    /// change this device proposes: the relay checked a received one against the list in force
    /// when it accepted it, and the list held here may have changed since (a device linked or
    /// removed), while both are signed by the patient's identity, so checking it again later
    /// adds nothing and would refuse a history that was valid (`conversations.md` §4.3).
    async fn verify(
        &self,
        conv: &mut Conv,
        change: &MembershipChange,
        me: &Me,
        verifying: Verifying,
    ) -> Result<()> {
        let patient_list: Option<DeviceList> = match conv.log.patient() {
            _ if verifying == Verifying::Received => None,
            Some(p) => {
                let mut c = self.inner.db.acquire().await?;
                self.held_list(&mut c, &p).await?
            }
            None if change.epoch() == 0 => {
                let mut c = self.inner.db.acquire().await?;
                self.held_list(&mut c, &change.signer().fingerprint())
                    .await?
            }
            None => None,
        };
        let ctx = MembershipContext {
            revocations: me.revocations.as_ref(),
            patient_devices: patient_list.as_ref(),
            now: now_ms() / 1000,
        };
        let mut applied = conv.log.apply(change, &ctx);
        // A takeover (§4.3 rule 9) needs the list that revoked the agents on it: a list held
        // here from before refuses it, so the newest is fetched once and the change checked
        // again with it — also when the connection took that list meanwhile (the fetch then
        // finds nothing newer, but the list held is not the one this check used).
        if verifying == Verifying::Received
            && applied == Err(hushwire::proto::conversation::MembershipError::ClaimWhileClaimed)
        {
            self.refresh_revocation_list().await;
            let newest = self.me().await?.revocations;
            if newest.as_ref().map(RevocationList::sequence)
                != me.revocations.as_ref().map(RevocationList::sequence)
            {
                let ctx = MembershipContext {
                    revocations: newest.as_ref(),
                    ..ctx
                };
                applied = conv.log.apply(change, &ctx);
            }
        }
        applied.map_err(|e| {
            ClientError::Conversation(format!(
                "membership change at epoch {} refused: {e} (rule {})",
                change.epoch(),
                e.rule()
            ))
        })?;
        if let Some(cert) = change.member_certificate() {
            conv.names.insert(
                change.member().fingerprint().0,
                StaffName {
                    name: cert.name().to_owned(),
                    role: if change.role() == MemberRole::Supervisor {
                        "supervisor"
                    } else {
                        "agent"
                    },
                    serial: cert.serial(),
                    clinic: me.clinic_name.clone(),
                },
            );
        }
        conv.changes.push(change.to_bytes());
        Ok(())
    }

    pub(super) fn conversation_index(&self, conversation: &ConversationId) -> [u8; 32] {
        let mut bytes = b"conversation:".to_vec();
        bytes.extend_from_slice(&conversation.0);
        self.inner.vault.blind_index(&bytes)
    }

    /// Seals the conversation's verified history into the store, then keeps it in memory.
    async fn put_conv(&self, conversation: ConversationId, conv: Conv) -> Result<()> {
        let sealed =
            self.inner
                .vault
                .seal_value("conversation", &conversation.0, &conv.changes, &mut rng());
        let stored = async {
            let mut tx = store::begin(&self.inner.db).await?;
            let index = self.conversation_index(&conversation);
            store::put_indexed(&mut tx, store::Indexed::Conversation, &index, &sealed).await?;
            // From the first change: a device handed a conversation, or linked to a patient
            // on it, is told how it came to be (changes it signed itself are skipped).
            store::init_notices_shown(&mut tx, &index, 0).await?;
            // The newest change's time, not now: storing a history again is not activity.
            let newest = conv.log.last_issued_at().saturating_mul(1000);
            self.touch_conversation(&mut tx, &conversation, newest)
                .await?;
            tx.commit().await?;
            Ok::<(), ClientError>(())
        }
        .await;
        self.conversations_mut().insert(conversation.0, conv);
        stored
    }

    /// The conversation's verified history: from memory, else from the store (every change
    /// checked again, §4.3), else empty.
    async fn take_conv(&self, conversation: ConversationId, me: &Me) -> Result<Conv> {
        if let Some(conv) = self.conversations_mut().remove(&conversation.0) {
            return Ok(conv);
        }
        let mut conv = Conv {
            log: MembershipLog::new(conversation, me.org),
            changes: Vec::new(),
            names: HashMap::new(),
            revocations: None,
        };
        let index = self.conversation_index(&conversation);
        let sealed = {
            let mut c = self.inner.db.acquire().await?;
            store::indexed(&mut c, store::Indexed::Conversation, &index).await?
        };
        if let Some(sealed) = sealed {
            let changes: Vec<Vec<u8>> =
                self.inner
                    .vault
                    .open_value("conversation", &conversation.0, &sealed)?;
            for bytes in &changes {
                let change = MembershipChange::from_bytes(bytes)
                    .map_err(|_| ClientError::CorruptStore("conversation"))?;
                self.verify(&mut conv, &change, me, Verifying::Received)
                    .await?;
            }
        }
        Ok(conv)
    }

    /// Patient: opens a conversation with the pinned clinic (§5.1): a random 16-byte id and
    /// the epoch-0 change adding this person's listed devices. Publishes this person's device
    /// list first if none is held (the relay checks rule 14 against it). Needs a connection.
    pub async fn open_conversation(&self) -> Result<ConversationId> {
        let me = self.me().await?;
        if me.certificate.is_some() {
            return Err(ClientError::Conversation(
                "staff devices do not open conversations; patients do".into(),
            ));
        }
        let devices = self.ensure_own_list(&me).await?;
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng(), &mut id);
        let conversation = ConversationId(id);
        let proposal = ChangeProposal {
            conversation,
            epoch: 0,
            previous_hash: hushwire::proto::conversation::genesis_hash(&conversation, &me.org),
            issued_at: now_ms() / 1000,
            action: ChangeAction::Add,
            role: MemberRole::Patient,
            member: me.identity.clone(),
            devices,
            member_certificate: None,
        };
        let change = self.sign_change(proposal, &me).await?;
        let mut conv = Conv {
            log: MembershipLog::new(conversation, me.org),
            changes: Vec::new(),
            names: HashMap::new(),
            revocations: None,
        };
        self.verify(&mut conv, &change, &me, Verifying::Proposal)
            .await?;
        self.queue_call(
            "open",
            QueueFrame::OpenConversation(Box::new(change.clone())),
        )
        .await?;
        self.put_conv(conversation, conv).await?;
        Ok(conversation)
    }

    /// A copy of the conversation's verified history (memory, else the store, checked again),
    /// `None` if this device has none. Needs a pinned clinic.
    pub(super) async fn conv_snapshot(&self, conversation: ConversationId) -> Result<Option<Conv>> {
        let me = self.me().await?;
        let conv = self.take_conv(conversation, &me).await?;
        if conv.log.next_epoch() == 0 {
            return Ok(None);
        }
        let mut copy = conv.clone();
        copy.revocations = me.revocations;
        self.conversations_mut().insert(conversation.0, conv);
        Ok(Some(copy))
    }

    fn conversations_mut(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Conv>> {
        match self.inner.conversations.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// This person's devices from the list held, publishing a list of this device alone if
    /// none is held: the relay checks a patient's devices against it (rule 14), and a hand-off
    /// to an agent adds the devices its list names.
    async fn ensure_own_list(&self, me: &Me) -> Result<Vec<u32>> {
        let held = {
            let mut c = self.inner.db.acquire().await?;
            self.held_list(&mut c, &me.identity.fingerprint()).await?
        };
        match held {
            Some(list) => Ok(list.devices().to_vec()),
            None => {
                let link = self.require_link()?;
                self.publish_own_list(&link, &[me.device]).await?;
                Ok(vec![me.device])
            }
        }
    }

    /// Staff: whether this device receives `QueueChanged` pushes (§5.1). Going on duty also
    /// publishes this person's device list if none is held, so a hand-off can name it.
    pub async fn set_on_duty(&self, on_duty: bool) -> Result<()> {
        if on_duty {
            let me = self.me().await?;
            self.ensure_own_list(&me).await?;
        }
        self.queue_call("on duty", QueueFrame::SetOnDuty(on_duty))
            .await
            .map(drop)
    }

    /// Agent: the conversations waiting in the queue, oldest first.
    pub async fn conversation_queue(&self) -> Result<Vec<QueueEntry>> {
        self.require_role("see the queue", Role::Agent).await?;
        match self.queue_call("queue", QueueFrame::FetchQueue).await? {
            QueueFrame::Queue(entries) => Ok(entries),
            _ => Err(unexpected()),
        }
    }

    /// Fetches the conversation's history from the relay from the first epoch not verified
    /// here, and verifies each change (§4.3). A refused change stops the fetch and is reported;
    /// what was verified before it stays. A device the relay no longer lets read the history
    /// (removed, or an agent not on a claimed conversation) gets
    /// [`ClientError::Conversation`] saying so.
    pub async fn refresh_membership(&self, conversation: ConversationId) -> Result<()> {
        match self.fetch_history(conversation).await? {
            History::Current => Ok(()),
            History::NotReadable => Err(refused("fetch membership", ErrorCode::NotOnConversation)),
        }
    }

    /// [`Self::refresh_membership`], telling "not readable by this device" apart: what was
    /// verified here stays, and the caller decides (a removed member keeps its history).
    pub(super) async fn fetch_history(&self, conversation: ConversationId) -> Result<History> {
        let me = self.me().await?;
        let mut conv = self.take_conv(conversation, &me).await?;
        let before = conv.log.next_epoch();
        let result = async {
            loop {
                let from_epoch = conv.log.next_epoch();
                let answer = match self
                    .queue_call_raw(QueueFrame::FetchMembership {
                        conversation,
                        from_epoch,
                    })
                    .await
                {
                    Ok(answer) => answer,
                    Err(ClientError::Relay(ErrorCode::NotOnConversation)) => {
                        return Ok(History::NotReadable);
                    }
                    Err(ClientError::Relay(code)) => {
                        return Err(refused("fetch membership", code));
                    }
                    Err(e) => return Err(e),
                };
                let QueueFrame::Membership(changes) = answer else {
                    return Err(unexpected());
                };
                if changes.is_empty() {
                    return Ok(History::Current);
                }
                for change in &changes {
                    self.verify(&mut conv, change, &me, Verifying::Received)
                        .await?;
                }
            }
        }
        .await;
        let after = conv.log.next_epoch();
        if after > 0 {
            self.put_conv(conversation, conv).await?;
        }
        if after > before {
            self.after_new_changes(conversation, before).await;
        }
        result
    }

    /// A change the relay pushed (§5.4): applied at once if it is the next one here (so a
    /// device just removed, which may no longer fetch, still learns of its removal), else the
    /// history is fetched. Returns whether the history moved.
    pub(super) async fn apply_pushed(&self, change: &MembershipChange) -> Result<()> {
        let conversation = change.conversation();
        let me = self.me().await?;
        let mut conv = self.take_conv(conversation, &me).await?;
        if change.epoch() == conv.log.next_epoch() && conv.log.next_epoch() > 0 {
            let before = conv.log.next_epoch();
            let applied = self
                .verify(&mut conv, change, &me, Verifying::Received)
                .await;
            self.put_conv(conversation, conv).await?;
            if applied.is_ok() {
                self.after_new_changes(conversation, before).await;
            }
            return applied;
        }
        if conv.log.next_epoch() > 0 {
            self.put_conv(conversation, conv).await?;
        }
        match self.fetch_history(conversation).await? {
            History::Current | History::NotReadable => Ok(()),
        }
    }

    /// Agent: claims a conversation in the queue (§5.1 step 3): fetches and verifies its
    /// history, then sends a self-join as agent at the next epoch. Exactly one of racing
    /// claims wins; the others get [`ClaimOutcome::AlreadyClaimed`] and nothing changes.
    pub async fn claim(&self, conversation: ConversationId) -> Result<ClaimOutcome> {
        let me = self.me().await?;
        let Some(cert) = me.certificate.clone() else {
            return Err(ClientError::Conversation(
                "only an agent of the clinic can claim (no certificate on this device)".into(),
            ));
        };
        if !cert.roles().contains(Role::Agent) {
            return Err(ClientError::Conversation(
                "this device's certificate has no agent role".into(),
            ));
        }
        self.ensure_own_list(&me).await?;
        // The clinic's newest list: a conversation whose agents it all revokes may be taken
        // over (§4.3 rule 9).
        self.refresh_revocation_list().await;
        let me = self.me().await?;
        if self.fetch_history(conversation).await? == History::NotReadable {
            // The relay shows a claimed conversation only to those on it.
            return Err(ClientError::Conversation(
                "already claimed: an agent is on this conversation".into(),
            ));
        }
        let (epoch, previous_hash) = {
            let convs = self.conversations_mut();
            let conv = convs.get(&conversation.0).ok_or_else(|| {
                ClientError::Conversation("the relay sent no history for it".into())
            })?;
            if conv.log.is_member(&me.identity.fingerprint(), me.device) {
                return Err(ClientError::Conversation(
                    "you are already on this conversation".into(),
                ));
            }
            // Claimable: no agent on it, or every agent on it revoked (§4.3 rule 9).
            if !conv.log.is_claimable(me.revocations.as_ref()) {
                return Err(ClientError::Conversation(
                    "already claimed: an agent is on this conversation".into(),
                ));
            }
            (conv.log.next_epoch(), conv.log.head())
        };
        let proposal = ChangeProposal {
            conversation,
            epoch,
            previous_hash,
            issued_at: now_ms() / 1000,
            action: ChangeAction::Add,
            role: MemberRole::Agent,
            member: me.identity.clone(),
            devices: vec![me.device],
            member_certificate: Some(cert),
        };
        let change = self.sign_change(proposal, &me).await?;
        match self
            .queue_call("claim", QueueFrame::Claim(Box::new(change.clone())))
            .await
        {
            Ok(QueueFrame::Claimed { .. }) => {
                let mut conv = self
                    .conversations_mut()
                    .remove(&conversation.0)
                    .ok_or_else(unexpected)?;
                let applied = self
                    .verify(&mut conv, &change, &me, Verifying::Received)
                    .await;
                self.put_conv(conversation, conv).await?;
                applied.map(|()| ClaimOutcome::Claimed)
            }
            Ok(QueueFrame::AlreadyClaimed { .. }) => Ok(ClaimOutcome::AlreadyClaimed),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e),
        }
    }

    /// The conversation's members as this device verified them (fetching the history first
    /// when connected), staff named from their certificates.
    pub async fn members(&self, conversation: ConversationId) -> Result<Vec<ConversationMember>> {
        if self.current_link().is_some() {
            // A device no longer on it keeps the history it verified (its removal included,
            // when the relay's push reached it).
            self.fetch_history(conversation).await?;
        }
        let conv = self.conv_snapshot(conversation).await?.ok_or_else(|| {
            ClientError::Conversation("no verified history of this conversation here".into())
        })?;
        Ok(conv
            .log
            .members()
            .iter()
            .map(|m| {
                let fingerprint = m.identity().fingerprint();
                ConversationMember {
                    fingerprint,
                    role: m.role(),
                    devices: m.devices().to_vec(),
                    shown: conv.shown(&fingerprint, m.role()),
                    revoked: conv.revocations.as_ref().is_some_and(|list| {
                        m.certificate_serial().is_some_and(|s| list.is_revoked(s))
                    }),
                }
            })
            .collect())
    }

    /// Signs a change of this person's own membership at the verified head (after fetching
    /// the history): `devices` (`None`: this device) added or removed in `role`; sends it in
    /// `frame`, and applies it here once the relay accepted it. Staff sign with their
    /// certificate; the patient (role patient) without one, for its own devices (rule 12).
    async fn change_own_membership(
        &self,
        what: &str,
        conversation: ConversationId,
        (action, role, devices): (ChangeAction, MemberRole, Option<Vec<u32>>),
        frame: fn(MembershipChange) -> QueueFrame,
    ) -> Result<()> {
        let me = self.me().await?;
        let cert = match (me.certificate.clone(), role) {
            (None, MemberRole::Patient) => None,
            (Some(cert), MemberRole::Agent | MemberRole::Supervisor) => Some(cert),
            _ => {
                return Err(ClientError::Conversation(format!(
                    "{what}: only staff of the clinic can (no certificate on this device)"
                )));
            }
        };
        self.refresh_membership(conversation).await?;
        let (epoch, previous_hash) = {
            let convs = self.conversations_mut();
            let conv = convs.get(&conversation.0).ok_or_else(|| {
                ClientError::Conversation(format!("{what}: the relay sent no history"))
            })?;
            (conv.log.next_epoch(), conv.log.head())
        };
        let proposal = ChangeProposal {
            conversation,
            epoch,
            previous_hash,
            issued_at: now_ms() / 1000,
            action,
            role,
            member: me.identity.clone(),
            devices: devices.unwrap_or_else(|| vec![me.device]),
            member_certificate: cert.filter(|_| action == ChangeAction::Add),
        };
        let change = self.sign_change(proposal, &me).await?;
        // Checked here first: a change this device's own history refuses is never sent.
        let mut conv = self
            .conversations_mut()
            .remove(&conversation.0)
            .ok_or_else(unexpected)?;
        let mut trial = Conv {
            log: conv.log.clone(),
            changes: Vec::new(),
            names: HashMap::new(),
            revocations: None,
        };
        let checked = self
            .verify(&mut trial, &change, &me, Verifying::Proposal)
            .await;
        let sent = match checked {
            Ok(()) => self.queue_call(what, frame(change.clone())).await.map(drop),
            Err(e) => Err(e),
        };
        let applied = match sent {
            Ok(()) => {
                self.verify(&mut conv, &change, &me, Verifying::Proposal)
                    .await
            }
            Err(e) => Err(e),
        };
        self.put_conv(conversation, conv).await?;
        applied
    }

    /// Refuses, with the reason in plain words, a device whose certificate does not grant
    /// `role` (the relay would refuse with `Forbidden` or `NotOnConversation`, which says less).
    pub(super) async fn require_role(&self, what: &str, role: Role) -> Result<()> {
        let me = self.me().await?;
        match me.certificate {
            None => Err(ClientError::Conversation(format!(
                "{what}: only the clinic's staff with the {role} role can; this device has no \
                 agent certificate"
            ))),
            Some(cert) if !cert.roles().contains(role) => Err(ClientError::Conversation(format!(
                "{what}: only the clinic's staff with the {role} role can; this device's \
                 certificate does not grant it"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Supervisor: joins a conversation read-only (a self-join as supervisor, §5.1 step 5).
    pub async fn join_read_only(&self, conversation: ConversationId) -> Result<()> {
        self.require_role("join read-only", Role::Supervisor)
            .await?;
        let me = self.me().await?;
        let member = |conv: Option<Conv>| {
            conv.is_some_and(|c| c.log.is_member(&me.identity.fingerprint(), me.device))
        };
        if member(self.conv_snapshot(conversation).await?) {
            // Current, not only as last seen here: it may have been removed since.
            self.refresh_membership(conversation).await?;
            if member(self.conv_snapshot(conversation).await?) {
                return Err(ClientError::Conversation(
                    "join read-only: this device already reads along in this conversation".into(),
                ));
            }
        }
        self.change_own_membership(
            "join read-only",
            conversation,
            (ChangeAction::Add, MemberRole::Supervisor, None),
            |c| QueueFrame::PublishChange(Box::new(c)),
        )
        .await
    }

    /// Staff: leaves a conversation. An agent hands it back to the queue (`HandOff` with its
    /// own removal and no note); a supervisor publishes its own removal.
    pub async fn leave(&self, conversation: ConversationId) -> Result<()> {
        let me = self.me().await?;
        // A device off the conversation keeps its verified history, which says so.
        self.fetch_history(conversation).await?;
        let role = {
            let convs = self.conversations_mut();
            convs
                .get(&conversation.0)
                .and_then(|conv| {
                    conv.log
                        .members()
                        .iter()
                        .find(|m| m.identity() == &me.identity)
                        .map(|m| m.role())
                })
                .ok_or_else(|| {
                    ClientError::Conversation(
                        "leave: this device is not on the conversation".into(),
                    )
                })?
        };
        match role {
            MemberRole::Agent => {
                self.change_own_membership(
                    "hand back to the queue",
                    conversation,
                    (ChangeAction::Remove, MemberRole::Agent, None),
                    |c| QueueFrame::HandOff {
                        changes: vec![c],
                        notes: Vec::new(),
                    },
                )
                .await
            }
            MemberRole::Supervisor => {
                self.change_own_membership(
                    "leave",
                    conversation,
                    (ChangeAction::Remove, MemberRole::Supervisor, None),
                    |c| QueueFrame::PublishChange(Box::new(c)),
                )
                .await
            }
            MemberRole::Patient => Err(ClientError::Conversation(
                "leave: the patient does not leave its own conversation".into(),
            )),
        }
    }

    /// Patient: brings this person's devices in every conversation held here in line with
    /// its device list (after `link_device` or `remove_device`): a linked device is added, a
    /// removed one removed (rule 12), so a new phone receives what follows in conversations
    /// opened before it and the relay never routes to a removed device. A conversation that
    /// fails is reported and the others are still brought in line.
    pub(super) async fn sync_own_devices_in_conversations(&self) -> Result<()> {
        let me = match self.me().await {
            Ok(me) => me,
            Err(ClientError::NoClinic) => return Ok(()),
            Err(e) => return Err(e),
        };
        if me.certificate.is_some() {
            return Ok(());
        }
        let Some(list) = ({
            let mut c = self.inner.db.acquire().await?;
            self.held_list(&mut c, &me.identity.fingerprint()).await?
        }) else {
            return Ok(());
        };
        let mut failed = None;
        for summary in self.conversations().await? {
            let conversation = summary.id;
            if let Err(e) = self.fetch_history(conversation).await {
                failed = Some(e);
                continue;
            }
            let Some(conv) = self.conv_snapshot(conversation).await? else {
                continue;
            };
            let Some(mine) = conv
                .log
                .members()
                .iter()
                .find(|m| m.identity().fingerprint() == me.identity.fingerprint())
                .map(|m| m.devices().to_vec())
            else {
                continue;
            };
            let add: Vec<u32> = list
                .devices()
                .iter()
                .copied()
                .filter(|d| !mine.contains(d))
                .collect();
            let remove: Vec<u32> = mine
                .iter()
                .copied()
                .filter(|d| !list.contains(*d) && *d != me.device)
                .collect();
            for (action, devices) in [(ChangeAction::Add, add), (ChangeAction::Remove, remove)] {
                if devices.is_empty() {
                    continue;
                }
                if let Err(e) = self
                    .change_own_membership(
                        "bring your devices in line",
                        conversation,
                        (action, MemberRole::Patient, Some(devices)),
                        |c| QueueFrame::PublishChange(Box::new(c)),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "a conversation's devices could not be updated");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Agent on the conversation: hands it off (§5.1 step 4) to a named agent of the clinic
    /// (two changes in one `HandOff`: add them with their certificate and published devices,
    /// then remove oneself) or, with `to = None`, back to the queue (remove oneself). A
    /// one-line `note` (at most 200 bytes, `clinic.md` §1 rules) goes to staff devices only —
    /// the staff members after the hand-off and, handing back, the agents on duty — never to
    /// the patient. Checked here before anything is sent: this device must be an agent on the
    /// conversation, the target an agent of the clinic whose certificate verifies. With
    /// `share_history`, the conversation so far (messages held here, not staff notes, not
    /// recalled) is shared with the new agent (§4.5, a `HistoryShared` audit record per
    /// device): then the agent is added first, the history sent, and this device removed, in
    /// three steps instead of one `HandOff` of two changes.
    pub async fn handoff(
        &self,
        conversation: ConversationId,
        to: Option<Fingerprint>,
        note: Option<&str>,
        share_history: bool,
    ) -> Result<()> {
        let me = self.me().await?;
        if me.certificate.is_none() {
            return Err(ClientError::Conversation(
                "hand-off: only an agent of the clinic can (no certificate on this device)".into(),
            ));
        }
        let note = match note {
            Some(text) => Some(
                hushwire::payload::Payload::staff_note(conversation, text).map_err(|_| {
                    ClientError::Conversation(format!(
                        "hand-off note refused: it must be one line of 1 to {} bytes, without \
                         control, invisible or bidirectional characters (this one has {} bytes)",
                        hushwire::payload::MAX_NOTE_LEN,
                        text.len()
                    ))
                })?,
            ),
            None => None,
        };
        let link = self.require_link()?;
        self.fetch_history(conversation).await?;
        let conv = self
            .conv_snapshot(conversation)
            .await?
            .ok_or_else(|| ClientError::Conversation("hand-off: no history here".into()))?;
        let my_role = conv
            .log
            .members()
            .iter()
            .find(|m| m.identity() == &me.identity)
            .map(|m| m.role());
        if my_role != Some(MemberRole::Agent) {
            return Err(ClientError::Conversation(
                "hand-off: this device is not an agent on the conversation".into(),
            ));
        }
        let my_devices: Vec<u32> = conv
            .log
            .members()
            .iter()
            .find(|m| m.identity() == &me.identity)
            .map(|m| m.devices().to_vec())
            .unwrap_or_default();
        let mut changes = Vec::new();
        let mut epoch = conv.log.next_epoch();
        let mut previous_hash = conv.log.head();
        let mut trial = conv.clone();
        let mut after_add = None;
        if let Some(target) = to {
            if target == me.identity.fingerprint() {
                return Err(ClientError::Conversation(
                    "hand-off: to yourself changes nothing".into(),
                ));
            }
            let (identity, certificate, devices) = self.fetch_agent(&link, target).await?;
            let proposal = ChangeProposal {
                conversation,
                epoch,
                previous_hash,
                issued_at: now_ms() / 1000,
                action: ChangeAction::Add,
                role: MemberRole::Agent,
                member: identity,
                devices,
                member_certificate: Some(certificate),
            };
            let add = self.sign_change(proposal, &me).await?;
            self.verify(&mut trial, &add, &me, Verifying::Proposal)
                .await?;
            after_add = Some(trial.clone());
            epoch += 1;
            previous_hash = add.hash();
            changes.push(add);
        }
        let proposal = ChangeProposal {
            conversation,
            epoch,
            previous_hash,
            issued_at: now_ms() / 1000,
            action: ChangeAction::Remove,
            role: MemberRole::Agent,
            member: me.identity.clone(),
            devices: my_devices,
            member_certificate: None,
        };
        let remove = self.sign_change(proposal, &me).await?;
        // Checked here first: a hand-off this device's own history refuses is never sent.
        self.verify(&mut trial, &remove, &me, Verifying::Proposal)
            .await?;
        changes.push(remove);
        let notes = match note {
            Some(payload) => {
                let recipients = self
                    .note_recipients(&link, &trial, to.is_none(), &me)
                    .await?;
                self.encrypt_notes(&link, &trial, &recipients, &payload)
                    .await?
            }
            None => Vec::new(),
        };
        // Sharing the history (§4.5) needs the new agent on the conversation and this device
        // still on it: the add goes first on its own, the history, then the removal.
        if let (true, Some(target), Some(after_add)) = (share_history, to, after_add) {
            let remove = changes.pop().ok_or_else(unexpected)?;
            self.queue_call(
                "hand-off (adding the agent)",
                QueueFrame::PublishChange(Box::new(changes.remove(0))),
            )
            .await?;
            self.put_conv(conversation, after_add.clone()).await?;
            let still_on = |e: ClientError| {
                ClientError::Conversation(format!(
                    "the agent was added, but you are still on the conversation ({e}): run the \
                     hand-off again, or leave"
                ))
            };
            self.share_now(&link, conversation, &after_add, target)
                .await
                .map_err(still_on)?;
            changes = vec![remove];
            self.queue_call("hand-off", QueueFrame::HandOff { changes, notes })
                .await
                .map_err(still_on)?;
        } else {
            self.queue_call("hand-off", QueueFrame::HandOff { changes, notes })
                .await?;
        }
        // Stored by the relay as verified here: this device, now off the conversation, may no
        // longer fetch its history.
        self.put_conv(conversation, trial).await
    }

    /// An agent of the clinic by identity fingerprint: its identity key and certificate (from
    /// the relay, verified with the clinic key, the agent role and the revocation list held)
    /// and its published device list (signed by that identity).
    async fn fetch_agent(
        &self,
        link: &crate::link::Link,
        target: Fingerprint,
    ) -> Result<(
        hushwire::proto::keys::IdentityKey,
        hushwire::proto::clinic::AgentCertificate,
        Vec<u32>,
    )> {
        let certificate = match link.call(FrameBody::FetchCertificate(target.0)).await? {
            FrameBody::Certificate(Some(c)) => c,
            FrameBody::Certificate(None) => {
                return Err(ClientError::Conversation(format!(
                    "hand-off: {} has no certificate of the clinic at the relay",
                    hex::encode(&target.0[..8])
                )));
            }
            _ => return Err(unexpected()),
        };
        if certificate.subject().fingerprint() != target {
            return Err(ClientError::Conversation(
                "hand-off: the relay answered another identity's certificate".into(),
            ));
        }
        if !certificate.roles().contains(Role::Agent) {
            return Err(ClientError::Conversation(format!(
                "hand-off: {} is not an agent of the clinic (certificate roles lack agent)",
                certificate.name()
            )));
        }
        let identity = certificate.subject().clone();
        let devices = match link.call(FrameBody::FetchDeviceList(target.0)).await? {
            FrameBody::DeviceList(Some(list)) => {
                list.verify(&identity).map_err(|e| {
                    ClientError::Conversation(format!(
                        "hand-off: the agent's device list does not verify: {e:?}"
                    ))
                })?;
                list.devices().to_vec()
            }
            FrameBody::DeviceList(None) => {
                return Err(ClientError::Conversation(format!(
                    "hand-off: {} has published no device list yet: it is published when \
                     that agent goes on duty once (`hushwire on-duty on` on its device)",
                    certificate.name()
                )));
            }
            _ => return Err(unexpected()),
        };
        Ok((identity, *certificate, devices))
    }

    /// Who a hand-off note goes to: every staff device of the conversation after the hand-off
    /// and, handing back to the queue, every on-duty device, except this one. Each with its
    /// identity key (members': from the history; on-duty: from its certificate, verified).
    async fn note_recipients(
        &self,
        link: &crate::link::Link,
        after: &Conv,
        to_queue: bool,
        me: &Me,
    ) -> Result<Vec<(hushwire::proto::keys::IdentityKey, u32)>> {
        let mut out: Vec<(hushwire::proto::keys::IdentityKey, u32)> = Vec::new();
        for m in after.log.members() {
            if m.role() == MemberRole::Patient {
                continue;
            }
            for &d in m.devices() {
                out.push((m.identity().clone(), d));
            }
        }
        if to_queue {
            let on_duty = match self.queue_call("on duty", QueueFrame::FetchOnDuty).await? {
                QueueFrame::OnDuty(devices) => devices,
                _ => return Err(unexpected()),
            };
            for address in on_duty {
                if out.iter().any(|(k, d)| {
                    k.fingerprint().0 == address.fingerprint && *d == address.device_id
                }) {
                    continue;
                }
                match link
                    .call(FrameBody::FetchCertificate(address.fingerprint))
                    .await?
                {
                    FrameBody::Certificate(Some(c))
                        if c.subject().fingerprint().0 == address.fingerprint
                            && c.verify(&me.org, now_ms() / 1000, None).is_ok()
                            && c.roles().contains(Role::Agent)
                            && !me
                                .revocations
                                .as_ref()
                                .is_some_and(|l| l.is_revoked(c.serial())) =>
                    {
                        out.push((c.subject().clone(), address.device_id));
                    }
                    _ => {
                        tracing::warn!("an on-duty device without a valid certificate gets no note")
                    }
                }
            }
        }
        out.retain(|(k, d)| !(k == &me.identity && *d == me.device));
        out.truncate(64);
        Ok(out)
    }
}
