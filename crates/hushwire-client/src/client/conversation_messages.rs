//! Messages in clinic conversations (`docs/conversations.md` §2, §7.3, §8): a message is
//! encrypted once per other member device over the pairwise sessions (fan-out to the membership
//! this device verified), sent in `ConversationSend` at the relay's head epoch, and copied to the
//! clinic's archive key; receipts are kept per member device and a sender may recall a message
//! within ten minutes.
//!
//! Every step is stored before it is acted on, as for two-party messages: a message is recorded
//! and its envelopes queued in the outbox in one transaction (§5.1 of `client.md`); a received
//! conversation payload is stored with its delivery (table `conversation_inbound`) and acted on
//! once the membership it names is verified, fetching the history first when needed; an archive
//! copy waits (table `archive_outbox`) until the clinic's signed archive policy is known.

use hushwire::payload::{
    ConversationMessage, MAX_CONVERSATION_CONTENT_LEN, Payload, RECALL_WINDOW_MS, ReceiptStatus,
};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{
    ArchiveEnvelope, ArchivePolicy, ChangeAction, ConversationId, MemberRole, MembershipChange,
};
use hushwire::proto::keys::Fingerprint;
use hushwire::proto::relay::{ErrorCode, FrameBody, OutgoingEnvelope};
use hushwire::transcript::ContentType;
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use zeroize::Zeroizing;

use super::Client;
use super::conversations::Conv;
use crate::address::Address;
use crate::contact::{ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::event::{Event, MessageId};
use crate::link::Link;
use crate::os::{now_ms, rng};
use crate::store::{self, WorkQueue};

/// A conversation message as this device keeps it (sealed in `conversation_messages`).
#[derive(Clone, Serialize, Deserialize)]
struct MessageRecord {
    sender: [u8; 32],
    sender_device: u32,
    outgoing: bool,
    /// 0: a message; 1: a staff note (shown to staff only).
    kind: u8,
    epoch: u64,
    id: [u8; 16],
    sent_at_ms: u64,
    received_at_ms: u64,
    /// The relay's time of the delivery (this device's clock for its own messages): a recall
    /// is judged on it (§8.3).
    server_time_ms: u64,
    content_type: u8,
    content: Zeroizing<Vec<u8>>,
    /// `(member fingerprint, device, status)`, status 1 delivered, 2 read.
    receipts: Vec<([u8; 32], u32, u8)>,
    /// Who recalled it and when (relay time), if recalled.
    recalled: Option<([u8; 32], u64)>,
    /// For a message received in a history share (§4.5): the member who shared it. Its
    /// content is that member's word, not the sender's.
    shared_by: Option<[u8; 32]>,
}

impl MessageRecord {
    /// A message of kind `0x05` that `from` sent, received in `item` (directly, or in a share
    /// by `shared_by`).
    fn of(
        m: &ConversationMessage,
        from: Address,
        me: &Fingerprint,
        item: &Inbound,
        shared_by: Option<Fingerprint>,
    ) -> Self {
        Self {
            sender: from.fingerprint.0,
            sender_device: from.device_id,
            outgoing: from.fingerprint == *me,
            kind: 0,
            epoch: m.epoch,
            id: m.id.0,
            sent_at_ms: m.sent_at_ms,
            received_at_ms: item.received_at_ms,
            server_time_ms: item.server_time_ms,
            content_type: content_type_byte(m.content_type),
            content: m.content.clone(),
            receipts: Vec::new(),
            recalled: None,
            shared_by: shared_by.map(|f| f.0),
        }
    }
}

/// A received conversation payload waiting to be checked and acted on (`conversation_inbound`).
#[derive(Serialize, Deserialize)]
struct Inbound {
    sender: [u8; 32],
    sender_device: u32,
    server_time_ms: u64,
    received_at_ms: u64,
    /// The padded payload as decrypted.
    payload: Zeroizing<Vec<u8>>,
}

/// An archive copy waiting to be sealed and filed (`archive_outbox`).
#[derive(Serialize, Deserialize)]
struct ArchiveCopy {
    conversation: [u8; 16],
    epoch: u64,
    /// The padded payload the members received.
    payload: Zeroizing<Vec<u8>>,
}

fn content_type_byte(t: ContentType) -> u8 {
    match t {
        ContentType::Text => 1,
        ContentType::Binary => 2,
        ContentType::Other(b) => b,
    }
}

fn content_type_of(b: u8) -> ContentType {
    match b {
        1 => ContentType::Text,
        2 => ContentType::Binary,
        other => ContentType::Other(other),
    }
}

/// One message of a conversation, as [`Client::conversation_messages`] shows it. Its content
/// is PHI: `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct ConversationMessageView {
    /// The conversation.
    pub conversation: ConversationId,
    /// The sender's id for it.
    pub id: MessageId,
    /// The sending identity.
    pub sender: Fingerprint,
    /// The sending device.
    pub sender_device: u32,
    /// "Name — verified agent of Clinic", "patient", or "you".
    pub sender_shown: String,
    /// Sent by this person (this device or another of its devices).
    pub outgoing: bool,
    /// A hand-off note, shown to staff only (`conversations.md` §8.5).
    pub staff_note: bool,
    /// The membership epoch it was sent under.
    pub epoch: u64,
    /// The sender's clock (Unix ms).
    pub sent_at_ms: u64,
    /// When this device stored it (Unix ms).
    pub received_at_ms: u64,
    /// What the content is.
    pub content_type: ContentType,
    /// The content; kept (and shown as withheld by apps) when recalled (§8.3).
    pub content: Zeroizing<Vec<u8>>,
    /// Member devices that confirmed it: `(fingerprint, device, status)`.
    pub receipts: Vec<(Fingerprint, u32, ReceiptStatus)>,
    /// Who recalled it and when (relay time, Unix ms).
    pub recalled: Option<(String, u64)>,
    /// For a message received in a history share: who shared it (its content is that
    /// member's word, not the sender's signature, §4.5).
    pub shared_by: Option<String>,
}

impl core::fmt::Debug for ConversationMessageView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConversationMessageView")
            .field("id", &self.id)
            .field("sender_device", &self.sender_device)
            .field("outgoing", &self.outgoing)
            .field("epoch", &self.epoch)
            .field("content_len", &self.content.len())
            .field("recalled", &self.recalled.is_some())
            .finish_non_exhaustive()
    }
}

/// One entry of a conversation's archive as a supervisor opened it ([`Client::open_archive`]).
#[derive(Clone)]
pub struct ArchiveEntry {
    /// The sender's identity as the entry claims it (the seal is not a signature, §7.3).
    pub sender: Fingerprint,
    /// The sending device.
    pub sender_device: u32,
    /// How the verified history names the sender.
    pub sender_shown: String,
    /// The membership epoch it was sent under.
    pub epoch: u64,
    /// Whether the sender was a member that writes at that epoch in the verified history and
    /// is the device the relay saw file the entry; `false` flags the entry (§7.3).
    pub member_at_epoch: bool,
    /// When the relay filed it (its clock, Unix ms).
    pub filed_at_ms: u64,
    /// The payload the members received: a message, a recall, a receipt. PHI: `Debug`
    /// shows no content.
    pub payload: Payload,
}

impl core::fmt::Debug for ArchiveEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArchiveEntry")
            .field("sender_device", &self.sender_device)
            .field("epoch", &self.epoch)
            .field("member_at_epoch", &self.member_at_epoch)
            .finish_non_exhaustive()
    }
}

/// The membership after the first `epoch` changes of a verified history: `(fingerprint, role,
/// devices)` per member. The changes were verified when they were applied (§4.3), so an agent
/// joining by itself while agents are on it was a takeover (rule 9): they left with it.
fn members_at(changes: &[Vec<u8>], epoch: u64) -> Vec<(Fingerprint, MemberRole, Vec<u32>)> {
    let mut members: Vec<(Fingerprint, MemberRole, Vec<u32>)> = Vec::new();
    let take = usize::try_from(epoch).unwrap_or(usize::MAX);
    for bytes in changes.iter().take(take) {
        let Ok(change) = MembershipChange::from_bytes(bytes) else {
            continue;
        };
        let fingerprint = change.member().fingerprint();
        let signer = change.signer().fingerprint();
        let claim = change.action() == ChangeAction::Add
            && change.role() == MemberRole::Agent
            && signer == fingerprint
            && !members
                .iter()
                .any(|m| m.0 == signer && m.2.contains(&change.signer_device()));
        if claim {
            members.retain(|m| m.1 != MemberRole::Agent);
        }
        match (
            change.action(),
            members.iter_mut().find(|m| m.0 == fingerprint),
        ) {
            (ChangeAction::Add, Some(m)) => m.2.extend_from_slice(change.devices()),
            (ChangeAction::Add, None) => {
                members.push((fingerprint, change.role(), change.devices().to_vec()));
            }
            (ChangeAction::Remove, Some(m)) => m.2.retain(|d| !change.devices().contains(d)),
            (ChangeAction::Remove, None) => {}
        }
        members.retain(|m| !m.2.is_empty());
    }
    members
}

fn role_at(changes: &[Vec<u8>], epoch: u64, who: &Fingerprint, device: u32) -> Option<MemberRole> {
    members_at(changes, epoch)
        .into_iter()
        .find(|m| &m.0 == who && m.2.contains(&device))
        .map(|m| m.1)
}

/// Whether `who` was ever a member in `role` (any of its devices) in the verified history.
fn ever_in_role(changes: &[Vec<u8>], who: &Fingerprint, roles: &[MemberRole]) -> bool {
    changes.iter().any(|bytes| {
        MembershipChange::from_bytes(bytes).is_ok_and(|c| {
            c.action() == ChangeAction::Add
                && &c.member().fingerprint() == who
                && roles.contains(&c.role())
        })
    })
}

