//! Clinic conversations for the browser client (`docs/conversations.md`): the patient's device
//! list and opening change, the verified membership history (`MembershipLog`, the very rules the
//! relay and the Rust client apply), the queue frames a patient sends and receives, the
//! conversation payloads (`hushwire::payload`) and the archive seal (`hushwire::archive`).
//! TypeScript holds none of these rules: it hands bytes in and reads verified answers out.

use core::str::FromStr as _;

use hushwire::archive::{ArchivedMessage, seal as archive_seal};
use hushwire::payload::{
    ConversationMessage, MAX_CONVERSATION_CONTENT_LEN, MAX_RECEIPT_IDS, MAX_SHARED_MESSAGES,
    MessageId, Payload, ReceiptStatus, SharedMessage, pad,
};
use hushwire::proto::clinic::DeviceList;
use hushwire::proto::codec::Codec;
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{
    ArchiveEnvelope, ArchivePolicy, ChangeAction, ChangeProposal, ConversationId, MemberRole,
    MembershipChange, MembershipContext, MembershipLog, genesis_hash,
};
use hushwire::proto::keys::Fingerprint;
use hushwire::proto::relay::{DeviceAddress, FrameBody, OutgoingEnvelope};
use hushwire::transcript::ContentType;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::web::{Clinic, Incoming, format_address, frame, hex, millis, parse_address};
use crate::{Account, Error, Result, os_rng, unix_seconds};

/// The largest number of envelopes in one `ConversationSend` frame (as `Send`).
const ENVELOPES_PER_FRAME: usize = 16;

pub(crate) fn conversation_id(bytes: &[u8]) -> Result<ConversationId> {
    bytes
        .try_into()
        .map(ConversationId)
        .map_err(|_| Error::new("a conversation id is 16 bytes"))
}

fn message_id(bytes: &[u8]) -> Result<MessageId> {
    bytes
        .try_into()
        .map(MessageId)
        .map_err(|_| Error::new("a message id is 16 bytes"))
}

/// A whole number in `0..=2^53` from JavaScript (an epoch, a sequence number).
pub(crate) fn whole(n: f64, what: &str) -> Result<u64> {
    unix_seconds(n).map_err(|_| Error::new(format_args!("{what} must be a whole number")))
}

#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

// ---------------------------------------------------------------------------------------------
// The patient's frames
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen]
impl Account {
    /// The `PublishDeviceList` frame: this identity's device list, number `sequence`, naming
    /// this device alone (`docs/clinic.md` §5). A patient publishes it before opening a
    /// conversation: the relay checks the opening change's devices against it (rule 14).
    #[wasm_bindgen(js_name = publishDeviceListFrame)]
    pub fn publish_device_list_frame(&self, request_id: u32, sequence: f64) -> Result<Vec<u8>> {
        let list = DeviceList::issue(
            self.0.identity(),
            self.0.identity_key(),
            whole(sequence, "a device list sequence")?,
            &[self.0.device_id()],
        )
        .map_err(Error::new)?;
        Ok(frame(request_id, FrameBody::PublishDeviceList(list)))
    }

    /// Opens a conversation with `membership`'s clinic: signs the epoch-0 change adding this
    /// device as the patient (rule 8), applies it to `membership` (which must be empty), and
    /// returns the `OpenConversation` frame. The change is then `membership.change(0)`.
    #[wasm_bindgen(js_name = openConversationFrame)]
    pub fn open_conversation_frame(
        &self,
        membership: &mut Membership,
        request_id: u32,
        now_seconds: f64,
    ) -> Result<Vec<u8>> {
        if membership.log.next_epoch() != 0 {
            return Err(Error::new("this conversation is already open"));
        }
        let now = unix_seconds(now_seconds)?;
        let conversation = membership.log.conversation();
        let proposal = ChangeProposal {
            conversation,
            epoch: 0,
            previous_hash: genesis_hash(&conversation, membership.clinic.org()),
            issued_at: now,
            action: ChangeAction::Add,
            role: MemberRole::Patient,
            member: self.0.identity_key().clone(),
            devices: vec![self.0.device_id()],
            member_certificate: None,
        };
        let change = MembershipChange::sign(
            proposal,
            self.0.identity(),
            self.0.identity_key().clone(),
            self.0.device_id(),
            None,
        )
        .map_err(Error::new)?;
        membership.apply_change(change.clone(), now)?;
        Ok(frame(
            request_id,
            FrameBody::Queue(Box::new(QueueFrame::OpenConversation(Box::new(change)))),
        ))
    }
}

/// A fresh random conversation id (16 bytes, `docs/conversations.md` §3).
#[wasm_bindgen(js_name = newConversationId)]
pub fn new_conversation_id() -> Result<Vec<u8>> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| Error::new(format_args!("no secure randomness available: {e}")))?;
    Ok(id.to_vec())
}

/// The `FetchMembership` frame: the conversation's changes from epoch `fromEpoch`.
#[wasm_bindgen(js_name = fetchMembershipFrame)]
pub fn fetch_membership_frame(
    request_id: u32,
    conversation: &[u8],
    from_epoch: f64,
) -> Result<Vec<u8>> {
    Ok(frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::FetchMembership {
            conversation: conversation_id(conversation)?,
            from_epoch: whole(from_epoch, "an epoch")?,
        })),
    ))
}

