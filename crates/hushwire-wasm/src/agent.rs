//! The agent console's side of clinic conversations (issue 16 part 4, `docs/browser.md`): this
//! device's certificate request and certificate (checked under the clinic's organization key),
//! registering with it, going on duty, the queue frames an agent sends and receives, claiming,
//! and handing a conversation to a named colleague or back to the queue (with the note envelopes
//! of `staff_note.rs`), and a supervisor joining a conversation read-only and leaving it
//! (`docs/conversations.md` §5.1 step 5). Each change is signed here and verified on a
//! copy of the verified history (`MembershipLog`, the relay's and the Rust client's rules) before
//! its frame is returned: a claim, hand-off or supervision change this device's own history
//! refuses is never sent.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hushwire::proto::clinic::{AgentCertificate, DeviceList, Role};
use hushwire::proto::codec::Codec;
use hushwire::proto::conversation::queue::{QueueEntry, QueueFrame, QueueState};
use hushwire::proto::conversation::{
    ChangeAction, ChangeProposal, MemberRole, MembershipChange, MembershipContext,
};
use hushwire::proto::relay::FrameBody;
use wasm_bindgen::prelude::*;

use crate::conversation::Membership;
use crate::web::{Clinic, Incoming, frame};
use crate::{Account, Error, Result, unix_seconds};

/// The longest certificate text accepted from a paste or a file (a certificate is a few hundred
/// bytes; this bounds the decoder's work on whatever is pasted).
const MAX_CERTIFICATE_TEXT: usize = 8 * 1024;

#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// This device's own agent certificate, verified under the clinic's organization key, for this
/// device's identity, with the agent role.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct OwnCertificate(AgentCertificate);

#[wasm_bindgen]
impl OwnCertificate {
    /// The certified name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.0.name().to_owned()
    }

    /// The granted roles, as `hushwire org certify --roles` spells them (`agent,supervisor`).
    #[wasm_bindgen(getter)]
    pub fn roles(&self) -> String {
        self.0.roles().to_string()
    }

    /// The clinic's serial number for it.
    #[wasm_bindgen(getter)]
    pub fn serial(&self) -> f64 {
        to_f64(self.0.serial())
    }

    /// End of validity (Unix seconds, exclusive).
    #[wasm_bindgen(getter, js_name = notAfter)]
    pub fn not_after(&self) -> f64 {
        to_f64(self.0.not_after())
    }

    /// The certificate, encoded (for `Account.answerChallenge`).
    pub fn bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// The certificate as `hushwire org certify` prints it (base64url): what to store.
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.to_bytes())
    }
}

#[wasm_bindgen]
impl Clinic {
    /// Checks the certificate `text` (the line `hushwire org certify` printed, or the content
    /// of its `--out` file) for `account`'s device at `nowSeconds`: it must decode, be issued by
    /// this clinic's organization key with a valid signature, be valid now, certify exactly this
    /// device's identity and grant the agent or the supervisor role (a supervisor alone reads
    /// along and opens the archive, never claims). Throws with the reason in plain words.
    #[wasm_bindgen(js_name = verifyOwnCertificate)]
    pub fn verify_own_certificate(
        &self,
        text: &str,
        account: &Account,
        now_seconds: f64,
    ) -> Result<OwnCertificate> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::new("paste the certificate first"));
        }
        if text.len() > MAX_CERTIFICATE_TEXT {
            return Err(Error::new(
                "this is not a certificate: far too long (a certificate is one line of a few \
                 hundred characters)",
            ));
        }
        // Not a certificate at all (not base64url, or bytes that do not decode as one): said in
        // words, not as the decoder's detail ("unsupported protocol version 158").
        let not_a_certificate = || {
            Error::new(
                "this is not a certificate (it is not the line `hushwire org certify` prints)",
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| not_a_certificate())?;
        let cert = AgentCertificate::from_bytes(&bytes).map_err(|_| not_a_certificate())?;
        cert.verify(self.link().org(), unix_seconds(now_seconds)?, None)
            .map_err(|e| {
                Error::new(format_args!(
                    "the certificate does not verify for {}: {e}",
                    self.link().name()
                ))
            })?;
        // Whose it is first: another identity's certificate is the wrong one whatever its roles.
        if cert.subject() != account.0.identity_key() {
            return Err(Error::new(
                "the certificate is for another identity, not this console: ask the \
                 administrator to certify this console's request",
            ));
        }
        // A supervisor who is not also an agent reads along and opens the archive; the
        // queue and claiming need the agent role, which the core checks where they are signed.
        if !cert.roles().contains(Role::Agent) && !cert.roles().contains(Role::Supervisor) {
            return Err(Error::new(
                "the certificate grants neither the agent nor the supervisor role: the console \
                 is for the clinic's agents and supervisors (ask the administrator for `--roles \
                 agent` or `--roles supervisor`)",
            ));
        }
        Ok(OwnCertificate(cert))
    }
}