/// The conversation a queued payload belongs to, if it is a conversation payload (kinds
/// `0x05`–`0x09` all begin `0x01 ‖ kind ‖ conversation_id[16]`, §8).
pub(super) fn conversation_of_payload(payload: &[u8]) -> Option<ConversationId> {
    match payload {
        [0x01, 0x05..=0x09, rest @ ..] => rest.first_chunk::<16>().map(|id| ConversationId(*id)),
        _ => None,
    }
}

fn conversation_error(why: impl Into<String>) -> ClientError {
    ClientError::Conversation(why.into())
}

impl Client {
    fn message_index(&self, conversation: &ConversationId, id: &[u8; 16]) -> [u8; 32] {
        let mut bytes = b"conversation message:".to_vec();
        bytes.extend_from_slice(&conversation.0);
        bytes.extend_from_slice(id);
        self.inner.vault.blind_index(&bytes)
    }

    fn seal_record(&self, row: i64, record: &MessageRecord) -> Vec<u8> {
        self.inner.vault.seal_value(
            "conversation message",
            &row.to_be_bytes(),
            record,
            &mut rng(),
        )
    }

    /// A stored message's recall, if recalled: `(message id, who recalled it, when)`.
    pub(super) fn recall_of(
        &self,
        row: i64,
        sealed: &[u8],
    ) -> Result<Option<(MessageId, Fingerprint, u64)>> {
        let record = self.open_record(row, sealed)?;
        Ok(record
            .recalled
            .map(|(by, at)| (MessageId(record.id), Fingerprint(by), at)))
    }

    fn open_record(&self, row: i64, sealed: &[u8]) -> Result<MessageRecord> {
        self.inner
            .vault
            .open_value("conversation message", &row.to_be_bytes(), sealed)
    }

    /// Records a message; `false` if it was held already (a duplicate). Everything not written
    /// on this very device (`own_device`) goes on the unread list, this person's other devices'
    /// messages included (`recv` shows them as sent by you).
    async fn record_message(
        &self,
        c: &mut SqliteConnection,
        conversation: &ConversationId,
        record: &MessageRecord,
        own_device: u32,
    ) -> Result<bool> {
        let index = self.message_index(conversation, &record.id);
        // Sealed under its row id, known only after the insert: a placeholder first.
        let Some(row) = store::insert_conversation_message(
            c,
            &self.conversation_index(conversation),
            &index,
            b"",
        )
        .await?
        else {
            return Ok(false);
        };
        store::update_conversation_message(c, row, &self.seal_record(row, record)).await?;
        if !record.outgoing || record.sender_device != own_device {
            store::add_unread_conversation_message(c, row).await?;
        }
        self.touch_conversation(c, conversation, now_ms()).await?;
        Ok(true)
    }

    /// Puts a sealed work item in one of the two queues.
    async fn push_work<T: Serialize>(
        &self,
        c: &mut SqliteConnection,
        queue: WorkQueue,
        item: &T,
    ) -> Result<()> {
        let id = store::push_work(c, queue).await?;
        let sealed =
            self.inner
                .vault
                .seal_value(work_label(queue), &id.to_be_bytes(), item, &mut rng());
        store::set_work(c, queue, id, &sealed).await
    }

    /// The contact row that holds the session with a member device: found by address, else a
    /// further device of a person known here, else a new contact named after the member
    /// (`shown`, with its short address so two are never confused). The identity key comes
    /// from the verified membership, so a bundle for another identity is refused later.
    async fn member_row(
        &self,
        c: &mut SqliteConnection,
        state: &super::State,
        identity: &hushwire::proto::keys::IdentityKey,
        device: u32,
        shown: &str,
        events: &mut Vec<Event>,
    ) -> Result<i64> {
        let address = Address {
            fingerprint: identity.fingerprint(),
            device_id: device,
        };
        if let Some((row, _)) = self.find_by_address(c, address).await? {
            return Ok(row);
        }
        if let Some(person) = self.person_with_identity(c, state, address).await? {
            return self
                .add_device_row(c, person, address, identity)
                .await?
                .map_err(conversation_error);
        }
        let record = ContactRecord {
            name: format!("{shown}-{}", address.short()),
            fingerprint: address.fingerprint.0,
            device_id: device,
            identity: Some(identity.to_bytes()),
            verified: false,
            identity_changed: false,
            added_at_ms: now_ms(),
        };
        let row = self.insert_contact(c, &record).await?;
        events.push(Event::NewContact {
            contact: ContactId(row),
            name: record.name,
        });
        Ok(row)
    }

    /// [`Self::member_row`] in a transaction of its own, for what is encrypted now rather than
    /// queued (hand-off notes, a hand-off's history share), committed with `audit`'s record if
    /// one is given; the events it raises are emitted after the commit.
    async fn member_row_now(
        &self,
        identity: &hushwire::proto::keys::IdentityKey,
        device: u32,
        label: &str,
        audit: Option<&dyn Fn(&hushwire::Account) -> hushwire::proto::audit::AuditEvent>,
    ) -> Result<i64> {
        let state = self.inner.state.lock().await;
        let mut events = Vec::new();
        let mut tx = store::begin(&self.inner.db).await?;
        let row = self
            .member_row(&mut tx, &state, identity, device, label, &mut events)
            .await?;
        if let Some(audit) = audit {
            self.audit(&mut tx, &state.account, audit(&state.account))
                .await?;
        }
        tx.commit().await?;
        drop(state);
        for event in events {
            self.emit(event);
        }
        Ok(row)
    }