/// The `ConversationSend` frame (`conversations.md` §5.2): session messages for member devices
/// of the conversation at `epoch` (the sender's verified next epoch). `addresses[i]` receives
/// the `lengths[i]` bytes of `payloads` that follow the earlier ones; 1 to 16 envelopes.
#[wasm_bindgen(js_name = conversationSendFrame)]
pub fn conversation_send_frame(
    request_id: u32,
    conversation: &[u8],
    epoch: f64,
    addresses: Vec<String>,
    payloads: &[u8],
    lengths: &[u32],
) -> Result<Vec<u8>> {
    if lengths.is_empty() || lengths.len() > ENVELOPES_PER_FRAME {
        return Err(Error::new(
            "a ConversationSend frame carries 1 to 16 envelopes",
        ));
    }
    if addresses.len() != lengths.len() {
        return Err(Error::new("one address per envelope"));
    }
    let mut envelopes = Vec::with_capacity(lengths.len());
    let mut rest = payloads;
    for (address, &len) in addresses.iter().zip(lengths) {
        let len = crate::count(len);
        if len > rest.len() {
            return Err(Error::new("the lengths exceed the payloads"));
        }
        let (one, tail) = rest.split_at(len);
        envelopes.push(OutgoingEnvelope {
            recipient: parse_address(address)?,
            payload: one.to_vec(),
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::new("the lengths do not cover the payloads"));
    }
    Ok(frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::ConversationSend {
            conversation: conversation_id(conversation)?,
            epoch: whole(epoch, "an epoch")?,
            envelopes,
        })),
    ))
}

/// The `FetchArchivePolicy` frame (empty body): the clinic's current archive policy.
#[wasm_bindgen(js_name = fetchArchivePolicyFrame)]
pub fn fetch_archive_policy_frame(request_id: u32) -> Vec<u8> {
    frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::FetchArchivePolicy)),
    )
}

// ---------------------------------------------------------------------------------------------
// Queue frames from the relay
// ---------------------------------------------------------------------------------------------

impl Incoming {
    fn queue(&self) -> Option<&QueueFrame> {
        match self.body() {
            FrameBody::Queue(q) => Some(q),
            _ => None,
        }
    }

    fn changes(&self) -> Vec<&MembershipChange> {
        match self.queue() {
            Some(QueueFrame::Membership(changes)) => changes.iter().collect(),
            Some(QueueFrame::MembershipChanged(change)) => vec![change],
            _ => Vec::new(),
        }
    }
}

#[wasm_bindgen]
impl Incoming {
    /// For queue frames: `membership` (an answer to `FetchMembership`), `membershipChanged` (a
    /// push), `archivePolicy`, `queue` (an answer to `FetchQueue`), `queueChanged` (a push to
    /// on-duty agents), `claimed`, `alreadyClaimed`, `archiveItems` (an answer to
    /// `FetchArchive`, read with `ArchiveReading.addItems`), `onDuty` (an answer to
    /// `FetchOnDuty`, read with `onDutyDevices`), or `queueOther`; `""` for other
    /// frames.
    #[wasm_bindgen(getter, js_name = queueKind)]
    pub fn queue_kind(&self) -> String {
        match self.queue() {
            Some(QueueFrame::Membership(_)) => "membership",
            Some(QueueFrame::MembershipChanged(_)) => "membershipChanged",
            Some(QueueFrame::ArchivePolicy(_)) => "archivePolicy",
            Some(QueueFrame::Queue(_)) => "queue",
            Some(QueueFrame::QueueChanged(_)) => "queueChanged",
            Some(QueueFrame::Claimed { .. }) => "claimed",
            Some(QueueFrame::AlreadyClaimed { .. }) => "alreadyClaimed",
            Some(QueueFrame::ArchiveItems { .. }) => "archiveItems",
            Some(QueueFrame::OnDuty(_)) => "onDuty",
            Some(_) => "queueOther",
            None => "",
        }
        .to_owned()
    }

    /// How many membership changes a `membership` answer or a `membershipChanged` push carries.
    #[wasm_bindgen(getter, js_name = changeCount)]
    pub fn change_count(&self) -> u32 {
        crate::to_u32(self.changes().len())
    }

    /// The `index`th change, encoded (apply it with `Membership.apply`); empty past the end.
    pub fn change(&self, index: u32) -> Vec<u8> {
        self.changes()
            .get(crate::count(index))
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }

    /// An `archivePolicy` answer's policy, encoded; empty if the clinic has none.
    #[wasm_bindgen(getter, js_name = archivePolicy)]
    pub fn archive_policy(&self) -> Vec<u8> {
        match self.queue() {
            Some(QueueFrame::ArchivePolicy(Some(p))) => p.to_bytes(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------------

/// A conversation's verified membership history (`docs/conversations.md` §4.3): every change is
/// applied by `hushwire_proto::conversation::MembershipLog::apply`, which refuses the first
/// rule a change breaks and then changes nothing. Keep the changes (`change(i)`) and apply them
/// again, in order, when the conversation is loaded.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Membership {
    pub(crate) clinic: hushwire::proto::clinic::ClinicLink,
    pub(crate) log: MembershipLog,
    /// `states[k]`: the membership after `k` changes (`states[0]` is empty).
    states: Vec<MembershipLog>,
    changes: Vec<MembershipChange>,
}

/// One member identity, as `Membership.members` lists it.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct MemberInfo {
    fingerprint: String,
    role: &'static str,
    name: String,
    devices: Vec<String>,
}

#[wasm_bindgen]
impl MemberInfo {
    /// The identity's fingerprint, 64 hex digits.
    #[wasm_bindgen(getter)]
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    /// `patient`, `agent` or `supervisor`.
    #[wasm_bindgen(getter)]
    pub fn role(&self) -> String {
        self.role.to_owned()
    }
    /// For staff, the name of the clinic certificate the change adding them carried (verified
    /// under the clinic's key by rule 7); empty for the patient.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }
    /// The member devices, as addresses (`fingerprint:deviceId`).
    #[wasm_bindgen(getter)]
    pub fn devices(&self) -> Vec<String> {
        self.devices.clone()
    }
}

#[wasm_bindgen]
impl Membership {
    /// An empty history of conversation `conversationId` (16 bytes) with `clinic`.
    #[wasm_bindgen(constructor)]
    pub fn new(clinic: &Clinic, conversation_id: &[u8]) -> Result<Membership> {
        let log = MembershipLog::new(
            self::conversation_id(conversation_id)?,
            *clinic.link().org(),
        );
        Ok(Self {
            clinic: clinic.link().clone(),
            states: vec![log.clone()],
            log,
            changes: Vec::new(),
        })
    }

    /// The conversation id, 32 hex digits.
    #[wasm_bindgen(getter, js_name = conversationHex)]
    pub fn conversation_hex(&self) -> String {
        self.log.conversation().to_string()
    }

    /// The conversation id, 16 bytes.
    #[wasm_bindgen(getter, js_name = conversationId)]
    pub fn conversation_id_bytes(&self) -> Vec<u8> {
        self.log.conversation().0.to_vec()
    }

    /// The epoch the next change must carry: the number of changes verified. A message is sent
    /// at this epoch.
    #[wasm_bindgen(getter, js_name = nextEpoch)]
    pub fn next_epoch(&self) -> f64 {
        to_f64(self.log.next_epoch())
    }

    /// Whether an agent is on the conversation (else it waits in the clinic's queue).
    #[wasm_bindgen(getter, js_name = isClaimed)]
    pub fn is_claimed(&self) -> bool {
        self.log.is_claimed()
    }

    /// Verifies the encoded change `change` as the next one at `nowSeconds` and keeps it.
    /// Throws, keeping nothing, for bytes that are not a change or a change a rule refuses
    /// (the message names the rule).
    pub fn apply(&mut self, change: &[u8], now_seconds: f64) -> Result<()> {
        let change = MembershipChange::from_bytes(change).map_err(Error::new)?;
        self.apply_change(change, unix_seconds(now_seconds)?)
    }

    /// The `index`th verified change, encoded (what to store); empty past the end.
    pub fn change(&self, index: u32) -> Vec<u8> {
        self.changes
            .get(crate::count(index))
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }

    /// The members now, in the order they joined.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members_at(self.log.next_epoch())
    }

    /// The member devices now other than `own` (an address): where a message fans out to.
    #[wasm_bindgen(js_name = recipients)]
    pub fn recipients(&self, own: &str) -> Result<Vec<String>> {
        let own = parse_address(own)?;
        Ok(self
            .log
            .members()
            .iter()
            .flat_map(|m| {
                let fingerprint = m.identity().fingerprint();
                m.devices().iter().map(move |&device_id| DeviceAddress {
                    fingerprint: fingerprint.0,
                    device_id,
                })
            })
            .filter(|a| *a != own)
            .map(|a| format_address(&a))
            .collect())
    }

    /// Whether the device `address` was a member that writes (patient or agent) at `epoch`
    /// (after that many changes). False for an epoch not verified yet.
    #[wasm_bindgen(js_name = writerAt)]
    pub fn writer_at(&self, epoch: f64, address: &str) -> Result<bool> {
        let address = parse_address(address)?;
        Ok(self.writes_at(whole(epoch, "an epoch")?, &address))
    }

    /// Whether an agent was on the conversation at `epoch` (false for an epoch not verified
    /// yet): a patient's messages written at an epoch without one are shared with the agent who
    /// claims (§4.5).
    #[wasm_bindgen(js_name = agentOnAt)]
    pub fn agent_on_at(&self, epoch: f64) -> Result<bool> {
        Ok(self.state(epoch)?.is_some_and(MembershipLog::is_claimed))
    }

    /// The name of staff member `fingerprintHex` (from the certificate its adding change
    /// carried); empty if none is known.
    #[wasm_bindgen(js_name = staffName)]
    pub fn staff_name(&self, fingerprint_hex: &str) -> String {
        self.name_of(&fingerprint_hex.trim().to_ascii_lowercase())
    }

    /// A one-line account of change `index`. Without `staffFingerprint`, for the patient: who
    /// joined or left, with the staff member's certified name and the clinic's name ("Dr. Ada —
    /// verified agent of Lakeside Clinic joined the conversation"). With it (64 hex digits, the
    /// viewing staff member's identity), for the agent console: the patient's changes are told
    /// in the third person and the viewer's own as "You (…)". A supervisor's joining and leaving
    /// are told as "… is reading along (read only)" and "… stopped reading along".
    pub fn describe(&self, index: u32, staff_fingerprint: Option<String>) -> String {
        let Some(change) = self.changes.get(crate::count(index)) else {
            return String::new();
        };
        let viewer = staff_fingerprint.map(|f| f.trim().to_ascii_lowercase());
        let fingerprint = change.member().fingerprint().to_string();
        let who = match change.role() {
            MemberRole::Patient => {
                let staff = viewer.is_some();
                return match (change.action(), change.epoch(), staff) {
                    (_, 0, false) => {
                        "You opened the conversation; it waits for the clinic's next agent"
                            .to_owned()
                    }
                    (_, 0, true) => "The patient opened the conversation".to_owned(),
                    (ChangeAction::Add, _, false) => {
                        "You added a device to the conversation".to_owned()
                    }
                    (ChangeAction::Add, _, true) => {
                        "The patient added a device to the conversation".to_owned()
                    }
                    (ChangeAction::Remove, _, false) => {
                        "You removed a device from the conversation".to_owned()
                    }
                    (ChangeAction::Remove, _, true) => {
                        "The patient removed a device from the conversation".to_owned()
                    }
                };
            }
            MemberRole::Agent => format!(
                "{} — verified agent of {}",
                self.name_of(&fingerprint),
                self.clinic.name()
            ),
            MemberRole::Supervisor => format!(
                "{} — verified supervisor of {}",
                self.name_of(&fingerprint),
                self.clinic.name()
            ),
        };
        let own = viewer.as_deref() == Some(fingerprint.as_str());
        let who = if own { format!("You ({who})") } else { who };
        // A supervisor reads along (read-only, §5.1 step 5): said so, to the patient too.
        match (change.action(), change.role(), own) {
            (ChangeAction::Add, MemberRole::Supervisor, false) => {
                format!("{who} is reading along (read only)")
            }
            (ChangeAction::Add, MemberRole::Supervisor, true) => {
                format!("{who} are reading along (read only)")
            }
            (ChangeAction::Remove, MemberRole::Supervisor, _) => {
                format!("{who} stopped reading along")
            }
            (ChangeAction::Add, _, _) => format!("{who} joined the conversation"),
            (ChangeAction::Remove, _, _) => format!("{who} left the conversation"),
        }
    }
}

impl Membership {
    pub(crate) fn apply_change(&mut self, change: MembershipChange, now: u64) -> Result<()> {
        let ctx = MembershipContext {
            revocations: None,
            patient_devices: None,
            now,
        };
        self.log.apply(&change, &ctx).map_err(|e| {
            Error::new(format_args!(
                "membership change refused ({}): {e}",
                e.rule()
            ))
        })?;
        self.states.push(self.log.clone());
        self.changes.push(change);
        Ok(())
    }