#[wasm_bindgen]
impl Account {
    /// This device's certificate request: its identity key as one line of base64url, what
    /// `hushwire certificate request` prints and `hushwire org certify REQUEST` reads. No secret.
    #[wasm_bindgen(js_name = certificateRequest)]
    pub fn certificate_request(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.identity_key().to_bytes())
    }

    /// The `UpdateCertificate` frame: installs a renewed certificate of this staff identity at
    /// the relay (`docs/relay-protocol.md` §3.4).
    #[wasm_bindgen(js_name = updateCertificateFrame)]
    pub fn update_certificate_frame(
        &self,
        request_id: u32,
        certificate: &OwnCertificate,
    ) -> Vec<u8> {
        frame(
            request_id,
            FrameBody::UpdateCertificate(Box::new(certificate.0.clone())),
        )
    }

    /// Claims the conversation `membership` holds (its history fetched up to the relay's head):
    /// signs the change adding this device as agent, with `certificate`, at the verified next
    /// epoch, checks it on a copy of the history (rules 1-14: claimable, not already on it), and
    /// returns the `Claim` frame. After `Claimed`, fetch the history: the relay's copy is the
    /// one to keep. Throws "already claimed" when an agent is on it.
    #[wasm_bindgen(js_name = claimFrame)]
    pub fn claim_frame(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
    ) -> Result<Vec<u8>> {
        let me = self.0.identity_key();
        if membership
            .log
            .is_member(&me.fingerprint(), self.0.device_id())
        {
            return Err(Error::new("you are already on this conversation"));
        }
        if !membership.log.is_claimable(None) {
            return Err(Error::new(
                "already claimed: another agent is on this conversation",
            ));
        }
        let now = unix_seconds(now_seconds)?;
        let change = self.own_change(
            membership,
            certificate,
            now,
            (ChangeAction::Add, MemberRole::Agent),
        )?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::Claim(Box::new(change)))),
        ))
    }

    /// Supervision (`hushwire join --read-only CONVERSATION`, §5.1 step 5): joins the
    /// conversation `membership` holds (its history fetched up to the relay's head) read-only.
    /// Signs the self-join adding this device as supervisor, with `certificate` (which must grant
    /// the supervisor role), at the verified next epoch, checks it on a copy of the history
    /// (rules 1-15), and returns the `PublishChange` frame. Throws in words when the certificate
    /// is not a supervisor's or this device is on the conversation already.
    #[wasm_bindgen(js_name = joinReadOnlyFrame)]
    pub fn join_read_only_frame(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
    ) -> Result<Vec<u8>> {
        if !certificate.0.roles().contains(Role::Supervisor) {
            return Err(Error::new(
                "only a supervisor reads along: this console's certificate does not grant the \
                 supervisor role",
            ));
        }
        let me = self.0.identity_key();
        if let Some(mine) = membership.log.members().iter().find(|m| m.identity() == me) {
            return Err(Error::new(if mine.role() == MemberRole::Supervisor {
                "you already read along in this conversation"
            } else {
                "you are on this conversation already (as its agent): a member does not join it \
                 again as supervisor"
            }));
        }
        let now = unix_seconds(now_seconds)?;
        let change = self.own_change(
            membership,
            certificate,
            now,
            (ChangeAction::Add, MemberRole::Supervisor),
        )?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::PublishChange(Box::new(change)))),
        ))
    }

    /// A supervisor stops reading along (`hushwire leave CONVERSATION` as supervisor, §5.1 step
    /// 5): signs the removal of this identity's member devices as supervisor at the verified
    /// next epoch (rule 11: the one change a supervisor signs), checks it on a copy of the
    /// history, and returns the `PublishChange` frame. Throws in words when this device does not
    /// read along in the conversation.
    #[wasm_bindgen(js_name = leaveReadOnlyFrame)]
    pub fn leave_read_only_frame(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
    ) -> Result<Vec<u8>> {
        let now = unix_seconds(now_seconds)?;
        self.own_member(membership, MemberRole::Supervisor)
            .map_err(|_| Error::new("you do not read along in this conversation"))?;
        let change = self.own_change(
            membership,
            certificate,
            now,
            (ChangeAction::Remove, MemberRole::Supervisor),
        )?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::PublishChange(Box::new(change)))),
        ))
    }

    /// Hands the conversation to a named colleague (`hushwire handoff CONVERSATION AGENT`
    /// without a note): `colleagueCertificate` is the colleague's certificate as the relay
    /// answered `FetchCertificate` (checked here under the clinic's key, with the agent role)
    /// and `colleagueDeviceList` their published device list (`FetchDeviceList`, checked under
    /// the certificate's identity). Signs the change adding them as agent and the change
    /// removing this device's identity, checks both on a copy of the history, and returns the
    /// `HandOff` frame. Without a colleague (both empty) it hands the conversation back to the
    /// queue (the removal alone).
    #[wasm_bindgen(js_name = handOffFrame)]
    pub fn hand_off_frame(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
        colleague_certificate: &[u8],
        colleague_device_list: &[u8],
    ) -> Result<Vec<u8>> {
        self.hand_off(
            membership,
            certificate,
            request_id,
            now_seconds,
            (colleague_certificate, colleague_device_list),
            Vec::new(),
        )
    }

    /// `handOffFrame` with a hand-off note (`hushwire handoff … --note TEXT`, §5.2): the
    /// `HandOff` frame carries the note envelopes, `noteAddresses[i]` (a staff device,
    /// `fingerprint:device`) receiving the `noteLengths[i]` bytes of `noteMessages` that follow
    /// the earlier ones — each a `StaffNote` payload (`encodeStaffNote`) encrypted with
    /// `Session.encrypt` for that device. 0 to 64 envelopes of at most 4 096 bytes each; the
    /// relay refuses the hand-off (`NotOnConversation`) if one is for a device that is not
    /// staff. The changes are signed and checked as for `handOffFrame`.
    #[wasm_bindgen(js_name = handOffFrameWithNotes)]
    #[allow(clippy::too_many_arguments)]
    pub fn hand_off_frame_with_notes(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
        colleague_certificate: &[u8],
        colleague_device_list: &[u8],
        note_addresses: Vec<String>,
        note_messages: &[u8],
        note_lengths: &[u32],
    ) -> Result<Vec<u8>> {
        let notes =
            crate::staff_note::note_envelopes(&note_addresses, note_messages, note_lengths)?;
        self.hand_off(
            membership,
            certificate,
            request_id,
            now_seconds,
            (colleague_certificate, colleague_device_list),
            notes,
        )
    }
}