    /// Queues `payload` for every member device at the verified head except this one (the
    /// sender's own other devices included, §2), and except staff whose certificate the
    /// clinic's revocation list held here revokes (§4.3 rule 9: a revoked agent gets nothing new,
    /// before as after a takeover). `message_id`: the message it carries.
    async fn queue_to_members(
        &self,
        c: &mut SqliteConnection,
        state: &super::State,
        conv: &Conv,
        payload: &Payload,
        message_id: Option<MessageId>,
        events: &mut Vec<Event>,
    ) -> Result<usize> {
        let me = state.account.identity_key().fingerprint();
        let this_device = state.account.device_id();
        let mut queued = 0;
        for member in conv.log.members() {
            if is_revoked(conv, member) {
                continue;
            }
            let fingerprint = member.identity().fingerprint();
            let shown = conv.label(&fingerprint);
            for &device in member.devices() {
                if fingerprint == me && device == this_device {
                    continue;
                }
                let row = self
                    .member_row(c, state, member.identity(), device, &shown, events)
                    .await?;
                self.queue(c, row, message_id, payload).await?;
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// This device's role in the verified conversation, or why it cannot write.
    fn writer_role(conv: &Conv, me: &Fingerprint, device: u32) -> Result<MemberRole> {
        match conv
            .log
            .members()
            .iter()
            .find(|m| &m.identity().fingerprint() == me && m.devices().contains(&device))
            .map(|m| m.role())
        {
            Some(MemberRole::Supervisor) => Err(conversation_error(
                "a supervisor reads along and does not write (read-only, §4.1)",
            )),
            Some(role) => Ok(role),
            None => Err(conversation_error(
                "this device is not a member of the conversation",
            )),
        }
    }

    /// The conversation's verified history, fetched first when connected.
    async fn current_conv(&self, conversation: ConversationId) -> Result<Conv> {
        if self.current_link().is_some()
            && self.fetch_history(conversation).await? == super::conversations::History::NotReadable
        {
            return Err(conversation_error(
                "this device is not a member of the conversation (any more)",
            ));
        }
        self.conv_snapshot(conversation)
            .await?
            .ok_or_else(|| conversation_error("no verified history of this conversation here"))
    }

    /// Sends a message to a conversation (`conversations.md` §2): recorded here and queued for
    /// every other member device of the verified membership in one transaction, with a copy
    /// for the clinic's archive (§7.3). Goes out as soon as the relay is connected; a member
    /// removed meanwhile gets nothing (§4.4). Needs this device to be a member that writes
    /// (patient or agent). Content at most [`MAX_CONVERSATION_CONTENT_LEN`] bytes.
    pub async fn send_to_conversation(
        &self,
        conversation: ConversationId,
        content_type: ContentType,
        content: &[u8],
    ) -> Result<MessageId> {
        if content.len() > MAX_CONVERSATION_CONTENT_LEN {
            return Err(ClientError::MessageTooLong {
                len: content.len(),
                max: MAX_CONVERSATION_CONTENT_LEN,
            });
        }
        let conv = self.current_conv(conversation).await?;
        self.refresh_member_lists(&conv).await;
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng(), &mut id);
        let now = now_ms();
        let payload = Payload::ConversationMessage(ConversationMessage {
            conversation,
            epoch: conv.log.next_epoch(),
            id: MessageId(id),
            sent_at_ms: now,
            content_type,
            content: Zeroizing::new(content.to_vec()),
        });
        let state = self.inner.state.lock().await;
        let me = state.account.identity_key().fingerprint();
        let device = state.account.device_id();
        Self::writer_role(&conv, &me, device)?;
        let mut events = Vec::new();
        let mut tx = store::begin(&self.inner.db).await?;
        let record = MessageRecord {
            sender: me.0,
            sender_device: device,
            outgoing: true,
            kind: 0,
            epoch: conv.log.next_epoch(),
            id,
            sent_at_ms: now,
            received_at_ms: now,
            server_time_ms: now,
            content_type: content_type_byte(content_type),
            content: Zeroizing::new(content.to_vec()),
            receipts: Vec::new(),
            recalled: None,
            shared_by: None,
        };
        self.record_message(&mut tx, &conversation, &record, device)
            .await?;
        self.queue_to_members(
            &mut tx,
            &state,
            &conv,
            &payload,
            Some(MessageId(id)),
            &mut events,
        )
        .await?;
        self.queue_archive_copy(&mut tx, conversation, conv.log.next_epoch(), &payload)
            .await?;
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        Ok(MessageId(id))
    }

    /// Reads a member's device list again from the relay when the membership names a device
    /// the list held here leaves out (the person linked a device since): a session is made only
    /// with a device its person lists (`client.md` §8.6). A failure is logged: the send then
    /// holds that device's copy and says why, as for any unlisted device.
    async fn refresh_member_lists(&self, conv: &Conv) {
        let Some(link) = self.current_link() else {
            return;
        };
        let (me, _) = self.own_fingerprint_and_device().await;
        for member in conv.log.members() {
            let fingerprint = member.identity().fingerprint();
            if fingerprint == me {
                continue;
            }
            let held = async {
                let mut c = self.inner.db.acquire().await?;
                let list = self.held_list(&mut c, &fingerprint).await?;
                let person = self.person_by_fingerprint(&mut c, &fingerprint).await?;
                Ok::<_, ClientError>((list, person))
            }
            .await;
            let Ok((Some(list), Some(person))) = held else {
                continue;
            };
            if member.devices().iter().all(|d| list.contains(*d)) {
                continue;
            }
            if let Err(e) = self.refresh_device_list(&link, Some(person)).await {
                tracing::warn!(error = %e, "a member's device list could not be read again");
            }
        }
    }

    /// Sends UTF-8 text to a conversation.
    pub async fn send_text_to_conversation(
        &self,
        conversation: ConversationId,
        text: &str,
    ) -> Result<MessageId> {
        self.send_to_conversation(conversation, ContentType::Text, text.as_bytes())
            .await
    }

    async fn queue_archive_copy(
        &self,
        c: &mut SqliteConnection,
        conversation: ConversationId,
        epoch: u64,
        payload: &Payload,
    ) -> Result<()> {
        let copy = ArchiveCopy {
            conversation: conversation.0,
            epoch,
            payload: crate::payload::pad(&payload.encode()),
        };
        self.push_work(c, WorkQueue::Archive, &copy).await
    }

    /// Recalls a message this person sent (`conversations.md` §8.3): every member device and
    /// the archive get a recall; each shows the message as "recalled by …", never erases it.
    /// Refused after [`RECALL_WINDOW_MS`] (10 minutes) from sending, for a message of another
    /// person, or one not held here. Needs this device to write in the conversation.
    pub async fn recall(&self, conversation: ConversationId, id: MessageId) -> Result<()> {
        let conv = self.current_conv(conversation).await?;
        let state = self.inner.state.lock().await;
        let me = state.account.identity_key().fingerprint();
        let device = state.account.device_id();
        Self::writer_role(&conv, &me, device)?;
        let mut tx = store::begin(&self.inner.db).await?;
        let index = self.message_index(&conversation, &id.0);
        let Some(row) = store::conversation_message(&mut tx, &index).await? else {
            return Err(conversation_error(format!(
                "recall: no message {id} in this conversation here"
            )));
        };
        let mut record = self.open_record(row.id, &row.sealed)?;
        if record.sender != me.0 {
            return Err(conversation_error(
                "recall: only the person who sent a message can recall it",
            ));
        }
        if record.recalled.is_some() {
            return Err(conversation_error(
                "recall: the message is recalled already",
            ));
        }
        let now = now_ms();
        if now.saturating_sub(record.server_time_ms) > RECALL_WINDOW_MS {
            return Err(conversation_error(format!(
                "recall: the {}-minute window has passed (sent {} s ago)",
                RECALL_WINDOW_MS / 60_000,
                now.saturating_sub(record.server_time_ms) / 1000
            )));
        }
        record.recalled = Some((me.0, now));
        store::update_conversation_message(&mut tx, row.id, &self.seal_record(row.id, &record))
            .await?;
        let payload = Payload::Recall {
            conversation,
            id,
            recalled_at_ms: now,
        };
        let mut events = Vec::new();
        self.queue_to_members(&mut tx, &state, &conv, &payload, None, &mut events)
            .await?;
        self.queue_archive_copy(&mut tx, conversation, conv.log.next_epoch(), &payload)
            .await?;
        let audit = hushwire::proto::audit::AuditEvent::MessageRecalled {
            conversation,
            by: crate::address::own_ref(&state.account),
            message_id: id.0,
        };
        self.audit(&mut tx, &state.account, audit).await?;
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        self.emit(Event::ConversationMessageRecalled {
            conversation,
            id,
            by: "you".into(),
            at_ms: now,
        });
        Ok(())
    }

    /// Tells the other members that this person read `ids` (read receipts, §8.2). Ids of
    /// messages not held here, or sent by this person, are skipped. A read-only supervisor
    /// sends none.
    pub async fn mark_conversation_read(
        &self,
        conversation: ConversationId,
        ids: &[MessageId],
    ) -> Result<()> {
        let Some(conv) = self.conv_snapshot(conversation).await? else {
            return Err(conversation_error(
                "no verified history of this conversation here",
            ));
        };
        self.mark_conversation_shown(conversation, ids).await?;
        let state = self.inner.state.lock().await;
        let me = state.account.identity_key().fingerprint();
        if Self::writer_role(&conv, &me, state.account.device_id()).is_err() {
            return Ok(());
        }
        let mut tx = store::begin(&self.inner.db).await?;
        let mut unread = Vec::new();
        for id in ids {
            let index = self.message_index(&conversation, &id.0);
            if let Some(row) = store::conversation_message(&mut tx, &index).await?
                && !self.open_record(row.id, &row.sealed)?.outgoing
            {
                unread.push(*id);
            }
        }
        let mut events = Vec::new();
        for chunk in unread.chunks(hushwire::payload::MAX_RECEIPT_IDS) {
            let payload = Payload::ConversationReceipt {
                conversation,
                status: ReceiptStatus::Read,
                ids: chunk.to_vec(),
            };
            self.queue_to_members(&mut tx, &state, &conv, &payload, None, &mut events)
                .await?;
        }
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        Ok(())
    }

    /// The conversation messages (and staff notes) received here and not yet shown, from every
    /// conversation, oldest first: what `recv` prints, each once, whichever command received
    /// it. [`Self::mark_conversation_shown`] (or [`Self::mark_conversation_read`]) takes them
    /// off.
    pub async fn unread_conversation_messages(&self) -> Result<Vec<ConversationMessageView>> {
        let me = self.own_fingerprint_and_device().await.0;
        let rows = {
            let mut c = self.inner.db.acquire().await?;
            store::unread_conversation_messages(&mut c).await?
        };
        let held = self.conversations_by_index().await?;
        let mut views = Vec::with_capacity(rows.len());
        let mut convs: std::collections::HashMap<[u8; 16], Option<Conv>> =
            std::collections::HashMap::new();
        for (row, conversation_index, sealed) in rows {
            let Some(conversation) = <[u8; 32]>::try_from(conversation_index.as_slice())
                .ok()
                .and_then(|i| held.get(&i).copied())
            else {
                continue;
            };
            let conv = match convs.entry(conversation.0) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.conv_snapshot(conversation).await?)
                }
            };
            let record = self.open_record(row, &sealed)?;
            views.push(to_view(conversation, &record, conv.as_ref(), &me));
        }
        Ok(views)
    }

    /// Marks conversation messages as shown on this device (no receipt is sent; a read receipt
    /// is [`Self::mark_conversation_read`]).
    pub async fn mark_conversation_shown(
        &self,
        conversation: ConversationId,
        ids: &[MessageId],
    ) -> Result<()> {
        let mut tx = store::begin(&self.inner.db).await?;
        for id in ids {
            let index = self.message_index(&conversation, &id.0);
            store::remove_unread_conversation_message(&mut tx, &index).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The conversation's messages held here, in the order stored, with their receipts and
    /// recalls; staff notes only on staff devices.
    pub async fn conversation_messages(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<ConversationMessageView>> {
        let conv = self.conv_snapshot(conversation).await?;
        let me = self.own_fingerprint_and_device().await.0;
        let mut c = self.inner.db.acquire().await?;
        let rows =
            store::conversation_messages(&mut c, &self.conversation_index(&conversation)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let r = self.open_record(row.id, &row.sealed)?;
            out.push(to_view(conversation, &r, conv.as_ref(), &me));
        }
        Ok(out)
    }

    // ----- receiving ------------------------------------------------------------------------

    /// Stores a decrypted conversation payload with its delivery (called in the receive
    /// transaction); it is acted on by [`Self::process_conversation_inbound`] once the
    /// membership it names is verified.
    pub(super) async fn store_conversation_inbound(
        &self,
        c: &mut SqliteConnection,
        sender: Address,
        server_time_ms: u64,
        now: u64,
        plaintext: &[u8],
    ) -> Result<()> {
        let item = Inbound {
            sender: sender.fingerprint.0,
            sender_device: sender.device_id,
            server_time_ms,
            received_at_ms: now,
            payload: Zeroizing::new(plaintext.to_vec()),
        };
        // No wake-up here: this runs inside the receive transaction, so a worker woken now
        // could look before the row is committed. The reader acts on it after the commit and
        // wakes the worker for what it cannot act on itself.
        self.push_work(c, WorkQueue::Inbound, &item).await
    }

    /// Acts on the received conversation payloads, oldest first. With `link`, a payload whose
    /// epoch is not verified here yet makes this device fetch the history first; without, it
    /// waits for the connection's worker.
    pub(super) async fn process_conversation_inbound(&self, link: Option<&Link>) -> Result<()> {
        let _guard = match link {
            Some(_) => self.inner.inbound_lock.lock().await,
            None => match self.inner.inbound_lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    self.inner.conversation_work.notify_one();
                    return Ok(());
                }
            },
        };
        let rows = {
            let mut c = self.inner.db.acquire().await?;
            store::work(&mut c, WorkQueue::Inbound).await?
        };
        for (row, sealed) in rows {
            let item: Inbound = self.inner.vault.open_value(
                work_label(WorkQueue::Inbound),
                &row.to_be_bytes(),
                &sealed,
            )?;
            let payload = match Payload::decode_padded(&item.payload) {
                Ok(p) => p,
                Err(e) => {
                    self.refuse_inbound(row, &item, format!("a malformed payload: {e}"))
                        .await?;
                    continue;
                }
            };
            let Some(conversation) = conversation_of_payload(&payload.encode()) else {
                self.refuse_inbound(row, &item, "not a conversation payload".into())
                    .await?;
                continue;
            };
            let needed = match &payload {
                Payload::ConversationMessage(m) => m.epoch,
                _ => 1,
            };
            let mut conv = self.conv_snapshot(conversation).await?;
            let known = |conv: &Option<Conv>| {
                conv.as_ref().is_some_and(|c| {
                    c.log.next_epoch() >= needed
                        && role_at(
                            &c.changes,
                            c.log.next_epoch(),
                            &Fingerprint(item.sender),
                            item.sender_device,
                        )
                        .is_some()
                })
            };
            if !known(&conv) {
                let Some(_link) = link else {
                    // The connection's worker fetches the history and comes back. Woken here,
                    // after this row was committed: a wake-up before the commit could find
                    // nothing, and the payload would wait for the next unrelated push.
                    self.inner.conversation_work.notify_one();
                    continue;
                };
                if let Err(e) = self.fetch_history(conversation).await {
                    tracing::warn!(error = %e, "a conversation's history could not be fetched");
                }
                conv = self.conv_snapshot(conversation).await?;
            }
            let Some(conv) = conv else {
                self.refuse_inbound(
                    row,
                    &item,
                    "a payload of a conversation whose history the relay does not give this \
                     device"
                        .into(),
                )
                .await?;
                continue;
            };
            self.act_on_inbound(row, &item, conversation, &conv, payload)
                .await?;
        }
        Ok(())
    }

    /// Drops an inbound payload that cannot be accepted and shows why (`DecryptFailed`: the
    /// person sees that something arrived and was refused, never silence).
    async fn refuse_inbound(&self, row: i64, item: &Inbound, reason: String) -> Result<()> {
        let sender = Address {
            fingerprint: Fingerprint(item.sender),
            device_id: item.sender_device,
        };
        let mut tx = store::begin(&self.inner.db).await?;
        self.record_failure(&mut tx, sender, &reason, now_ms())
            .await?;
        store::delete_work(&mut tx, WorkQueue::Inbound, row).await?;
        tx.commit().await?;
        self.emit(Event::DecryptFailed { sender, reason });
        Ok(())
    }

    async fn act_on_inbound(
        &self,
        row: i64,
        item: &Inbound,
        conversation: ConversationId,
        conv: &Conv,
        payload: Payload,
    ) -> Result<()> {
        let sender = Fingerprint(item.sender);
        let head = conv.log.next_epoch();
        let sender_role_now = role_at(&conv.changes, head, &sender, item.sender_device);
        let state = self.inner.state.lock().await;
        let me = state.account.identity_key().fingerprint();
        let own_device = state.account.device_id();
        let i_write = Self::writer_role(conv, &me, own_device).is_ok();
        let i_am_staff = state
            .clinic
            .as_ref()
            .is_some_and(|c| c.own_certificate().is_some());
        let mut events = Vec::new();
        let mut tx = store::begin(&self.inner.db).await?;
        let refusal: Option<String> = match payload {
            Payload::ConversationMessage(m) => {
                let role = (m.epoch >= 1 && m.epoch <= head)
                    .then(|| role_at(&conv.changes, m.epoch, &sender, item.sender_device))
                    .flatten();
                match role {
                    None => Some(format!(
                        "a conversation message from a device that was not a member at epoch {}",
                        m.epoch
                    )),
                    Some(MemberRole::Supervisor) => {
                        Some("a conversation message from a read-only supervisor".into())
                    }
                    Some(_) => {
                        let from = Address {
                            fingerprint: sender,
                            device_id: item.sender_device,
                        };
                        let record = MessageRecord::of(&m, from, &me, item, None);
                        if self
                            .record_message(&mut tx, &conversation, &record, own_device)
                            .await?
                        {
                            if i_write && sender != me {
                                let receipt = Payload::ConversationReceipt {
                                    conversation,
                                    status: ReceiptStatus::Delivered,
                                    ids: vec![m.id],
                                };
                                self.queue_to_members(
                                    &mut tx,
                                    &state,
                                    conv,
                                    &receipt,
                                    None,
                                    &mut events,
                                )
                                .await?;
                            }
                            events.push(Event::ConversationMessageReceived(to_view(
                                conversation,
                                &record,
                                Some(conv),
                                &me,
                            )));
                        }
                        None
                    }
                }
            }
            Payload::ConversationReceipt { status, ids, .. } => {
                // A member that read a message and then left (a hand-off) confirms it after its
                // removal: taken. Only someone never on the conversation is refused.
                if sender_role_now.is_none()
                    && !ever_in_role(
                        &conv.changes,
                        &sender,
                        &[
                            MemberRole::Patient,
                            MemberRole::Agent,
                            MemberRole::Supervisor,
                        ],
                    )
                {
                    Some("a receipt from someone never on the conversation".into())
                } else {
                    for id in ids {
                        let index = self.message_index(&conversation, &id.0);
                        let Some(stored) = store::conversation_message(&mut tx, &index).await?
                        else {
                            continue;
                        };
                        let mut record = self.open_record(stored.id, &stored.sealed)?;
                        let code = status as u8;
                        let entry = record
                            .receipts
                            .iter_mut()
                            .find(|(f, d, _)| *f == sender.0 && *d == item.sender_device);
                        let changed = match entry {
                            Some(e) if e.2 >= code => false,
                            Some(e) => {
                                e.2 = code;
                                true
                            }
                            None => {
                                record.receipts.push((sender.0, item.sender_device, code));
                                true
                            }
                        };
                        if changed {
                            store::update_conversation_message(
                                &mut tx,
                                stored.id,
                                &self.seal_record(stored.id, &record),
                            )
                            .await?;
                            events.push(Event::ConversationReceipt {
                                conversation,
                                id,
                                member: sender,
                                device: item.sender_device,
                                status,
                            });
                        }
                    }
                    None
                }
            }
            Payload::Recall { id, .. } => {
                let index = self.message_index(&conversation, &id.0);
                match store::conversation_message(&mut tx, &index).await? {
                    // A message this device never held (sent before it was linked or
                    // added): nothing here to mark, and nothing wrong to report.
                    None => {
                        tracing::info!("a recall of a message not held here was ignored");
                        None
                    }
                    Some(stored) => {
                        let mut record = self.open_record(stored.id, &stored.sealed)?;
                        if let Some(why) = recall_refusal(&record, &sender, item.server_time_ms, id)
                        {
                            Some(why)
                        } else {
                            if record.recalled.is_none() {
                                record.recalled = Some((sender.0, item.server_time_ms));
                                store::update_conversation_message(
                                    &mut tx,
                                    stored.id,
                                    &self.seal_record(stored.id, &record),
                                )
                                .await?;
                                // `recv` shows it once, whichever command received it.
                                store::add_unshown_recall(&mut tx, stored.id).await?;
                                // This person's other device recalled it: "you", as on
                                // the device that did.
                                let by = if sender == me {
                                    "you".into()
                                } else {
                                    conv.shown_ever(&sender)
                                };
                                events.push(Event::ConversationMessageRecalled {
                                    conversation,
                                    id,
                                    by,
                                    at_ms: item.server_time_ms,
                                });
                            }
                            None
                        }
                    }
                }
            }
            Payload::StaffNote { note, .. } => {
                let staff_sender = ever_in_role(&conv.changes, &sender, &[MemberRole::Agent]);
                if !i_am_staff {
                    Some("a staff note sent to a device that is not staff".into())
                } else if !staff_sender {
                    Some("a staff note from someone who was never an agent on it".into())
                } else {
                    let mut id = [0u8; 16];
                    rand_core::Rng::fill_bytes(&mut rng(), &mut id);
                    let record = MessageRecord {
                        sender: sender.0,
                        sender_device: item.sender_device,
                        outgoing: sender == me,
                        kind: 1,
                        epoch: head,
                        id,
                        sent_at_ms: item.server_time_ms,
                        received_at_ms: item.received_at_ms,
                        server_time_ms: item.server_time_ms,
                        content_type: 1,
                        content: Zeroizing::new(note.as_bytes().to_vec()),
                        receipts: Vec::new(),
                        recalled: None,
                        shared_by: None,
                    };
                    self.record_message(&mut tx, &conversation, &record, own_device)
                        .await?;
                    events.push(Event::ConversationMessageReceived(to_view(
                        conversation,
                        &record,
                        Some(conv),
                        &me,
                    )));
                    None
                }
            }
            Payload::HistoryShare { messages, .. } => {
                // The sharer may have left since (a hand-off shares, then removes the agent):
                // it must have been a member that writes; each message is checked below.
                if !ever_in_role(
                    &conv.changes,
                    &sender,
                    &[MemberRole::Patient, MemberRole::Agent],
                ) {
                    Some("a history share from someone who never wrote in the conversation".into())
                } else {
                    let mut refused = 0usize;
                    for shared in messages {
                        let from = Address::from_device_address(shared.sender);
                        let m = shared.message;
                        // Only what its sender could have sent: a member that writes at the
                        // message's epoch, of this conversation.
                        let could = m.conversation == conversation
                            && m.epoch >= 1
                            && m.epoch <= head
                            && role_at(&conv.changes, m.epoch, &from.fingerprint, from.device_id)
                                .is_some_and(MemberRole::can_write);
                        if !could {
                            refused += 1;
                            continue;
                        }
                        let record = MessageRecord::of(&m, from, &me, item, Some(sender));
                        if self
                            .record_message(&mut tx, &conversation, &record, own_device)
                            .await?
                        {
                            events.push(Event::ConversationMessageReceived(to_view(
                                conversation,
                                &record,
                                Some(conv),
                                &me,
                            )));
                        }
                    }
                    (refused > 0).then(|| {
                        format!(
                            "{refused} message(s) of a history share whose sender was not a \
                             member that writes at their epoch"
                        )
                    })
                }
            }
            _ => Some("not a conversation payload".into()),
        };
        if let Some(reason) = refusal.as_ref() {
            let from = Address {
                fingerprint: sender,
                device_id: item.sender_device,
            };
            self.record_failure(&mut tx, from, reason, now_ms()).await?;
            events.push(Event::DecryptFailed {
                sender: from,
                reason: reason.clone(),
            });
        }
        store::delete_work(&mut tx, WorkQueue::Inbound, row).await?;
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        Ok(())
    }

    // ----- sending, the connection's part ---------------------------------------------------

    /// The conversation an outbox entry belongs to, if it carries a conversation payload.
    pub(super) fn outbox_conversation(
        &self,
        row_id: i64,
        sealed: &[u8],
    ) -> Result<Option<ConversationId>> {
        let item: super::send::OutboxItem =
            self.inner
                .vault
                .open_value("outbox", &row_id.to_be_bytes(), sealed)?;
        Ok(conversation_of_payload(&item.payload))
    }

    /// Drops outbox entry `row_id` of `conversation` if its recipient is staff whose
    /// certificate the clinic's revocation list held here revokes: queued before this device
    /// learned of the revocation, it is never encrypted or sent (§4.3 rule 9: a revoked agent
    /// gets nothing new, as in `queue_to_members`). Whether it was dropped.
    pub(super) async fn drop_if_revoked_recipient(
        &self,
        row_id: i64,
        conversation: ConversationId,
        recipient: &Address,
    ) -> Result<bool> {
        let Some(conv) = self.conv_snapshot(conversation).await? else {
            return Ok(false);
        };
        let revoked = conv
            .log
            .members()
            .iter()
            .find(|m| m.identity().fingerprint() == recipient.fingerprint)
            .is_some_and(|m| is_revoked(&conv, m));
        if revoked {
            let mut c = self.inner.db.acquire().await?;
            store::delete_outbox(&mut c, row_id).await?;
            tracing::info!("a conversation envelope for a revoked agent's device was dropped");
        }
        Ok(revoked)
    }

    /// Sends one encrypted conversation envelope at the verified head epoch. `Ok(true)`: the
    /// relay holds it; `Ok(false)`: it is not to be sent (the recipient, or this device, is no
    /// longer a member after the history was fetched again: the entry is dropped).
    pub(super) async fn send_conversation_envelope(
        &self,
        link: &Link,
        row_id: i64,
        conversation: ConversationId,
        envelope: OutgoingEnvelope,
    ) -> Result<bool> {
        let recipient = Address::from_device_address(envelope.recipient);
        for attempt in 0..2 {
            let readable = match self.conv_snapshot(conversation).await? {
                Some(_) if attempt == 0 => true,
                _ => {
                    self.fetch_history(conversation).await?
                        == super::conversations::History::Current
                }
            };
            let conv = self.conv_snapshot(conversation).await?;
            let Some(conv) = conv.filter(|_| readable) else {
                // Not on the conversation any more: nothing goes out for it (§4.4).
                let mut c = self.inner.db.acquire().await?;
                store::delete_outbox(&mut c, row_id).await?;
                tracing::info!("a conversation envelope was dropped: this device is off it");
                return Ok(false);
            };
            let (me, device) = self.own_fingerprint_and_device().await;
            let still = role_at(
                &conv.changes,
                conv.log.next_epoch(),
                &recipient.fingerprint,
                recipient.device_id,
            )
            .is_some()
                && Self::writer_role(&conv, &me, device).is_ok();
            if !still {
                let mut c = self.inner.db.acquire().await?;
                store::delete_outbox(&mut c, row_id).await?;
                tracing::info!(
                    "a conversation envelope for a device no longer a member was dropped"
                );
                return Ok(false);
            }
            let answer = link
                .call(FrameBody::Queue(Box::new(QueueFrame::ConversationSend {
                    conversation,
                    epoch: conv.log.next_epoch(),
                    envelopes: vec![envelope.clone()],
                })))
                .await;
            match answer {
                Ok(FrameBody::Sent(_)) => return Ok(true),
                Ok(_) => {
                    return Err(ClientError::Connection(
                        "unexpected answer to a conversation send".into(),
                    ));
                }
                Err(ClientError::Relay(ErrorCode::StaleEpoch | ErrorCode::NotOnConversation))
                    if attempt == 0 =>
                {
                    // Another change came first: the next attempt verifies it, then sends to
                    // whoever is still a member (§4.4).
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Relay(ErrorCode::StaleEpoch))
    }

    pub(super) async fn own_fingerprint_and_device(&self) -> (Fingerprint, u32) {
        let state = self.inner.state.lock().await;
        (
            state.account.identity_key().fingerprint(),
            state.account.device_id(),
        )
    }

    /// The clinic's archive policy: held, else fetched and verified under the pinned clinic
    /// key (§7.1: a relay cannot substitute its own archive key). `None` if the clinic has
    /// published none.
    pub(super) async fn archive_policy(&self, link: &Link) -> Result<Option<ArchivePolicy>> {
        if let Some(policy) = self
            .inner
            .archive_policy
            .lock()
            .ok()
            .and_then(|p| p.clone())
        {
            return Ok(Some(policy));
        }
        let org = {
            let state = self.inner.state.lock().await;
            let Some(clinic) = state.clinic.as_ref() else {
                return Ok(None);
            };
            *clinic.link().org()
        };
        let answer = link
            .call(FrameBody::Queue(Box::new(QueueFrame::FetchArchivePolicy)))
            .await?;
        let FrameBody::Queue(frame) = answer else {
            return Err(ClientError::Connection(
                "unexpected answer to FetchArchivePolicy".into(),
            ));
        };
        let QueueFrame::ArchivePolicy(policy) = *frame else {
            return Err(ClientError::Connection(
                "unexpected answer to FetchArchivePolicy".into(),
            ));
        };
        let Some(policy) = policy else {
            return Ok(None);
        };
        if !policy.verify(&org) {
            return Err(conversation_error(
                "the relay's archive policy is not signed by the pinned clinic",
            ));
        }
        if let Ok(mut held) = self.inner.archive_policy.lock() {
            *held = Some((*policy).clone());
        }
        Ok(Some(*policy))
    }

    /// Seals and files the waiting archive copies (§7.3). Returns how many were filed; copies
    /// wait while the clinic has no archive policy (reported once per connection).
    ///
    /// Each copy is sealed once: the envelope is kept (sealed under the store's key, column
    /// `archive_outbox.envelope`) before it is first sent, and every later attempt, after a
    /// lost answer, a dropped connection or a restart, sends exactly those bytes, which the
    /// relay recognises as a repeat (§5.2) and does not store again. A copy already sealed is
    /// sent as sealed even if a newer policy has come since: it may already be in the archive.
    pub(super) async fn flush_archive(&self, link: &Link, warned: &mut bool) -> Result<usize> {
        let rows = {
            let mut c = self.inner.db.acquire().await?;
            store::archive_outbox(&mut c).await?
        };
        if rows.is_empty() {
            return Ok(0);
        }
        // Fetched (and verified) once per flush, when a copy needs sealing.
        let mut policy: Option<Option<ArchivePolicy>> = None;
        let (me, device) = self.own_fingerprint_and_device().await;
        let mut filed = 0;
        for row in rows {
            let context = row.id.to_be_bytes();
            let envelope = if let Some(sealed) = &row.envelope {
                let bytes = self
                    .inner
                    .vault
                    .open(ARCHIVE_ENVELOPE_LABEL, &context, sealed)?;
                ArchiveEnvelope::from_bytes(&bytes)
                    .map_err(|_| ClientError::CorruptStore(ARCHIVE_ENVELOPE_LABEL))?
            } else {
                // Sealed now, under the newest verified policy, and kept before it is sent.
                if policy.is_none() {
                    policy = Some(self.archive_policy(link).await?);
                }
                let Some(policy) = policy.as_ref().and_then(Option::as_ref) else {
                    if !*warned {
                        *warned = true;
                        tracing::warn!("no archive policy: archive copies wait");
                        self.emit(Event::ArchiveUnavailable {
                            waiting: self.archive_pending().await.unwrap_or(0),
                            reason: "the clinic has not published an archive policy; copies of \
                                     conversation messages wait here until it does"
                                .into(),
                        });
                    }
                    // Copies sealed earlier (by a policy held then) may still be filed.
                    continue;
                };
                let copy: ArchiveCopy = self.inner.vault.open_value(
                    work_label(WorkQueue::Archive),
                    &context,
                    &row.sealed,
                )?;
                let message = hushwire::archive::ArchivedMessage {
                    sender: me,
                    sender_device: device,
                    epoch: copy.epoch,
                    payload: copy.payload.to_vec(),
                };
                let envelope = hushwire::archive::seal(
                    policy,
                    ConversationId(copy.conversation),
                    &message,
                    &mut rng(),
                )
                .map_err(|e| conversation_error(format!("archive seal: {e:?}")))?;
                let sealed = self.inner.vault.seal(
                    ARCHIVE_ENVELOPE_LABEL,
                    &context,
                    &envelope.to_bytes(),
                    &mut rng(),
                );
                let mut c = self.inner.db.acquire().await?;
                store::set_archive_envelope(&mut c, row.id, &sealed).await?;
                envelope
            };
            match link
                .call(FrameBody::Queue(Box::new(QueueFrame::PutArchive(
                    Box::new(envelope),
                ))))
                .await
            {
                Ok(_) => {}
                Err(ClientError::Relay(ErrorCode::RateLimited)) => break,
                // Never a member that writes here (the relay takes copies from devices that left,
                // `conversations.md` §7.3): this device cannot file it; the others' copies stand.
                Err(ClientError::Relay(
                    ErrorCode::NotOnConversation | ErrorCode::UnknownConversation,
                )) => {
                    tracing::warn!(
                        "an archive copy was refused: this device never wrote on the conversation"
                    );
                }
                Err(e) => return Err(e),
            }
            let mut c = self.inner.db.acquire().await?;
            store::delete_work(&mut c, WorkQueue::Archive, row.id).await?;
            filed += 1;
        }
        Ok(filed)
    }

    /// Encrypts a hand-off note now (it travels inside the `HandOff` frame, §5.2) for each
    /// staff device, starting sessions where there are none.
    pub(super) async fn encrypt_notes(
        &self,
        link: &Link,
        conv: &Conv,
        recipients: &[(hushwire::proto::keys::IdentityKey, u32)],
        payload: &Payload,
    ) -> Result<Vec<hushwire::proto::conversation::queue::NoteEnvelope>> {
        let mut notes = Vec::new();
        for (identity, device) in recipients {
            let label = conv.label(&identity.fingerprint());
            let row = self.member_row_now(identity, *device, &label, None).await?;
            if let Err(e) = self.ensure_session(link, row).await {
                tracing::warn!(error = %e, "no session with a staff device: it gets no note");
                continue;
            }
            let ciphertext = self.encrypt_now(row, payload).await?;
            notes.push(hushwire::proto::conversation::queue::NoteEnvelope {
                recipient: Address {
                    fingerprint: identity.fingerprint(),
                    device_id: *device,
                }
                .to_device_address(),
                payload: ciphertext,
            });
        }
        Ok(notes)
    }

    /// Admin: publishes the clinic's archive policy (§7.1; a higher sequence replaces the
    /// relay's). Checked here first: it must verify under the pinned clinic key. Needs a
    /// connection and the admin role at the relay (`Forbidden` otherwise).
    pub async fn publish_archive_policy(&self, policy: &ArchivePolicy) -> Result<()> {
        let org = {
            let state = self.inner.state.lock().await;
            let clinic = state.clinic.as_ref().ok_or(ClientError::NoClinic)?;
            *clinic.link().org()
        };
        if !policy.verify(&org) {
            return Err(conversation_error(
                "the archive policy is not signed by the pinned clinic's key",
            ));
        }
        self.queue_call(
            "publish archive policy",
            QueueFrame::PublishArchivePolicy(Box::new(policy.clone())),
        )
        .await?;
        if let Ok(mut held) = self.inner.archive_policy.lock() {
            *held = Some(policy.clone());
        }
        Ok(())
    }

    /// Supervisor: reads a conversation's archive at the relay with the clinic's archive
    /// private key (§7.3), oldest first, and checks each entry against the verified membership
    /// (fetched first): an entry whose sender was not a member that writes at its epoch is
    /// flagged, not hidden. Records an `ArchiveOpened` audit event (§9). Needs a connection
    /// and the supervisor role. An envelope that does not open with `key` is an error.
    pub async fn open_archive(
        &self,
        conversation: ConversationId,
        key: &hushwire::archive::ArchiveSecretKey,
    ) -> Result<Vec<ArchiveEntry>> {
        self.require_role(
            "read the archive",
            hushwire::proto::clinic::Role::Supervisor,
        )
        .await?;
        self.refresh_membership(conversation).await?;
        let conv = self.conv_snapshot(conversation).await?;
        let mut entries = Vec::new();
        let mut from_index = 0;
        loop {
            let answer = self
                .queue_call(
                    "fetch archive",
                    QueueFrame::FetchArchive {
                        conversation,
                        from_index,
                    },
                )
                .await?;
            let QueueFrame::ArchiveItems { next_index, items } = answer else {
                return Err(ClientError::Connection(
                    "unexpected answer to FetchArchive".into(),
                ));
            };
            if items.is_empty() {
                break;
            }
            for item in &items {
                let opened = key.open(&item.envelope).map_err(|e| {
                    conversation_error(format!(
                        "an archive envelope does not open with this key: {e:?}"
                    ))
                })?;
                let payload = Payload::decode_padded(&opened.payload).map_err(|e| {
                    conversation_error(format!("an archived payload is malformed: {e}"))
                })?;
                // The sender inside is a claim (the seal is no signature): it must be the
                // device the relay saw file it, a member that writes at the entry's epoch.
                let filer = Address::from_device_address(item.filer);
                let member_at_epoch = filer.fingerprint == opened.sender
                    && filer.device_id == opened.sender_device
                    && conv.as_ref().is_some_and(|c| {
                        role_at(
                            &c.changes,
                            opened.epoch,
                            &opened.sender,
                            opened.sender_device,
                        )
                        .is_some_and(MemberRole::can_write)
                    });
                entries.push(ArchiveEntry {
                    sender_shown: conv
                        .as_ref()
                        .map_or_else(|| "unknown".into(), |c| c.shown_ever(&opened.sender)),
                    sender: opened.sender,
                    sender_device: opened.sender_device,
                    epoch: opened.epoch,
                    member_at_epoch,
                    filed_at_ms: item.filed_at_ms,
                    payload,
                });
            }
            if next_index <= from_index {
                break;
            }
            from_index = next_index;
        }
        let by = self.own_device_ref().await;
        self.audit_now(hushwire::proto::audit::AuditEvent::ArchiveOpened { conversation, by })
            .await?;
        Ok(entries)
    }

    /// Shares this conversation's messages held here with a member's devices (§4.5): each
    /// message that is not a staff note and not recalled, in `HistoryShare` payloads (§8.4: at
    /// most 64 messages and about 60 KB each), queued like any conversation payload, with a
    /// `HistoryShared` audit record per device. `with` must be a member now. Returns the
    /// number of messages shared (0: nothing to share). A member decides this: nothing is
    /// shared implicitly except what a patient wrote while waiting in the queue
    /// ([`Self::share_waiting_messages`]).
    pub async fn share_history(
        &self,
        conversation: ConversationId,
        with: Fingerprint,
    ) -> Result<usize> {
        let conv = self.current_conv(conversation).await?;
        self.share_records(conversation, &conv, with, |r| {
            r.kind == 0 && r.recalled.is_none()
        })
        .await
    }

    /// What follows changes newly verified here (from `from_epoch`), however they were learned
    /// (a push, or a history fetched by any call, also on a device that was offline when an
    /// agent joined): on the patient's device, the messages written while no agent was on the
    /// conversation are shared with each agent who joined (§4.5). A failure is logged; the
    /// next change learned tries again for its agent.
    pub(super) async fn after_new_changes(&self, conversation: ConversationId, from_epoch: u64) {
        let Ok(Some(conv)) = self.conv_snapshot(conversation).await else {
            return;
        };
        let me = self.own_fingerprint_and_device().await.0;
        if conv.log.patient() != Some(me) {
            return;
        }
        // Each agent that joined, and whether it took over from revoked agents (agents were
        // on it just before its claim: rule 9 let it claim only because they are revoked).
        let joined: Vec<(Fingerprint, bool)> = conv
            .changes
            .iter()
            .skip(usize::try_from(from_epoch).unwrap_or(usize::MAX))
            .filter_map(|b| MembershipChange::from_bytes(b).ok())
            .filter(|c| c.action() == ChangeAction::Add && c.role() == MemberRole::Agent)
            .map(|c| {
                let takeover = c.signer().fingerprint() == c.member().fingerprint()
                    && members_at(&conv.changes, c.epoch())
                        .iter()
                        .any(|m| m.1 == MemberRole::Agent);
                (c.member().fingerprint(), takeover)
            })
            .collect();
        for (agent, takeover) in joined {
            let shared = if takeover {
                // The revoked agent cannot hand over: the patient's device shares the
                // conversation so far, so the agent taking over does not start blind (§4.5).
                self.share_records(conversation, &conv, agent, |r| {
                    r.kind == 0 && r.recalled.is_none()
                })
                .await
            } else {
                self.share_waiting_messages(conversation, &conv, agent)
                    .await
            };
            if let Err(e) = shared {
                tracing::warn!(error = %e, "messages not shared with the agent who joined");
            }
        }
    }

    /// A patient's device, when an agent joins: shares the messages this person wrote while no
    /// agent was on the conversation (written to the clinic, so the agent who answers reads
    /// them; §4.5).
    async fn share_waiting_messages(
        &self,
        conversation: ConversationId,
        conv: &Conv,
        agent: Fingerprint,
    ) -> Result<usize> {
        let me = self.own_fingerprint_and_device().await.0;
        // Also what it wrote after the clinic revoked every agent on it (by the list held
        // here, from its issue time): nobody verified could read that either (§4.3 rule 9).
        let unanswered = |epoch: u64, sent_at_ms: u64| {
            let agents: Vec<Fingerprint> = members_at(&conv.changes, epoch)
                .into_iter()
                .filter(|m| m.1 == MemberRole::Agent)
                .map(|m| m.0)
                .collect();
            agents.is_empty()
                || conv.revocations.as_ref().is_some_and(|list| {
                    sent_at_ms / 1000 >= list.issued_at()
                        && agents.iter().all(|a| {
                            conv.names
                                .get(&a.0)
                                .is_some_and(|n| list.is_revoked(n.serial))
                        })
                })
        };
        self.share_records(conversation, conv, agent, |r| {
            r.kind == 0
                && r.recalled.is_none()
                && r.sender == me.0
                && unanswered(r.epoch, r.sent_at_ms)
        })
        .await
    }

    /// The held messages `wanted` picks, as `HistoryShare` message lists (§8.4: at most 64
    /// messages and about 60 KB of payload each), and how many.
    async fn collect_share(
        &self,
        c: &mut SqliteConnection,
        conversation: ConversationId,
        wanted: impl Fn(&MessageRecord) -> bool,
    ) -> Result<(Vec<Vec<hushwire::payload::SharedMessage>>, usize)> {
        /// Room for one payload's messages, below the session's 65 536-byte plaintext.
        const SHARE_BYTES: usize = 60_000;
        /// What one shared message adds around its content (sender, lengths, message fields).
        const SHARED_OVERHEAD: usize = 100;
        let rows = store::conversation_messages(c, &self.conversation_index(&conversation)).await?;
        let mut shares: Vec<Vec<hushwire::payload::SharedMessage>> = Vec::new();
        let mut room = 0;
        let mut count = 0;
        for row in rows {
            let r = self.open_record(row.id, &row.sealed)?;
            let size = r.content.len() + SHARED_OVERHEAD;
            if !wanted(&r) || size > SHARE_BYTES {
                continue;
            }
            let full = shares
                .last()
                .is_none_or(|s| s.len() >= hushwire::payload::MAX_SHARED_MESSAGES);
            if full || size > room {
                shares.push(Vec::new());
                room = SHARE_BYTES;
            }
            room -= size;
            count += 1;
            if let Some(last) = shares.last_mut() {
                last.push(hushwire::payload::SharedMessage {
                    sender: Address {
                        fingerprint: Fingerprint(r.sender),
                        device_id: r.sender_device,
                    }
                    .to_device_address(),
                    message: ConversationMessage {
                        conversation,
                        epoch: r.epoch,
                        id: MessageId(r.id),
                        sent_at_ms: r.sent_at_ms,
                        content_type: content_type_of(r.content_type),
                        content: r.content.clone(),
                    },
                });
            }
        }
        Ok((shares, count))
    }

    async fn share_records(
        &self,
        conversation: ConversationId,
        conv: &Conv,
        with: Fingerprint,
        wanted: impl Fn(&MessageRecord) -> bool,
    ) -> Result<usize> {
        let member = Self::member_of(conv, with)?;
        let state = self.inner.state.lock().await;
        Self::writer_role(
            conv,
            &state.account.identity_key().fingerprint(),
            state.account.device_id(),
        )?;
        let mut tx = store::begin(&self.inner.db).await?;
        let (shares, count) = self.collect_share(&mut tx, conversation, wanted).await?;
        if count == 0 {
            return Ok(0);
        }
        let mut events = Vec::new();
        let shown = conv.label(&with);
        for &device in member.devices() {
            let row = self
                .member_row(
                    &mut tx,
                    &state,
                    member.identity(),
                    device,
                    &shown,
                    &mut events,
                )
                .await?;
            for messages in &shares {
                let payload = Payload::HistoryShare {
                    conversation,
                    messages: messages.clone(),
                };
                self.queue(&mut tx, row, None, &payload).await?;
            }
            let audit = history_shared(&state.account, conversation, with, device, count);
            self.audit(&mut tx, &state.account, audit).await?;
        }
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        Ok(count)
    }

    fn member_of(conv: &Conv, with: Fingerprint) -> Result<hushwire::proto::conversation::Member> {
        conv.log
            .members()
            .iter()
            .find(|m| m.identity().fingerprint() == with)
            .cloned()
            .ok_or_else(|| {
                conversation_error("history can be shared only with a member of the conversation")
            })
    }

    /// A hand-off's history share (§5.1 step 4 with §4.5): sent now, in `ConversationSend` at
    /// `conv`'s head (the new agent added, this device not yet removed), so it is out before
    /// this device leaves. Every held message that is not a staff note and not recalled.
    pub(super) async fn share_now(
        &self,
        link: &Link,
        conversation: ConversationId,
        conv: &Conv,
        with: Fingerprint,
    ) -> Result<usize> {
        let member = Self::member_of(conv, with)?;
        let (shares, count) = {
            let mut c = self.inner.db.acquire().await?;
            self.collect_share(&mut c, conversation, |r| {
                r.kind == 0 && r.recalled.is_none()
            })
            .await?
        };
        if count == 0 {
            return Ok(0);
        }
        let shown = conv.label(&with);
        for &device in member.devices() {
            let audit = |account: &hushwire::Account| {
                history_shared(account, conversation, with, device, count)
            };
            let row = self
                .member_row_now(member.identity(), device, &shown, Some(&audit))
                .await?;
            self.ensure_session(link, row).await?;
            let mut envelopes = Vec::new();
            for messages in &shares {
                let payload = Payload::HistoryShare {
                    conversation,
                    messages: messages.clone(),
                };
                envelopes.push(OutgoingEnvelope {
                    recipient: Address {
                        fingerprint: with,
                        device_id: device,
                    }
                    .to_device_address(),
                    payload: self.encrypt_now(row, &payload).await?,
                });
            }
            for chunk in envelopes.chunks(16) {
                match link
                    .call(FrameBody::Queue(Box::new(QueueFrame::ConversationSend {
                        conversation,
                        epoch: conv.log.next_epoch(),
                        envelopes: chunk.to_vec(),
                    })))
                    .await?
                {
                    FrameBody::Sent(_) => {}
                    _ => {
                        return Err(ClientError::Connection(
                            "unexpected answer to a conversation send".into(),
                        ));
                    }
                }
            }
        }
        Ok(count)
    }

    /// Archive copies waiting to be filed.
    pub async fn archive_pending(&self) -> Result<usize> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::work(&mut c, WorkQueue::Archive).await?.len())
    }

    /// Acts on a push from the relay (`conversations.md` §5.4): a membership change makes this
    /// device fetch and verify the history (the pushed change is one of its entries; fetching
    /// also closes any gap) and tell the app what changed; a queue change is passed on.
    pub(super) async fn on_queue_push(&self, frame: QueueFrame) -> Result<()> {
        match frame {
            QueueFrame::MembershipChanged(change) => {
                let conversation = change.conversation();
                let before = self
                    .conv_snapshot(conversation)
                    .await?
                    .map_or(0, |c| c.log.next_epoch());
                match self.apply_pushed(&change).await {
                    Ok(()) => {}
                    Err(ClientError::Conversation(why)) => {
                        tracing::warn!("a pushed membership change could not be verified");
                        self.emit(Event::ConversationRefused {
                            conversation,
                            reason: why,
                        });
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
                if let Some(conv) = self.conv_snapshot(conversation).await? {
                    let new: Vec<MembershipChange> = conv
                        .changes
                        .iter()
                        .skip(usize::try_from(before).unwrap_or(usize::MAX))
                        .filter_map(|b| MembershipChange::from_bytes(b).ok())
                        .collect();
                    let changes: Vec<String> = new.iter().map(|c| conv.describe(c)).collect();
                    if !changes.is_empty() {
                        self.emit(Event::ConversationMembershipChanged {
                            conversation,
                            changes,
                        });
                    }
                }
                // Payloads that waited for this epoch can be acted on now.
                self.inner.conversation_work.notify_one();
                Ok(())
            }
            QueueFrame::QueueChanged(entry) => {
                self.emit(Event::QueueChanged(entry));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether pushes or received conversation payloads wait to be acted on (`sync` waits).
    pub(super) async fn conversation_work_pending(&self) -> Result<bool> {
        if self.pushes_pending() {
            return Ok(true);
        }
        let mut c = self.inner.db.acquire().await?;
        Ok(!store::work(&mut c, WorkQueue::Inbound).await?.is_empty())
    }

    /// Whether queue pushes wait to be acted on, or the worker is acting on them now.
    pub(super) fn pushes_pending(&self) -> bool {
        self.inner
            .conversation_working
            .load(std::sync::atomic::Ordering::SeqCst)
            || self.inner.pushes.lock().is_ok_and(|p| !p.is_empty())
    }

    /// The conversation work of a connection: pushes, then received payloads.
    pub(super) async fn conversation_upkeep(&self, link: &Link) -> Result<()> {
        use std::sync::atomic::Ordering;
        self.inner
            .conversation_working
            .store(true, Ordering::SeqCst);
        let result = self.conversation_upkeep_now(link).await;
        self.inner
            .conversation_working
            .store(false, Ordering::SeqCst);
        result
    }

    async fn conversation_upkeep_now(&self, link: &Link) -> Result<()> {
        let pushes: Vec<QueueFrame> = self
            .inner
            .pushes
            .lock()
            .map(|mut p| p.drain(..).collect())
            .unwrap_or_default();
        for push in pushes {
            self.on_queue_push(push).await?;
        }
        self.process_conversation_inbound(Some(link)).await
    }
}

/// Why a recall of `record` by `by`, delivered at the relay time `at_ms`, is refused (§8.3):
/// only its sender recalls it, within [`RECALL_WINDOW_MS`] of the message's own relay time, so
/// a device that was offline judges as one that was online. `None`: accepted.
fn recall_refusal(
    record: &MessageRecord,
    by: &Fingerprint,
    at_ms: u64,
    id: MessageId,
) -> Option<String> {
    let waited = at_ms.saturating_sub(record.server_time_ms);
    if record.sender != by.0 {
        Some(format!(
            "a recall of message {id} by someone who did not send it"
        ))
    } else if waited > RECALL_WINDOW_MS {
        Some(format!(
            "a recall of message {id} {} s after it was sent (the window is {} minutes)",
            waited / 1000,
            RECALL_WINDOW_MS / 60_000
        ))
    } else {
        None
    }
}

/// What the app sees of a stored message: members named as the verified history shows them.
fn to_view(
    conversation: ConversationId,
    r: &MessageRecord,
    conv: Option<&Conv>,
    me: &Fingerprint,
) -> ConversationMessageView {
    let shown = |who: &Fingerprint| -> String {
        if who == me {
            return "you".into();
        }
        conv.map_or_else(
            || "a member (history not verified here)".into(),
            |conv| conv.shown_ever(who),
        )
    };
    let sender = Fingerprint(r.sender);
    ConversationMessageView {
        conversation,
        id: MessageId(r.id),
        sender,
        sender_device: r.sender_device,
        sender_shown: shown(&sender),
        outgoing: r.outgoing,
        staff_note: r.kind == 1,
        epoch: r.epoch,
        sent_at_ms: r.sent_at_ms,
        received_at_ms: r.received_at_ms,
        content_type: content_type_of(r.content_type),
        content: r.content.clone(),
        receipts: r
            .receipts
            .iter()
            .map(|(f, d, s)| {
                let status = if *s == 2 {
                    ReceiptStatus::Read
                } else {
                    ReceiptStatus::Delivered
                };
                (Fingerprint(*f), *d, status)
            })
            .collect(),
        recalled: r.recalled.map(|(by, at)| (shown(&Fingerprint(by)), at)),
        shared_by: r.shared_by.map(|by| shown(&Fingerprint(by))),
    }
}

/// The audit record of sharing `count` messages with one device (§9, `0x58`).
fn history_shared(
    account: &hushwire::Account,
    conversation: ConversationId,
    with: Fingerprint,
    device: u32,
    count: usize,
) -> hushwire::proto::audit::AuditEvent {
    hushwire::proto::audit::AuditEvent::HistoryShared {
        conversation,
        by: crate::address::own_ref(account),
        to: hushwire::proto::audit::DeviceRef {
            fingerprint: with,
            device_id: device,
        },
        count: u32::try_from(count).unwrap_or(u32::MAX),
    }
}

/// Vault purpose of an archive copy's envelope as sealed for filing (`archive_outbox.envelope`,
/// context the row id, `client.md` §2.6).
const ARCHIVE_ENVELOPE_LABEL: &str = "archive envelope";

fn work_label(queue: WorkQueue) -> &'static str {
    match queue {
        WorkQueue::Inbound => "conversation inbound",
        WorkQueue::Archive => "archive copy",
    }
}

impl Conv {
    /// How a member is shown: staff by the verified certificate name, the patient as such.
    pub(super) fn shown(&self, who: &Fingerprint, role: MemberRole) -> String {
        match role {
            MemberRole::Patient => "patient".into(),
            _ => self.shown_ever(who),
        }
    }

    /// A contact name's first part for a member (its certificate name, or "patient"), with no
    /// claim of verification in it: a contact's name is the user's and does not follow later
    /// revocations; the member list and messages show the verified status.
    pub(super) fn label(&self, who: &Fingerprint) -> String {
        self.names.get(&who.0).map_or_else(
            || "patient".to_owned(),
            |staff| staff.name.split_whitespace().collect::<Vec<_>>().join("-"),
        )
    }

    /// How someone who is or was a member is shown.
    pub(super) fn shown_ever(&self, who: &Fingerprint) -> String {
        if let Some(staff) = self.names.get(&who.0) {
            return staff.shown(self.revocations.as_ref());
        }
        if self.log.patient().as_ref() == Some(who) {
            return "patient".into();
        }
        "a member whose name is not known here".into()
    }

    /// One line saying what a verified change did, for the people in the conversation.
    pub(super) fn describe(&self, change: &MembershipChange) -> String {
        let who = self.shown(&change.member().fingerprint(), change.role());
        let role = match change.role() {
            MemberRole::Patient => "patient",
            MemberRole::Agent => "agent",
            MemberRole::Supervisor => "supervisor (read-only)",
        };
        let by = if change.signer().fingerprint() == change.member().fingerprint() {
            String::new()
        } else {
            format!(" (by {})", self.shown_ever(&change.signer().fingerprint()))
        };
        // A member that stays, with devices added or removed (a patient linking a phone), is
        // not someone joining or leaving.
        let devices = change
            .devices()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // The member as this change left it (not as it is now: a notice shown later must
        // read as the change did then).
        let after = members_at(&self.changes, change.epoch().saturating_add(1));
        let now = after.iter().find(|m| m.0 == change.member().fingerprint());
        // A claim while agents were on it was a takeover (§4.3 rule 9): they left with it.
        let before = members_at(&self.changes, change.epoch());
        let self_join = change.signer().fingerprint() == change.member().fingerprint()
            && !before.iter().any(|m| {
                m.0 == change.signer().fingerprint() && m.2.contains(&change.signer_device())
            });
        let replaced: Vec<String> = before
            .iter()
            .filter(|m| m.1 == MemberRole::Agent)
            .map(|m| self.shown_ever(&m.0))
            .collect();
        match change.action() {
            ChangeAction::Add if now.is_some_and(|m| m.2.len() > change.devices().len()) => {
                format!("{who} added device {devices}{by}")
            }
            ChangeAction::Add
                if change.role() == MemberRole::Agent && self_join && !replaced.is_empty() =>
            {
                format!(
                    "{who} joined as {role}, taking over from {} (certificate revoked by the \
                     clinic; they left the conversation)",
                    replaced.join(", ")
                )
            }
            ChangeAction::Add => format!("{who} joined as {role}{by}"),
            ChangeAction::Remove if now.is_some() => format!("{who} removed device {devices}{by}"),
            ChangeAction::Remove => format!("{who} left{by}"),
        }
    }
}

/// Whether the clinic's revocation list held with `conv` revokes `member`'s certificate.
fn is_revoked(conv: &Conv, member: &hushwire_proto::conversation::Member) -> bool {
    conv.revocations.as_ref().is_some_and(|list| {
        member
            .certificate_serial()
            .is_some_and(|serial| list.is_revoked(serial))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sender: u8, server_time_ms: u64) -> MessageRecord {
        MessageRecord {
            sender: [sender; 32],
            sender_device: 1,
            outgoing: false,
            kind: 0,
            epoch: 2,
            id: [7; 16],
            sent_at_ms: 0,
            received_at_ms: 0,
            server_time_ms,
            content_type: 1,
            content: Zeroizing::new(b"x".to_vec()),
            receipts: Vec::new(),
            recalled: None,
            shared_by: None,
        }
    }

    #[test]
    fn a_recall_is_judged_on_relay_times_and_only_from_the_sender() {
        let id = MessageId([7; 16]);
        let r = record(1, 1_000_000);
        assert_eq!(
            recall_refusal(&r, &Fingerprint([1; 32]), 1_000_000, id),
            None
        );
        assert_eq!(
            recall_refusal(&r, &Fingerprint([1; 32]), 1_000_000 + RECALL_WINDOW_MS, id),
            None,
            "the last millisecond of the window"
        );
        let late = recall_refusal(&r, &Fingerprint([1; 32]), 1_000_001 + RECALL_WINDOW_MS, id);
        assert!(late.is_some_and(|why| why.contains("window")));
        let foreign = recall_refusal(&r, &Fingerprint([2; 32]), 1_000_000, id);
        assert!(foreign.is_some_and(|why| why.contains("did not send")));
    }

    #[test]
    fn the_membership_at_an_epoch_replays_adds_and_removals() {
        use hushwire::proto::clinic::OrgKey;
        use hushwire::proto::conversation::{ChangeProposal, genesis_hash};
        let org_key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let org = OrgKey::new(org_key.verifying_key()).unwrap();
        let patient = hushwire::Account::new(1, 0, &mut crate::os::rng());
        let conversation = ConversationId([5; 16]);
        let sign = |epoch: u64, previous_hash: [u8; 32], action, devices: Vec<u32>| {
            MembershipChange::sign(
                ChangeProposal {
                    conversation,
                    epoch,
                    previous_hash,
                    issued_at: 1,
                    action,
                    role: MemberRole::Patient,
                    member: patient.identity_key().clone(),
                    devices,
                    member_certificate: None,
                },
                patient.identity(),
                patient.identity_key().clone(),
                1,
                None,
            )
            .unwrap()
        };
        let open = sign(
            0,
            genesis_hash(&conversation, &org),
            ChangeAction::Add,
            vec![1, 2],
        );
        let remove = sign(1, open.hash(), ChangeAction::Remove, vec![2]);
        let changes = vec![open.to_bytes(), remove.to_bytes()];
        let who = patient.identity_key().fingerprint();
        assert_eq!(
            role_at(&changes, 0, &who, 1),
            None,
            "nothing before epoch 1"
        );
        assert_eq!(role_at(&changes, 1, &who, 2), Some(MemberRole::Patient));
        assert_eq!(role_at(&changes, 2, &who, 2), None, "removed at epoch 2");
        assert_eq!(role_at(&changes, 2, &who, 1), Some(MemberRole::Patient));
        assert!(ever_in_role(&changes, &who, &[MemberRole::Patient]));
        assert!(!ever_in_role(&changes, &who, &[MemberRole::Agent]));
    }

    #[test]
    fn only_conversation_payloads_name_a_conversation() {
        let mut bytes = vec![0x01, 0x05];
        bytes.extend_from_slice(&[9; 16]);
        assert_eq!(
            conversation_of_payload(&bytes),
            Some(ConversationId([9; 16]))
        );
        assert_eq!(conversation_of_payload(&bytes[..17]), None, "truncated id");
        bytes[1] = 0x01;
        assert_eq!(conversation_of_payload(&bytes), None, "a two-party message");
        bytes[1] = 0x0a;
        assert_eq!(conversation_of_payload(&bytes), None, "an unknown kind");
        assert_eq!(conversation_of_payload(&[]), None);
    }
}