    /// Whether device `address` was a member that writes (patient or agent) after the first
    /// `epoch` changes; false for an epoch not verified yet.
    pub(crate) fn writes_at(&self, epoch: u64, address: &DeviceAddress) -> bool {
        let Some(state) = usize::try_from(epoch).ok().and_then(|e| self.states.get(e)) else {
            return false;
        };
        state.members().iter().any(|m| {
            m.role().can_write()
                && m.identity().fingerprint().0 == address.fingerprint
                && m.devices().contains(&address.device_id)
        })
    }

    /// How someone who is or was a member is named, as the Rust client's archive reader names
    /// them (`Conv::shown_ever`): staff by the certificate their last adding change carried
    /// ("Name — verified agent of Clinic"), the patient as "patient".
    pub(crate) fn shown_ever(&self, who: &Fingerprint) -> String {
        let staff = self.changes.iter().rev().find_map(|c| {
            c.member_certificate()
                .filter(|cert| cert.subject().fingerprint() == *who)
                .map(|cert| (cert.name().to_owned(), c.role()))
        });
        if let Some((name, role)) = staff {
            let role = match role {
                MemberRole::Supervisor => "supervisor",
                _ => "agent",
            };
            return format!("{name} — verified {role} of {}", self.clinic.name());
        }
        if self.log.patient().as_ref() == Some(who) {
            return "patient".into();
        }
        "a member whose name is not known here".into()
    }

    fn state(&self, epoch: f64) -> Result<Option<&MembershipLog>> {
        let epoch = whole(epoch, "an epoch")?;
        Ok(usize::try_from(epoch).ok().and_then(|e| self.states.get(e)))
    }

    pub(crate) fn name_of(&self, fingerprint_hex: &str) -> String {
        self.changes
            .iter()
            .rev()
            .filter_map(|c| c.member_certificate())
            .find(|cert| cert.subject().fingerprint().to_string() == fingerprint_hex)
            .map(|cert| cert.name().to_owned())
            .unwrap_or_default()
    }