#[wasm_bindgen]
impl Account {
    /// The first step of a hand-off that shares the conversation so far with the colleague (as
    /// `hushwire handoff` does by default): the `PublishChange` frame adding the colleague as
    /// agent (their certificate and device list checked as for `handOffFrame`), checked on a
    /// copy of the history. This device stays on the conversation to send the history share;
    /// `handOffFrame` without a colleague then removes it.
    #[wasm_bindgen(js_name = addColleagueFrame)]
    pub fn add_colleague_frame(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
        colleague_certificate: &[u8],
        colleague_device_list: &[u8],
    ) -> Result<Vec<u8>> {
        let now = unix_seconds(now_seconds)?;
        self.own_member(membership, MemberRole::Agent)?;
        let add = self.colleague_add(
            membership,
            certificate,
            now,
            colleague_certificate,
            colleague_device_list,
        )?;
        check(membership, std::slice::from_ref(&add), now)?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::PublishChange(Box::new(add)))),
        ))
    }
}

impl Account {
    /// The `HandOff` frame: the change adding the colleague (if `colleague`'s certificate is
    /// not empty) and this identity's removal, signed and checked on a copy of the history,
    /// with `notes`.
    fn hand_off(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        request_id: u32,
        now_seconds: f64,
        (colleague_certificate, colleague_device_list): (&[u8], &[u8]),
        notes: Vec<hushwire::proto::conversation::queue::NoteEnvelope>,
    ) -> Result<Vec<u8>> {
        let now = unix_seconds(now_seconds)?;
        let me = self.0.identity_key();
        let mine = self.own_member(membership, MemberRole::Agent)?;
        let my_devices = mine.devices().to_vec();
        let mut changes = Vec::with_capacity(2);
        let mut epoch = membership.log.next_epoch();
        let mut previous_hash = membership.log.head();
        if !colleague_certificate.is_empty() {
            let add = self.colleague_add(
                membership,
                certificate,
                now,
                colleague_certificate,
                colleague_device_list,
            )?;
            epoch += 1;
            previous_hash = add.hash();
            changes.push(add);
        }
        let proposal = ChangeProposal {
            conversation: membership.log.conversation(),
            epoch,
            previous_hash,
            issued_at: now,
            action: ChangeAction::Remove,
            role: MemberRole::Agent,
            member: me.clone(),
            devices: my_devices,
            member_certificate: None,
        };
        changes.push(self.sign(proposal, certificate)?);
        check(membership, &changes, now)?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::HandOff { changes, notes })),
        ))
    }

    /// This identity's member entry on the conversation, if it is on it with `role`.
    fn own_member<'m>(
        &self,
        membership: &'m Membership,
        role: MemberRole,
    ) -> Result<&'m hushwire::proto::conversation::Member> {
        membership
            .log
            .members()
            .iter()
            .find(|m| m.identity() == self.0.identity_key())
            .filter(|m| m.role() == role)
            .ok_or_else(|| {
                Error::new(match role {
                    MemberRole::Supervisor => "you do not read along in this conversation",
                    _ => "you are not an agent on this conversation",
                })
            })
    }

    /// A change about this identity alone at `membership`'s next epoch (a claim, a supervisor's
    /// self-join or its own removal): an addition carries this device and `certificate` as the
    /// member certificate (rule 9, self-join); a removal names this identity's member devices.
    /// Signed, then checked on a copy of the history: a change it refuses is never returned.
    fn own_change(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        now: u64,
        (action, role): (ChangeAction, MemberRole),
    ) -> Result<MembershipChange> {
        let devices = match action {
            ChangeAction::Add => vec![self.0.device_id()],
            ChangeAction::Remove => self.own_member(membership, role)?.devices().to_vec(),
        };
        let proposal = ChangeProposal {
            conversation: membership.log.conversation(),
            epoch: membership.log.next_epoch(),
            previous_hash: membership.log.head(),
            issued_at: now,
            action,
            role,
            member: self.0.identity_key().clone(),
            devices,
            member_certificate: (action == ChangeAction::Add).then(|| certificate.0.clone()),
        };
        let change = self.sign(proposal, certificate)?;
        check(membership, std::slice::from_ref(&change), now)?;
        Ok(change)
    }

    /// The change adding the colleague (certificate checked under the clinic's key with the
    /// agent role, device list under the certificate's identity) at `membership`'s next epoch.
    fn colleague_add(
        &self,
        membership: &Membership,
        certificate: &OwnCertificate,
        now: u64,
        colleague_certificate: &[u8],
        colleague_device_list: &[u8],
    ) -> Result<MembershipChange> {
        let cert = AgentCertificate::from_bytes(colleague_certificate).map_err(|e| {
            Error::new(format_args!(
                "the colleague's certificate is unreadable: {e}"
            ))
        })?;
        cert.verify_role(membership.clinic.org(), now, None, Role::Agent)
            .map_err(|e| {
                Error::new(format_args!(
                    "{} is not a verified agent of {}: {e}",
                    cert.name(),
                    membership.clinic.name()
                ))
            })?;
        if cert.subject() == self.0.identity_key() {
            return Err(Error::new("a hand-off to yourself changes nothing"));
        }
        if colleague_device_list.is_empty() {
            return Err(Error::new(format_args!(
                "{} has published no device list yet: it is published when they go on duty \
                 once",
                cert.name()
            )));
        }
        let list = DeviceList::from_bytes(colleague_device_list).map_err(|e| {
            Error::new(format_args!(
                "the colleague's device list is unreadable: {e}"
            ))
        })?;
        list.verify(cert.subject()).map_err(|e| {
            Error::new(format_args!(
                "{}'s device list does not verify: {e:?}",
                cert.name()
            ))
        })?;
        let proposal = ChangeProposal {
            conversation: membership.log.conversation(),
            epoch: membership.log.next_epoch(),
            previous_hash: membership.log.head(),
            issued_at: now,
            action: ChangeAction::Add,
            role: MemberRole::Agent,
            member: cert.subject().clone(),
            devices: list.devices().to_vec(),
            member_certificate: Some(cert),
        };
        self.sign(proposal, certificate)
    }

    fn sign(
        &self,
        proposal: ChangeProposal,
        certificate: &OwnCertificate,
    ) -> Result<MembershipChange> {
        MembershipChange::sign(
            proposal,
            self.0.identity(),
            self.0.identity_key().clone(),
            self.0.device_id(),
            Some(certificate.0.clone()),
        )
        .map_err(|e| Error::new(format_args!("the change does not encode: {e}")))
    }
}

/// Applies `changes` to a copy of `membership`'s history: a change it refuses is never sent.
fn check(membership: &Membership, changes: &[MembershipChange], now: u64) -> Result<()> {
    let mut trial = membership.log.clone();
    let ctx = MembershipContext {
        revocations: None,
        patient_devices: None,
        now,
    };
    for change in changes {
        trial.apply(change, &ctx).map_err(|e| {
            Error::new(format_args!(
                "this change would be refused ({}): {e}",
                e.rule()
            ))
        })?;
    }
    Ok(())
}

/// The `SetOnDuty` frame: whether this staff device receives `QueueChanged` pushes.
#[wasm_bindgen(js_name = setOnDutyFrame)]
pub fn set_on_duty_frame(request_id: u32, on_duty: bool) -> Vec<u8> {
    frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::SetOnDuty(on_duty))),
    )
}

/// The `FetchQueue` frame: the conversations waiting, oldest first.
#[wasm_bindgen(js_name = fetchQueueFrame)]
pub fn fetch_queue_frame(request_id: u32) -> Vec<u8> {
    frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::FetchQueue)),
    )
}

/// The `FetchDeviceList` frame for the identity whose fingerprint is `fingerprintHex`.
#[wasm_bindgen(js_name = fetchDeviceListFrame)]
pub fn fetch_device_list_frame(request_id: u32, fingerprint_hex: &str) -> Result<Vec<u8>> {
    let address = crate::web::parse_address(&format!("{}:1", fingerprint_hex.trim()))
        .map_err(|_| Error::new("a fingerprint is 64 hex digits"))?;
    Ok(frame(
        request_id,
        FrameBody::FetchDeviceList(address.fingerprint),
    ))
}

/// One entry of the clinic's queue, as `Incoming.queueEntries` lists it.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct QueueEntryInfo {
    conversation: String,
    state: &'static str,
    opened_at: u64,
    waiting_since: u64,
    epoch: u64,
}