    fn members_at(&self, epoch: u64) -> Vec<MemberInfo> {
        let Some(state) = usize::try_from(epoch).ok().and_then(|e| self.states.get(e)) else {
            return Vec::new();
        };
        state
            .members()
            .iter()
            .map(|m| {
                let fingerprint = m.identity().fingerprint();
                MemberInfo {
                    fingerprint: fingerprint.to_string(),
                    role: match m.role() {
                        MemberRole::Patient => "patient",
                        MemberRole::Agent => "agent",
                        MemberRole::Supervisor => "supervisor",
                    },
                    name: if m.role().is_staff() {
                        self.name_of(&fingerprint.to_string())
                    } else {
                        String::new()
                    },
                    devices: m
                        .devices()
                        .iter()
                        .map(|&device_id| {
                            format_address(&DeviceAddress {
                                fingerprint: fingerprint.0,
                                device_id,
                            })
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Conversation payloads (docs/conversations.md §8, encoded by hushwire::payload)
// ---------------------------------------------------------------------------------------------

fn text_message(
    conversation: ConversationId,
    epoch: u64,
    id: MessageId,
    sent_at_ms: u64,
    text: &str,
) -> Result<ConversationMessage> {
    if text.len() > MAX_CONVERSATION_CONTENT_LEN {
        return Err(Error::new("the message is too long"));
    }
    Ok(ConversationMessage {
        conversation,
        epoch,
        id,
        sent_at_ms,
        content_type: ContentType::Text,
        content: Zeroizing::new(text.as_bytes().to_vec()),
    })
}

/// A conversation message payload (kind `0x05`), padded, ready for `Session.encrypt`: text
/// `text` written at membership epoch `epoch`. `messageId` is 16 random bytes.
#[wasm_bindgen(js_name = encodeConversationMessage)]
pub fn encode_conversation_message(
    conversation: &[u8],
    epoch: f64,
    message_id: &[u8],
    sent_at_ms: f64,
    text: &str,
) -> Result<Vec<u8>> {
    let message = text_message(
        conversation_id(conversation)?,
        whole(epoch, "an epoch")?,
        self::message_id(message_id)?,
        millis(sent_at_ms)?,
        text,
    )?;
    Ok(pad(&Payload::ConversationMessage(message).encode()).to_vec())
}

/// A recall (kind `0x07`, §8.3) of this device's own message `messageId` (16 bytes), padded;
/// `recalledAtMs` is this device's clock (shown, not trusted). Members apply it only from the
/// message's sender within `recallWindowMs` on the relay's times.
#[wasm_bindgen(js_name = encodeRecall)]
pub fn encode_recall(
    conversation: &[u8],
    message_id: &[u8],
    recalled_at_ms: f64,
) -> Result<Vec<u8>> {
    Ok(pad(&Payload::Recall {
        conversation: conversation_id(conversation)?,
        id: self::message_id(message_id)?,
        recalled_at_ms: millis(recalled_at_ms)?,
    }
    .encode())
    .to_vec())
}

/// A delivered receipt (kind `0x06`) for messages of the conversation whose ids are given as
/// 32-hex-digit strings (1 to 256).
#[wasm_bindgen(js_name = encodeConversationReceipt)]
pub fn encode_conversation_receipt(
    conversation: &[u8],
    message_ids: Vec<String>,
) -> Result<Vec<u8>> {
    receipt(conversation, &message_ids, ReceiptStatus::Delivered)
}

/// A read receipt (kind `0x06`, status `0x02`, §8.2): the messages (32-hex-digit ids, 1 to 256)
/// were shown on this device's screen while it was visible.
#[wasm_bindgen(js_name = encodeConversationReadReceipt)]
pub fn encode_conversation_read_receipt(
    conversation: &[u8],
    message_ids: Vec<String>,
) -> Result<Vec<u8>> {
    receipt(conversation, &message_ids, ReceiptStatus::Read)
}

fn receipt(conversation: &[u8], message_ids: &[String], status: ReceiptStatus) -> Result<Vec<u8>> {
    if message_ids.is_empty() || message_ids.len() > MAX_RECEIPT_IDS {
        return Err(Error::new("a receipt names 1 to 256 messages"));
    }
    let ids = message_ids
        .iter()
        .map(|s| MessageId::from_str(s).map_err(Error::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(pad(&Payload::ConversationReceipt {
        conversation: conversation_id(conversation)?,
        status,
        ids,
    }
    .encode())
    .to_vec())
}

/// A history share (kind `0x08`, §4.5, §8.4) of text messages all sent by `sender` (an
/// address): message `i` has the 16 bytes at `16 i` of `messageIds`, `epochs[i]`,
/// `sentAtMs[i]` and `texts[i]`. 1 to 64 messages, whose payload must fit one session message
/// (keep their texts under about 60 000 bytes together).
#[wasm_bindgen(js_name = encodeHistoryShare)]
pub fn encode_history_share(
    conversation: &[u8],
    sender: &str,
    message_ids: &[u8],
    epochs: &[f64],
    sent_at_ms: &[f64],
    texts: Vec<String>,
) -> Result<Vec<u8>> {
    let senders = vec![sender.to_owned(); texts.len()];
    history_share(
        conversation,
        &senders,
        message_ids,
        epochs,
        sent_at_ms,
        &texts,
    )
}

/// A history share as `encodeHistoryShare`, each message with its own sender (`senders[i]`, an
/// address): what an agent handing a conversation over shares — the patient's messages and its
/// own (`hushwire handoff` shares the conversation so far).
#[wasm_bindgen(js_name = encodeHistoryShareFrom)]
pub fn encode_history_share_from(
    conversation: &[u8],
    senders: Vec<String>,
    message_ids: &[u8],
    epochs: &[f64],
    sent_at_ms: &[f64],
    texts: Vec<String>,
) -> Result<Vec<u8>> {
    history_share(
        conversation,
        &senders,
        message_ids,
        epochs,
        sent_at_ms,
        &texts,
    )
}

fn history_share(
    conversation: &[u8],
    senders: &[String],
    message_ids: &[u8],
    epochs: &[f64],
    sent_at_ms: &[f64],
    texts: &[String],
) -> Result<Vec<u8>> {
    let n = texts.len();
    if n == 0 || n > MAX_SHARED_MESSAGES {
        return Err(Error::new("a history share carries 1 to 64 messages"));
    }
    if message_ids.len() != 16 * n
        || epochs.len() != n
        || sent_at_ms.len() != n
        || senders.len() != n
    {
        return Err(Error::new(
            "one sender, id, epoch, time and text per shared message",
        ));
    }
    let conversation = conversation_id(conversation)?;
    let mut messages = Vec::with_capacity(n);
    for (i, text) in texts.iter().enumerate() {
        let id = message_ids
            .get(16 * i..16 * i + 16)
            .ok_or_else(|| Error::new("message ids are 16 bytes each"))?;
        let epoch = *epochs.get(i).ok_or_else(|| Error::new("missing epoch"))?;
        let at = *sent_at_ms
            .get(i)
            .ok_or_else(|| Error::new("missing time"))?;
        let sender = senders.get(i).ok_or_else(|| Error::new("missing sender"))?;
        messages.push(SharedMessage {
            sender: parse_address(sender)?,
            message: text_message(
                conversation,
                whole(epoch, "an epoch")?,
                message_id(id)?,
                millis(at)?,
                text,
            )?,
        });
    }
    let encoded = Payload::HistoryShare {
        conversation,
        messages,
    }
    .encode();
    if encoded.len() > hushwire::wire::MAX_PLAINTEXT_LEN {
        return Err(Error::new("the shared messages do not fit one payload"));
    }
    Ok(pad(&encoded).to_vec())
}

/// One message of a history share, as the receiver reads it.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct SharedText {
    sender: String,
    epoch: u64,
    message_id: String,
    sent_at_ms: u64,
    text: String,
}

#[wasm_bindgen]
impl SharedText {
    /// The device that sent it, as the sharer states (`fingerprint:deviceId`).
    #[wasm_bindgen(getter)]
    pub fn sender(&self) -> String {
        self.sender.clone()
    }
    /// The epoch it was written at.
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> f64 {
        to_f64(self.epoch)
    }
    /// Its id, 32 hex digits.
    #[wasm_bindgen(getter, js_name = messageId)]
    pub fn message_id(&self) -> String {
        self.message_id.clone()
    }
    /// Its sender's clock, Unix milliseconds.
    #[wasm_bindgen(getter, js_name = sentAtMs)]
    pub fn sent_at_ms(&self) -> f64 {
        to_f64(self.sent_at_ms)
    }
    /// Its text (invalid UTF-8 replaced). Display it as text, never as HTML.
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        self.text.clone()
    }
}

impl SharedText {
    pub(crate) fn from_shared(s: &SharedMessage) -> Self {
        Self {
            sender: format_address(&s.sender),
            epoch: s.message.epoch,
            message_id: s.message.id.to_string(),
            sent_at_ms: s.message.sent_at_ms,
            text: String::from_utf8_lossy(&s.message.content).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clinic archive (docs/conversations.md §7)
// ---------------------------------------------------------------------------------------------

/// The clinic's archive private key, opened from the file `hushwire org archive-policy` wrote
/// (`conversations.md` §7.5). The key stays inside WebAssembly: JavaScript holds only this
/// handle (free it when done), and sees the public key.
#[wasm_bindgen]
pub struct ArchiveKey(hushwire::archive::ArchiveSecretKey);

impl ArchiveKey {
    /// The private key, for the archive reader (`crate::archive`); never handed to JavaScript.
    pub(crate) fn secret(&self) -> &hushwire::archive::ArchiveSecretKey {
        &self.0
    }

    /// A handle on `key` (native tests; JavaScript opens a key file with `openFile`).
    #[cfg(test)]
    pub(crate) fn from_secret(key: hushwire::archive::ArchiveSecretKey) -> Self {
        Self(key)
    }
}

#[wasm_bindgen]
impl ArchiveKey {
    /// Opens an archive key file (`archive-key-SEQUENCE.sealed`) with its passphrase (Argon2id
    /// at the cost the file names, bounded). The passphrase is zeroized once used, never kept.
    /// Throws, in plain words, on a wrong passphrase or a file that is not an archive key file.
    #[wasm_bindgen(js_name = openFile)]
    pub fn open_file(file: &[u8], passphrase: String) -> Result<ArchiveKey> {
        use hushwire::sealed_file::{SealedFileError, Secret};
        let secret = Secret::Passphrase(Zeroizing::new(passphrase));
        let seed = hushwire::sealed_file::open(
            &secret,
            hushwire::archive::ARCHIVE_KEY_FILE_PURPOSE,
            file,
        )
        .map_err(|e| match e {
            SealedFileError::WrongSecret => Error::new(
                "wrong passphrase: the archive key file did not open. It is sealed under the \
                 archive passphrase chosen at `hushwire org archive-policy`, not the \
                 organization key's nor a device's",
            ),
            _ => Error::new(
                "this is not an archive key file (`hushwire org archive-policy` writes \
                 archive-key-SEQUENCE.sealed), or it is damaged",
            ),
        })?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| Error::new("the archive key file is damaged"))?,
        );
        hushwire::archive::ArchiveSecretKey::from_secret_bytes(*seed)
            .map(ArchiveKey)
            .ok_or_else(|| Error::new("the archive key file is damaged"))
    }

    /// The archive public key (32 bytes), as an archive policy names it.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public().as_bytes().to_vec()
    }

    /// Whether the encoded archive policy `policy` names this key (its signature is checked
    /// separately, with `Clinic.verifyArchivePolicy`).
    #[wasm_bindgen(js_name = matchesPolicy)]
    pub fn matches_policy(&self, policy: &[u8]) -> Result<bool> {
        let policy = ArchivePolicy::from_bytes(policy).map_err(Error::new)?;
        Ok(policy.archive_key() == self.0.public())
    }
}

#[wasm_bindgen]
impl Clinic {
    /// Checks an encoded archive policy (`Incoming.archivePolicy`) under this clinic's
    /// organization key (§7.1) and returns its sequence. Throws if it is malformed or does not
    /// verify: a relay cannot substitute its own archive key.
    #[wasm_bindgen(js_name = verifyArchivePolicy)]
    pub fn verify_archive_policy(&self, policy: &[u8]) -> Result<f64> {
        let policy = ArchivePolicy::from_bytes(policy).map_err(Error::new)?;
        if !policy.verify(self.link().org()) {
            return Err(Error::new(
                "the archive policy is not signed by this clinic",
            ));
        }
        Ok(to_f64(policy.sequence()))
    }

    /// Seals the padded conversation payload `payload` that `sender` (this device's address)
    /// wrote at `epoch` to the archive key of `policy` (which must verify under this clinic,
    /// §7.3), and returns the encoded archive envelope (§7.2). The seal draws a fresh ephemeral
    /// key, so every call gives different bytes: a client seals each copy **once**, stores the
    /// envelope, and files exactly those bytes on every attempt (`putArchiveEnvelopeFrame`), so
    /// a retry after a lost `Ok` is the same envelope, which the relay can recognise.
    /// Throws, in words, on a malformed or foreign policy, a malformed address or conversation
    /// id, or a payload too long to seal.
    #[wasm_bindgen(js_name = sealArchiveEnvelope)]
    pub fn seal_archive_envelope(
        &self,
        policy: &[u8],
        conversation: &[u8],
        sender: &str,
        epoch: f64,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let policy = ArchivePolicy::from_bytes(policy).map_err(Error::new)?;
        if !policy.verify(self.link().org()) {
            return Err(Error::new(
                "the archive policy is not signed by this clinic",
            ));
        }
        let sender = parse_address(sender)?;
        let envelope = archive_seal(
            &policy,
            conversation_id(conversation)?,
            &ArchivedMessage {
                sender: Fingerprint(sender.fingerprint),
                sender_device: sender.device_id,
                epoch: whole(epoch, "an epoch")?,
                payload: payload.to_vec(),
            },
            &mut os_rng()?,
        )
        .map_err(|e| Error::new(format_args!("the archive copy could not be sealed: {e}")))?;
        Ok(envelope.to_bytes())
    }
}

/// The `PutArchive` frame (§5.2) filing the encoded archive envelope `envelope` (from
/// `Clinic.sealArchiveEnvelope`) byte for byte: nothing is sealed again, so every attempt to
/// file one copy sends the same envelope. Throws, in words, if `envelope` is not a well-formed
/// archive envelope.
#[wasm_bindgen(js_name = putArchiveEnvelopeFrame)]
pub fn put_archive_envelope_frame(request_id: u32, envelope: &[u8]) -> Result<Vec<u8>> {
    let decoded = ArchiveEnvelope::from_bytes(envelope)
        .map_err(|e| Error::new(format_args!("this is not an archive envelope: {e}")))?;
    // The frame carries the envelope's encoding; only bytes that encode back to themselves are
    // accepted, so what is filed is exactly what was stored.
    if decoded.to_bytes() != envelope {
        return Err(Error::new(
            "this is not an archive envelope in its one encoding",
        ));
    }
    Ok(frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::PutArchive(Box::new(decoded)))),
    ))
}

/// How long after a message its sender may recall it, judged on the relay's times
/// (`docs/conversations.md` §8.3): `hushwire::payload::RECALL_WINDOW_MS`.
#[wasm_bindgen(js_name = recallWindowMs)]
pub fn recall_window_ms() -> f64 {
    to_f64(hushwire::payload::RECALL_WINDOW_MS)
}

/// The hex id of a conversation, for callers comparing with `DecodedPayload.conversation`.
#[wasm_bindgen(js_name = conversationHex)]
pub fn conversation_hex(conversation: &[u8]) -> Result<String> {
    Ok(hex(&conversation_id(conversation)?.0))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::web::decode_payload;
    use hushwire::proto::clinic::{AgentCertificate, ClinicLink, Role, Roles};
    use hushwire::proto::relay::Frame;

    const NOW: u64 = 1_800_000_000;

    fn clinic_and_org() -> (Clinic, hushwire::IdentityKeyPair) {
        let org = hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap());
        let link =
            ClinicLink::issue(&org, "Test Clinic", "ws://127.0.0.1:7700/v1/websocket").unwrap();
        (Clinic::parse(&link.to_string()).unwrap(), org)
    }

    /// The claim an agent's client would make (`hushwire claim`), signed with its certificate.
    pub(crate) fn claim(
        membership: &Membership,
        agent: &Account,
        org: &hushwire::IdentityKeyPair,
        name: &str,
    ) -> Vec<u8> {
        let cert = AgentCertificate::issue(
            org,
            7,
            agent.0.identity_key().clone(),
            name,
            Roles::of(&[Role::Agent]).unwrap(),
            NOW - 60,
            NOW + 86_400,
        )
        .unwrap();
        let proposal = ChangeProposal {
            conversation: membership.log.conversation(),
            epoch: membership.log.next_epoch(),
            previous_hash: membership.log.head(),
            issued_at: NOW,
            action: ChangeAction::Add,
            role: MemberRole::Agent,
            member: agent.0.identity_key().clone(),
            devices: vec![agent.device_id()],
            member_certificate: Some(cert.clone()),
        };
        MembershipChange::sign(
            proposal,
            agent.0.identity(),
            agent.0.identity_key().clone(),
            agent.device_id(),
            Some(cert),
        )
        .unwrap()
        .to_bytes()
    }

    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn a_patient_opens_an_agent_claims_and_the_membership_is_verified() {
        let (clinic, org) = clinic_and_org();
        let patient = Account::new(1, NOW as f64).unwrap();
        let agent = Account::new(1, NOW as f64).unwrap();
        let id = new_conversation_id().unwrap();
        let mut membership = Membership::new(&clinic, &id).unwrap();

        let list = patient.publish_device_list_frame(3, 1.0).unwrap();
        assert!(matches!(
            Frame::from_bytes(&list).unwrap().body,
            FrameBody::PublishDeviceList(ref l) if l.devices() == [1]
        ));
        let open = patient
            .open_conversation_frame(&mut membership, 4, NOW as f64)
            .unwrap();
        let FrameBody::Queue(q) = Frame::from_bytes(&open).unwrap().body else {
            panic!("not a queue frame");
        };
        assert!(matches!(*q, QueueFrame::OpenConversation(_)));
        assert!(
            patient
                .open_conversation_frame(&mut membership, 5, NOW as f64)
                .is_err()
        );
        assert_eq!(membership.next_epoch(), 1.0);
        assert!(!membership.is_claimed());
        assert!(
            membership
                .recipients(&patient.address())
                .unwrap()
                .is_empty()
        );
        assert!(membership.describe(0, None).contains("waits"));

        let claim_bytes = claim(&membership, &agent, &org, "Dr. Ada");
        membership.apply(&claim_bytes, NOW as f64).unwrap();
        assert!(membership.is_claimed());
        assert_eq!(
            membership.describe(1, None),
            "Dr. Ada — verified agent of Test Clinic joined the conversation"
        );
        assert_eq!(
            membership.recipients(&patient.address()).unwrap(),
            vec![agent.address()]
        );
        assert!(!membership.writer_at(1.0, &agent.address()).unwrap());
        assert!(membership.writer_at(2.0, &agent.address()).unwrap());
        assert!(!membership.writer_at(3.0, &agent.address()).unwrap());
        assert!(!membership.agent_on_at(1.0).unwrap());
        assert!(membership.agent_on_at(2.0).unwrap());
        let members = membership.members();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].name(), "Dr. Ada");
        assert_eq!(members[1].role(), "agent");

        // A replay is refused by the rules and changes nothing; so is garbage.
        let err = membership.apply(&claim_bytes, NOW as f64).unwrap_err();
        assert!(err.message().contains("refused"), "{err}");
        assert!(membership.apply(&[1, 2, 3], NOW as f64).is_err());
        assert_eq!(membership.next_epoch(), 2.0);

        // A change of another clinic (a claim signed under a foreign organization) is refused.
        let (other_clinic, other_org) = clinic_and_org();
        let _ = other_clinic;
        let mut again = Membership::new(&clinic, &id).unwrap();
        again.apply(&membership.change(0), NOW as f64).unwrap();
        let foreign = claim(&again, &agent, &other_org, "Mallory");
        assert!(again.apply(&foreign, NOW as f64).is_err());
        assert!(!again.is_claimed());

        // Stored changes verify again in a new history.
        let mut reloaded = Membership::new(&clinic, &id).unwrap();
        for i in 0..2 {
            reloaded.apply(&membership.change(i), NOW as f64).unwrap();
        }
        assert_eq!(reloaded.staff_name(&agent.fingerprint()), "Dr. Ada");
    }

    #[test]
    fn conversation_payloads_and_frames_round_trip() {
        let id = [7u8; 16];
        let msg = encode_conversation_message(&id, 2.0, &[1; 16], 1234.0, "<b>hi</b>").unwrap();
        let p = decode_payload(&msg).unwrap();
        assert_eq!(p.kind(), "conversationMessage");
        assert_eq!(p.text(), "<b>hi</b>");
        assert_eq!(p.epoch(), 2.0);
        assert_eq!(p.conversation(), hex(&id));
        let r = decode_payload(&encode_conversation_receipt(&id, vec![hex(&[1; 16])]).unwrap())
            .unwrap();
        assert_eq!(r.kind(), "conversationDelivered");
        assert_eq!(r.receipt_ids(), vec![hex(&[1; 16])]);
        let sender = format!("{}:1", hex(&[9; 32]));
        let share = encode_history_share(
            &id,
            &sender,
            &[[1u8; 16], [2u8; 16]].concat(),
            &[1.0, 1.0],
            &[10.0, 20.0],
            vec!["first".into(), "second".into()],
        )
        .unwrap();
        let s = decode_payload(&share).unwrap();
        assert_eq!(s.kind(), "historyShare");
        let shared = s.shared();
        assert_eq!(shared.len(), 2);
        assert_eq!(shared[1].text(), "second");
        assert_eq!(shared[0].sender(), sender);
        assert!(
            encode_history_share(
                &id,
                &sender,
                &[1; 16],
                &[1.0, 2.0],
                &[1.0],
                vec!["x".into()]
            )
            .is_err()
        );
        assert!(encode_history_share(&id, &sender, &[], &[], &[], vec![]).is_err());
        assert!(encode_conversation_message(&id[..15], 1.0, &[1; 16], 1.0, "x").is_err());
        assert!(encode_conversation_message(&id, -1.0, &[1; 16], 1.0, "x").is_err());

        let send = conversation_send_frame(
            9,
            &id,
            3.0,
            vec![sender.clone(), sender.clone()],
            b"abc",
            &[1, 2],
        )
        .unwrap();
        let FrameBody::Queue(q) = Frame::from_bytes(&send).unwrap().body else {
            panic!("not a queue frame");
        };
        let QueueFrame::ConversationSend {
            epoch, envelopes, ..
        } = *q
        else {
            panic!("not ConversationSend");
        };
        assert_eq!(epoch, 3);
        assert_eq!(envelopes[1].payload, b"bc");
        assert!(
            conversation_send_frame(9, &id, 3.0, vec![sender.clone()], b"abc", &[1, 2]).is_err()
        );
        assert!(conversation_send_frame(9, &id, 3.0, vec![], b"", &[]).is_err());
        assert!(fetch_membership_frame(1, &id, 0.5).is_err());
        assert!(!fetch_archive_policy_frame(1).is_empty());
    }

    /// An archive copy is sealed once and its bytes filed as they are: every `PutArchive` frame
    /// made from them carries the very same envelope (a retry is recognisable), while each
    /// seal is fresh; bytes that are not an envelope, or a policy of another clinic, are
    /// refused in words.
    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn an_archive_copy_is_sealed_once_and_filed_byte_for_byte() {
        let (clinic, org) = clinic_and_org();
        let secret = hushwire::archive::ArchiveSecretKey::generate(&mut os_rng().unwrap());
        let policy = ArchivePolicy::issue(&org, 1, *secret.public(), 30).unwrap();
        let patient = Account::new(1, NOW as f64).unwrap();
        let id = new_conversation_id().unwrap();
        let payload = encode_conversation_message(&id, 0.0, &[7; 16], 1.0, "rash").unwrap();
        let me = patient.address();
        let sealed = clinic
            .seal_archive_envelope(&policy.to_bytes(), &id, &me, 0.0, &payload)
            .unwrap();
        let again = clinic
            .seal_archive_envelope(&policy.to_bytes(), &id, &me, 0.0, &payload)
            .unwrap();
        assert_ne!(sealed, again, "each seal draws a fresh ephemeral key");

        let frames = [
            put_archive_envelope_frame(5, &sealed).unwrap(),
            put_archive_envelope_frame(6, &sealed).unwrap(),
        ];
        for f in &frames {
            let FrameBody::Queue(q) = Frame::from_bytes(f).unwrap().body else {
                panic!("not a queue frame");
            };
            let QueueFrame::PutArchive(envelope) = *q else {
                panic!("not PutArchive");
            };
            assert_eq!(envelope.to_bytes(), sealed);
            let opened = secret.open(&envelope).unwrap();
            assert_eq!(opened.payload, payload);
            assert_eq!(opened.epoch, 0);
        }
        assert_eq!(
            frames[0][6..],
            frames[1][6..],
            "the same bytes on every attempt"
        );

        let bad = put_archive_envelope_frame(1, &sealed[..40]).unwrap_err();
        assert!(bad.to_string().contains("not an archive envelope"), "{bad}");
        let mut trailing = sealed.clone();
        trailing.push(0);
        assert!(put_archive_envelope_frame(1, &trailing).is_err());
        let (other, _) = clinic_and_org();
        let foreign = other
            .seal_archive_envelope(&policy.to_bytes(), &id, &me, 0.0, &payload)
            .unwrap_err();
        assert!(
            foreign.to_string().contains("not signed by this clinic"),
            "{foreign}"
        );
        assert!(
            clinic
                .seal_archive_envelope(&policy.to_bytes(), &id[..15], &me, 0.0, &payload)
                .is_err()
        );
    }
}