#[wasm_bindgen]
impl QueueEntryInfo {
    /// The conversation id, 32 hex digits.
    #[wasm_bindgen(getter)]
    pub fn conversation(&self) -> String {
        self.conversation.clone()
    }
    /// `new`, `handedBack` (waiting), `claimed` or `closed` (left the queue).
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.state.to_owned()
    }
    /// When the patient opened it (Unix seconds).
    #[wasm_bindgen(getter, js_name = openedAt)]
    pub fn opened_at(&self) -> f64 {
        to_f64(self.opened_at)
    }
    /// Since when it waits (Unix seconds).
    #[wasm_bindgen(getter, js_name = waitingSince)]
    pub fn waiting_since(&self) -> f64 {
        to_f64(self.waiting_since)
    }
    /// The epoch its next change must carry.
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> f64 {
        to_f64(self.epoch)
    }
}

impl QueueEntryInfo {
    fn from_entry(e: &QueueEntry) -> Self {
        Self {
            conversation: e.conversation.to_string(),
            state: match e.state {
                QueueState::New => "new",
                QueueState::HandedBack => "handedBack",
                QueueState::Claimed => "claimed",
                QueueState::Closed => "closed",
            },
            opened_at: e.opened_at,
            waiting_since: e.waiting_since,
            epoch: e.epoch,
        }
    }
}

#[wasm_bindgen]
impl Incoming {
    /// The entries of a `queue` answer, or the one entry of a `queueChanged` push.
    #[wasm_bindgen(getter, js_name = queueEntries)]
    pub fn queue_entries(&self) -> Vec<QueueEntryInfo> {
        match self.body() {
            FrameBody::Queue(q) => match q.as_ref() {
                QueueFrame::Queue(entries) => {
                    entries.iter().map(QueueEntryInfo::from_entry).collect()
                }
                QueueFrame::QueueChanged(entry) => vec![QueueEntryInfo::from_entry(entry)],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The conversation (32 hex digits) a `membershipChanged` push, a `claimed` or an
    /// `alreadyClaimed` answer is about; empty for other frames.
    #[wasm_bindgen(getter, js_name = conversationHex)]
    pub fn conversation_of(&self) -> String {
        match self.body() {
            FrameBody::Queue(q) => match q.as_ref() {
                QueueFrame::MembershipChanged(c) => c.conversation().to_string(),
                QueueFrame::Claimed { conversation, .. }
                | QueueFrame::AlreadyClaimed { conversation, .. } => conversation.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// A `DeviceList` answer's list, encoded (for `Account.handOffFrame`); empty if the
    /// identity published none.
    #[wasm_bindgen(getter, js_name = deviceList)]
    pub fn device_list(&self) -> Vec<u8> {
        match self.body() {
            FrameBody::DeviceList(Some(list)) => list.to_bytes(),
            _ => Vec::new(),
        }
    }
}

#[wasm_bindgen]
impl Membership {
    /// After the relay accepted a frame this device sent (`Claim`, `HandOff`, `PublishChange`,
    /// `OpenConversation`), applies its changes, in order, as the next ones: the relay does not
    /// push a device its own changes. Each is verified like any other; throws on the first
    /// refusal, keeping those before it.
    #[wasm_bindgen(js_name = applyOwnFrame)]
    pub fn apply_own_frame(&mut self, sent: &[u8], now_seconds: f64) -> Result<()> {
        let now = unix_seconds(now_seconds)?;
        let body = hushwire::proto::relay::Frame::from_bytes(sent)
            .map_err(Error::new)?
            .body;
        let changes = match body {
            FrameBody::Queue(q) => match *q {
                QueueFrame::Claim(c)
                | QueueFrame::PublishChange(c)
                | QueueFrame::OpenConversation(c) => vec![*c],
                QueueFrame::HandOff { changes, .. } => changes,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if changes.is_empty() {
            return Err(Error::new("the frame carries no membership change"));
        }
        for change in changes {
            self.apply_change(change, now)?;
        }
        Ok(())
    }

    /// Whether the device `address` is a member that writes now (patient or agent).
    #[wasm_bindgen(js_name = writesNow)]
    pub fn writes_now(&self, address: &str) -> Result<bool> {
        self.writer_at(to_f64(self.log.next_epoch()), address)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::conversation::new_conversation_id;
    use crate::os_rng;
    use hushwire::proto::clinic::{ClinicLink, Roles};
    use hushwire::proto::relay::Frame;

    const NOW: u64 = 1_800_000_000;

    #[allow(clippy::cast_precision_loss)]
    fn now() -> f64 {
        NOW as f64
    }

    fn certify(
        org: &hushwire::IdentityKeyPair,
        who: &Account,
        name: &str,
        roles: &[Role],
    ) -> String {
        let cert = AgentCertificate::issue(
            org,
            1,
            who.0.identity_key().clone(),
            name,
            Roles::of(roles).unwrap(),
            NOW - 60,
            NOW + 86_400,
        )
        .unwrap();
        URL_SAFE_NO_PAD.encode(cert.to_bytes())
    }

    #[test]
    fn a_console_is_certified_claims_and_hands_off_and_each_change_verifies() {
        let org = hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap());
        let link =
            ClinicLink::issue(&org, "Test Clinic", "ws://127.0.0.1:7700/v1/websocket").unwrap();
        let clinic = Clinic::parse(&link.to_string()).unwrap();
        let other_org = hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap());
        let console = Account::new(1, now()).unwrap();
        let colleague = Account::new(1, now()).unwrap();
        let patient = Account::new(1, now()).unwrap();

        // The request is the identity key, as `hushwire certificate request` prints it.
        let request = URL_SAFE_NO_PAD
            .decode(console.certificate_request())
            .unwrap();
        assert_eq!(request, console.0.identity_key().to_bytes());
        // Certificates: the right one verifies; another clinic's, another identity's, one
        // without the agent or supervisor role, an expired one and garbage are refused in words.
        let text = certify(&org, &console, "Dr. Console", &[Role::Agent]);
        let own = clinic
            .verify_own_certificate(&text, &console, now())
            .unwrap();
        assert_eq!(own.name(), "Dr. Console");
        assert_eq!(own.text(), text);
        // A supervisor who is not an agent: accepted (reading along, the archive).
        let supervisor = certify(&org, &console, "Dr. Sup", &[Role::Supervisor]);
        let own_sup = clinic
            .verify_own_certificate(&supervisor, &console, now())
            .unwrap();
        assert_eq!(own_sup.roles(), "supervisor");
        for (bad, why) in [
            (
                certify(&other_org, &console, "X", &[Role::Agent]),
                "does not verify",
            ),
            (
                certify(&org, &colleague, "X", &[Role::Agent]),
                "another identity",
            ),
            (
                certify(&org, &console, "X", &[Role::Admin]),
                "neither the agent nor the supervisor role",
            ),
            // Another identity's certificate without a console role: whose it is, said first.
            (
                certify(&org, &colleague, "X", &[Role::Admin]),
                "another identity",
            ),
            (
                "not base64 !".to_owned(),
                "this is not a certificate (it is not the line",
            ),
            // Base64url that is no certificate: not the decoder's "unsupported protocol version".
            (
                "notacert".to_owned(),
                "this is not a certificate (it is not the line",
            ),
            (String::new(), "paste"),
            ("A".repeat(10_000), "too long"),
        ] {
            let err = clinic
                .verify_own_certificate(&bad, &console, now())
                .unwrap_err();
            assert!(err.message().contains(why), "{bad:.20}: {err}");
        }
        assert!(
            clinic
                .verify_own_certificate(&text, &console, now() + 200_000.0)
                .is_err()
        );
        let register = console.answer_challenge(
            &crate::web::frame(
                0,
                FrameBody::Challenge(hushwire::proto::relay::Challenge::new(
                    [1; 32],
                    NOW * 1000 + 60_000,
                    &hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap()),
                )),
            ),
            None,
            true,
            1,
            Some(own.bytes()),
        );
        assert!(matches!(
            Frame::from_bytes(&register.unwrap()).unwrap().body,
            FrameBody::Register {
                certificate: Some(_),
                ..
            }
        ));

        // A patient opens; the console claims; the claim verifies and is applied from the frame.
        let id = new_conversation_id().unwrap();
        let mut patient_view = Membership::new(&clinic, &id).unwrap();
        patient
            .open_conversation_frame(&mut patient_view, 2, now())
            .unwrap();
        let mut m = Membership::new(&clinic, &id).unwrap();
        m.apply(&patient_view.change(0), now()).unwrap();
        let claim = console.claim_frame(&m, &own, 3, now()).unwrap();
        m.apply_own_frame(&claim, now()).unwrap();
        assert!(m.is_claimed());
        assert!(m.writes_now(&console.address()).unwrap());
        assert_eq!(
            m.describe(1, Some(console.0.identity_key().fingerprint().to_string())),
            "You (Dr. Console — verified agent of Test Clinic) joined the conversation"
        );
        assert_eq!(
            m.describe(0, Some(String::new())),
            "The patient opened the conversation"
        );
        // A second claim (another console, or this one again) is refused before any frame.
        let err = colleague
            .claim_frame(
                &m,
                &clinic
                    .verify_own_certificate(
                        &certify(&org, &colleague, "Dr. C", &[Role::Agent]),
                        &colleague,
                        now(),
                    )
                    .unwrap(),
                4,
                now(),
            )
            .unwrap_err();
        assert!(err.message().contains("already claimed"), "{err}");
        assert!(console.claim_frame(&m, &own, 4, now()).is_err());

        // Hand-off to the colleague: certificate and device list checked, two changes.
        let theirs = URL_SAFE_NO_PAD
            .decode(certify(&org, &colleague, "Dr. Colleague", &[Role::Agent]))
            .unwrap();
        let list = DeviceList::issue(colleague.0.identity(), colleague.0.identity_key(), 1, &[1])
            .unwrap()
            .to_bytes();
        assert!(
            console
                .hand_off_frame(&m, &own, 5, now(), &theirs, &[])
                .unwrap_err()
                .message()
                .contains("no device list")
        );
        let foreign = URL_SAFE_NO_PAD
            .decode(certify(
                &other_org,
                &colleague,
                "Dr. Colleague",
                &[Role::Agent],
            ))
            .unwrap();
        assert!(
            console
                .hand_off_frame(&m, &own, 5, now(), &foreign, &list)
                .is_err()
        );
        let wrong_list = DeviceList::issue(patient.0.identity(), patient.0.identity_key(), 1, &[1])
            .unwrap()
            .to_bytes();
        assert!(
            console
                .hand_off_frame(&m, &own, 5, now(), &theirs, &wrong_list)
                .is_err()
        );
        // The sharing hand-off: the colleague added first (PublishChange), this device still
        // on it to share the history, then the removal alone.
        let mut shared = Membership::new(&clinic, &id).unwrap();
        for i in 0..2 {
            shared.apply(&m.change(i), now()).unwrap();
        }
        let add = console
            .add_colleague_frame(&shared, &own, 5, now(), &theirs, &list)
            .unwrap();
        assert!(matches!(
            Frame::from_bytes(&add).unwrap().body,
            FrameBody::Queue(ref q) if matches!(**q, QueueFrame::PublishChange(_))
        ));
        shared.apply_own_frame(&add, now()).unwrap();
        assert!(shared.writes_now(&console.address()).unwrap());
        assert!(shared.writes_now(&colleague.address()).unwrap());
        let share = crate::conversation::encode_history_share_from(
            &id,
            vec![patient.address(), console.address()],
            &[1; 32],
            &[1.0, 2.0],
            &[5.0, 6.0],
            vec!["from the patient".into(), "from the console".into()],
        )
        .unwrap();
        let decoded = crate::web::decode_payload(&share).unwrap();
        let texts: Vec<(String, String)> = decoded
            .shared()
            .iter()
            .map(|t| (t.sender(), t.text()))
            .collect();
        assert_eq!(
            texts,
            [
                (patient.address(), "from the patient".to_owned()),
                (console.address(), "from the console".to_owned())
            ]
        );
        let recall = crate::conversation::encode_recall(&id, &[9; 16], 1234.0).unwrap();
        let decoded = crate::web::decode_payload(&recall).unwrap();
        assert_eq!(decoded.kind(), "recall");
        assert_eq!(decoded.message_id(), "09".repeat(16));
        assert!(crate::conversation::encode_recall(&id, &[9; 15], 1.0).is_err());
        let leave = console
            .hand_off_frame(&shared, &own, 6, now(), &[], &[])
            .unwrap();
        shared.apply_own_frame(&leave, now()).unwrap();
        assert!(!shared.writes_now(&console.address()).unwrap());
        assert!(shared.is_claimed());

        let hand_off = console
            .hand_off_frame(&m, &own, 5, now(), &theirs, &list)
            .unwrap();
        let FrameBody::Queue(q) = Frame::from_bytes(&hand_off).unwrap().body else {
            panic!("not a queue frame");
        };
        assert!(
            matches!(*q, QueueFrame::HandOff { ref changes, ref notes } if changes.len() == 2 && notes.is_empty())
        );
        m.apply_own_frame(&hand_off, now()).unwrap();
        assert!(!m.writes_now(&console.address()).unwrap());
        assert!(m.writes_now(&colleague.address()).unwrap());
        assert!(m.describe(3, None).starts_with("Dr. Console"));
        // Off the conversation: no second hand-off.
        assert!(
            console
                .add_colleague_frame(&m, &own, 6, now(), &theirs, &list)
                .is_err()
        );
        assert!(
            console
                .hand_off_frame(&m, &own, 6, now(), &[], &[])
                .is_err()
        );
    }

    #[test]
    fn a_supervisor_joins_read_only_and_leaves_and_the_rules_refuse_the_rest() {
        let org = hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap());
        let link =
            ClinicLink::issue(&org, "Test Clinic", "ws://127.0.0.1:7700/v1/websocket").unwrap();
        let clinic = Clinic::parse(&link.to_string()).unwrap();
        let supervisor = Account::new(1, now()).unwrap();
        let agent = Account::new(1, now()).unwrap();
        let patient = Account::new(1, now()).unwrap();
        let own = |who: &Account, name: &str, roles: &[Role]| {
            clinic
                .verify_own_certificate(&certify(&org, who, name, roles), who, now())
                .unwrap()
        };
        let sup = own(&supervisor, "Sue", &[Role::Agent, Role::Supervisor]);
        let ada = own(&agent, "Ada", &[Role::Agent]);

        // A patient opens; an agent claims.
        let id = new_conversation_id().unwrap();
        let mut patient_view = Membership::new(&clinic, &id).unwrap();
        patient
            .open_conversation_frame(&mut patient_view, 2, now())
            .unwrap();
        let mut m = Membership::new(&clinic, &id).unwrap();
        m.apply(&patient_view.change(0), now()).unwrap();
        let claim = agent.claim_frame(&m, &ada, 3, now()).unwrap();
        m.apply_own_frame(&claim, now()).unwrap();

        // Without the supervisor role: refused in words, before any frame.
        let err = agent.join_read_only_frame(&m, &ada, 4, now()).unwrap_err();
        assert!(err.message().contains("supervisor role"), "{err}");
        let err = supervisor
            .join_read_only_frame(&m, &own(&supervisor, "Sue", &[Role::Agent]), 4, now())
            .unwrap_err();
        assert!(err.message().contains("supervisor role"), "{err}");

        // The self-join as supervisor: a PublishChange whose change verifies (rule 9 self-join,
        // rule 7 member certificate with the supervisor role), as every member applies it.
        let join = supervisor.join_read_only_frame(&m, &sup, 4, now()).unwrap();
        let FrameBody::Queue(q) = Frame::from_bytes(&join).unwrap().body else {
            panic!("not a queue frame");
        };
        let QueueFrame::PublishChange(change) = *q else {
            panic!("not a PublishChange");
        };
        assert_eq!(change.role(), MemberRole::Supervisor);
        assert_eq!(change.action(), ChangeAction::Add);
        let mut patients = Membership::new(&clinic, &id).unwrap();
        for i in 0..2 {
            patients.apply(&m.change(i), now()).unwrap();
        }
        patients.apply(&change.to_bytes(), now()).unwrap();
        m.apply_own_frame(&join, now()).unwrap();
        assert_eq!(
            patients.describe(2, None),
            "Sue — verified supervisor of Test Clinic is reading along (read only)"
        );
        // A member now, who reads along and never writes; the agent is still the one on it.
        assert!(!m.writes_now(&supervisor.address()).unwrap());
        assert!(m.writes_now(&agent.address()).unwrap());
        assert!(
            m.recipients(&patient.address())
                .unwrap()
                .contains(&supervisor.address())
        );
        assert!(m.is_claimed());
        // Joining again is refused in words; so is the agent joining as supervisor, and an
        // agent's change from the supervisor (rule 11, and a supervisor is no agent).
        let err = supervisor
            .join_read_only_frame(&m, &sup, 5, now())
            .unwrap_err();
        assert!(err.message().contains("already read along"), "{err}");
        let err = supervisor
            .hand_off_frame(&m, &sup, 5, now(), &[], &[])
            .unwrap_err();
        assert!(err.message().contains("not an agent"), "{err}");
        assert!(supervisor.claim_frame(&m, &sup, 5, now()).is_err());
        let err = agent.leave_read_only_frame(&m, &ada, 5, now()).unwrap_err();
        assert!(err.message().contains("do not read along"), "{err}");

        // Leaving: its own removal at the next epoch, which verifies; then it is off it.
        let leave = supervisor
            .leave_read_only_frame(&m, &sup, 5, now())
            .unwrap();
        let FrameBody::Queue(q) = Frame::from_bytes(&leave).unwrap().body else {
            panic!("not a queue frame");
        };
        let QueueFrame::PublishChange(change) = *q else {
            panic!("not a PublishChange");
        };
        assert_eq!(change.action(), ChangeAction::Remove);
        assert_eq!(change.epoch(), 3);
        patients.apply(&change.to_bytes(), now()).unwrap();
        m.apply_own_frame(&leave, now()).unwrap();
        assert!(
            !m.recipients(&patient.address())
                .unwrap()
                .contains(&supervisor.address())
        );
        assert_eq!(
            m.describe(
                3,
                Some(supervisor.0.identity_key().fingerprint().to_string())
            ),
            "You (Sue — verified supervisor of Test Clinic) stopped reading along"
        );
        let err = supervisor
            .leave_read_only_frame(&m, &sup, 6, now())
            .unwrap_err();
        assert!(err.message().contains("do not read along"), "{err}");
    }

    #[test]
    fn queue_frames_decode() {
        let id = hushwire::proto::conversation::ConversationId([7; 16]);
        let entry = QueueEntry {
            conversation: id,
            state: QueueState::HandedBack,
            opened_at: 5,
            waiting_since: 9,
            epoch: 3,
        };
        let push = crate::web::frame(
            0,
            FrameBody::Queue(Box::new(QueueFrame::QueueChanged(entry))),
        );
        let incoming = crate::web::decode_frame(&push).unwrap();
        assert_eq!(incoming.queue_kind(), "queueChanged");
        let entries = incoming.queue_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].conversation(), id.to_string());
        assert_eq!(entries[0].state(), "handedBack");
        assert_eq!(entries[0].waiting_since(), 9.0);
        let answer = crate::web::frame(
            4,
            FrameBody::Queue(Box::new(QueueFrame::Queue(vec![entry]))),
        );
        assert_eq!(
            crate::web::decode_frame(&answer).unwrap().queue_kind(),
            "queue"
        );
        let claimed = crate::web::frame(
            4,
            FrameBody::Queue(Box::new(QueueFrame::AlreadyClaimed {
                conversation: id,
                epoch: 2,
            })),
        );
        let claimed = crate::web::decode_frame(&claimed).unwrap();
        assert_eq!(claimed.queue_kind(), "alreadyClaimed");
        assert_eq!(claimed.conversation_of(), id.to_string());
        assert!(matches!(
            Frame::from_bytes(&set_on_duty_frame(1, true)).unwrap().body,
            FrameBody::Queue(ref q) if matches!(**q, QueueFrame::SetOnDuty(true))
        ));
        assert!(fetch_device_list_frame(1, "zz").is_err());
    }
}
