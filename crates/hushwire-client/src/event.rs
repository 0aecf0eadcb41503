//! What the client tells the app, as it happens: [`crate::Client::events`].

use core::fmt;

use hushwire::transcript::ContentType;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::contact::ContactId;

pub use hushwire::payload::MessageId;

/// A message received from a contact. Its content is PHI: `Debug` shows its length only, and
/// the buffer is wiped when dropped.
#[derive(Clone)]
pub struct ReceivedMessage {
    /// Who sent it.
    pub contact: ContactId,
    /// The contact's name in this store.
    pub contact_name: String,
    /// The sender's id for it.
    pub id: MessageId,
    /// When the sender sent it (sender's clock, Unix ms).
    pub sent_at_ms: u64,
    /// When this device stored it (Unix ms).
    pub received_at_ms: u64,
    /// What the content is.
    pub content_type: ContentType,
    /// The content.
    pub content: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("contact", &self.contact)
            .field("id", &self.id)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("content_type", &self.content_type)
            .field("content_len", &self.content.len())
            .finish_non_exhaustive()
    }
}

/// The state of the relay connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Dialling the relay.
    Connecting,
    /// Authenticated; messages flow.
    Connected,
    /// The connection dropped or failed; the client retries after `retry_in_ms`.
    Disconnected {
        /// Why (no secrets).
        reason: String,
        /// Backoff before the next attempt.
        retry_in_ms: u64,
    },
    /// Stopped by [`crate::Client::disconnect`].
    Stopped,
}

/// Something the app should know about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message arrived and is stored (session state, transcript and dedupe marker committed).
    MessageReceived(ReceivedMessage),
    /// The relay holds a sent message durably.
    MessageSent {
        /// To whom.
        contact: ContactId,
        /// Which message.
        id: MessageId,
    },
    /// The recipient's device stored the message (an end-to-end encrypted receipt).
    MessageDelivered {
        /// Who confirmed.
        contact: ContactId,
        /// Which message.
        id: MessageId,
    },
    /// Messages from a contact are missing: later ones arrived, these have not (yet).
    GapDetected {
        /// Whose messages.
        contact: ContactId,
        /// How many are missing in the contact's session right now.
        missing: usize,
    },
    /// The messages a [`Event::GapDetected`] reported missing from a contact are no longer
    /// missing: each has arrived, or was given up and reported with [`Event::MessagesLost`].
    /// An app clears its "messages missing" warning (`docs/client.md` §5.4).
    GapClosed {
        /// Whose messages.
        contact: ContactId,
    },
    /// A message could not be decrypted. It was acknowledged to the relay (it could never be
    /// read) and recorded; nothing else changed.
    DecryptFailed {
        /// The sending device as the relay claims it.
        sender: Address,
        /// Why, without secrets.
        reason: String,
    },
    /// Messages to a contact are held in the outbox: the relay has no prekeys for them or
    /// refused their bundle, returned a bundle for another identity, does not know their
    /// device, or a session could not be started. Reported once per reason; retried every few
    /// seconds.
    SendHeld {
        /// Whose messages.
        contact: ContactId,
        /// Why (no secrets).
        reason: String,
    },
    /// Someone not in the contacts started a session; they were added, unverified.
    NewContact {
        /// The new contact.
        contact: ContactId,
        /// The name given to it (`unknown-` and the start of the fingerprint).
        name: String,
    },
    /// A contact's identity key changed; sending to them is blocked until re-verified.
    IdentityChanged {
        /// Which contact.
        contact: ContactId,
    },
    /// One-time prekeys were generated and published to the relay.
    PreKeysReplenished {
        /// X25519 one-time prekeys published.
        one_time: u32,
        /// ML-KEM one-time prekeys published.
        kem_one_time: u32,
    },
    /// The signed prekey (and last-resort ML-KEM prekey) were rotated and published.
    SignedPreKeyRotated,
    /// The connection state changed.
    Connection(ConnectionState),
    /// A sent message changed state (`docs/client.md` §5.13): every change after
    /// [`MessageState::Queued`] is reported, so an app can show each message's delivery.
    MessageStateChanged {
        /// To whom.
        contact: ContactId,
        /// Which message.
        id: MessageId,
        /// Its new state.
        state: MessageState,
    },
    /// A conversation healed itself: a session with the contact was replaced
    /// (`docs/client.md` §5.13). Show it to the person as a one-line notice.
    SessionReset {
        /// With whom.
        contact: ContactId,
        /// True when the contact's device could not read this device's messages and asked;
        /// false when this device could not read the contact's and asked.
        requested_by_peer: bool,
        /// How many unconfirmed messages were queued again (when `requested_by_peer`).
        resent: usize,
    },
    /// Messages from a contact can no longer be read: more were lost in a row than a session
    /// keeps keys for (`docs/protocol.md` §5.4), or they arrived after their keys were given up.
    MessagesLost {
        /// Whose messages.
        contact: ContactId,
        /// How many.
        count: u64,
    },
    /// A contact's device sent a different message under a message key already used: its store
    /// was restored from a copy or its state rolled back. The message was not shown; the session
    /// is replaced (`docs/client.md` §5.13). A security event: the two messages' ciphertexts,
    /// XORed, reveal the XOR of their plaintexts to whoever holds both (the relay).
    KeyReuseDetected {
        /// Whose device.
        contact: ContactId,
    },
    /// The relay no longer knew this device (its data was restored or wiped) and registered it
    /// again: whatever it held for this device is lost; contacts' unconfirmed messages come
    /// back through their receipts and resets (`docs/client.md` §5.11, §5.13).
    RegisteredAgain,
    /// This store is an older copy than the one the relay last saw (a backup restored, or a
    /// copy used elsewhere): every session was retired before anything was sent, so no message
    /// key is used twice; new sessions start with each contact (`docs/client.md` §5.14).
    StoreRollbackDetected {
        /// The contacts whose sessions start again.
        contacts: Vec<ContactId>,
    },
    /// Whether a contact is a verified agent of the pinned clinic changed: its certificate was
    /// fetched, expired, or revoked, or a clinic was pinned (`docs/client.md` §8).
    AgentStatusChanged {
        /// Which contact.
        contact: ContactId,
        /// Its new status.
        status: crate::client::AgentStatus,
    },
    /// Another of this person's devices sent a message; its copy is now in this device's
    /// transcript of the contact it went to (`docs/client.md` §8.6).
    SentByOtherDevice {
        /// The message: `contact` and `contact_name` are the contact it went to,
        /// `received_at_ms` when the copy arrived here. Its `Debug` shows no content.
        message: ReceivedMessage,
        /// The device that sent it.
        device_id: u32,
    },
    /// A message of a clinic conversation arrived from a member that could send it at its
    /// epoch (`docs/conversations.md` §8.1), or a hand-off note for staff (`staff_note`). Its
    /// `Debug` shows no content; escape the text before showing it.
    ConversationMessageReceived(crate::ConversationMessageView),
    /// A member device confirmed a conversation message (§8.2): delivered or read.
    ConversationReceipt {
        /// The conversation.
        conversation: hushwire::proto::conversation::ConversationId,
        /// The message.
        id: MessageId,
        /// The confirming member.
        member: hushwire::proto::Fingerprint,
        /// Its device.
        device: u32,
        /// Delivered or read.
        status: hushwire::payload::ReceiptStatus,
    },
    /// A conversation message was recalled by its sender (§8.3): show it as "recalled by
    /// `by` at `at_ms`", never erase it.
    ConversationMessageRecalled {
        /// The conversation.
        conversation: hushwire::proto::conversation::ConversationId,
        /// The message.
        id: MessageId,
        /// Who recalled it, as shown ("Name — verified agent of Clinic", "patient", "you").
        by: String,
        /// When (the relay's time, Unix ms).
        at_ms: u64,
    },
    /// The verified membership of a conversation changed (§5.1 step 7): one line per change,
    /// such as "Dana Reyes — verified agent of Lakeside Clinic joined as agent".
    ConversationMembershipChanged {
        /// The conversation.
        conversation: hushwire::proto::conversation::ConversationId,
        /// What changed, in epoch order.
        changes: Vec<String>,
    },
    /// Every agent on a conversation held here now holds a certificate the clinic revoked (a
    /// newer revocation list was taken): no verified agent answers it, and the relay put it
    /// back in the clinic's queue until another agent claims it (`conversations.md` §4.3 rule
    /// 9, §5.4). Not a membership change: the revoked agents leave with the claim that takes
    /// over.
    ConversationUnanswered {
        /// The conversation.
        conversation: hushwire::proto::conversation::ConversationId,
    },
    /// A membership change the relay pushed does not verify here (§4.3): the conversation's
    /// history stays as it was, and the reason is shown.
    ConversationRefused {
        /// The conversation.
        conversation: hushwire::proto::conversation::ConversationId,
        /// Why (the broken rule).
        reason: String,
    },
    /// The clinic's queue changed (an on-duty agent's push, §5.4).
    QueueChanged(hushwire::proto::conversation::queue::QueueEntry),
    /// Copies of conversation messages for the clinic's archive wait (§7): the clinic has not
    /// published an archive policy yet.
    ArchiveUnavailable {
        /// Copies waiting.
        waiting: usize,
        /// Why.
        reason: String,
    },
    /// A clinic administrator's verified wipe order erased this device's store
    /// (`docs/client.md` §8.5). The client stopped and cannot be used any more.
    Wiped {
        /// The administrator's certified name (escape it before showing it on a terminal).
        by: String,
        /// The clinic's name, from its signed link.
        clinic: String,
    },
}

impl Event {
    /// The contact an event is about, for the client to name the person rather than one of
    /// the person's device rows (`devices.rs`).
    pub(crate) fn contact_mut(&mut self) -> Option<&mut ContactId> {
        match self {
            Self::MessageReceived(m) => Some(&mut m.contact),
            Self::MessageSent { contact, .. }
            | Self::MessageDelivered { contact, .. }
            | Self::GapDetected { contact, .. }
            | Self::GapClosed { contact }
            | Self::SendHeld { contact, .. }
            | Self::NewContact { contact, .. }
            | Self::IdentityChanged { contact }
            | Self::MessageStateChanged { contact, .. }
            | Self::SessionReset { contact, .. }
            | Self::MessagesLost { contact, .. }
            | Self::KeyReuseDetected { contact }
            | Self::AgentStatusChanged { contact, .. } => Some(contact),
            Self::SentByOtherDevice { message, .. } => Some(&mut message.contact),
            Self::DecryptFailed { .. }
            | Self::PreKeysReplenished { .. }
            | Self::SignedPreKeyRotated
            | Self::Connection(_)
            | Self::RegisteredAgain
            | Self::StoreRollbackDetected { .. }
            | Self::Wiped { .. }
            | Self::ConversationMessageReceived(_)
            | Self::ConversationReceipt { .. }
            | Self::ConversationMessageRecalled { .. }
            | Self::ConversationMembershipChanged { .. }
            | Self::ConversationUnanswered { .. }
            | Self::ConversationRefused { .. }
            | Self::QueueChanged(_)
            | Self::ArchiveUnavailable { .. } => None,
        }
    }
}

/// Where a sent message is (`docs/client.md` §5.13), from [`crate::Client::message_state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// In the outbox, not yet held by the relay.
    Queued,
    /// The relay holds it durably; no receipt yet.
    Sent,
    /// The contact's device stored it (an end-to-end receipt arrived).
    Delivered,
    /// The contact's device could not read it; it is queued again on a new session.
    Retrying,
    /// Sent, but no receipt came within `ClientOptions::receipt_timeout`: the app should show it
    /// as not confirmed. A receipt that comes later still makes it `Delivered`.
    NotConfirmed,
    /// Given up after `MAX_RESENDS` resends: it will not be sent again on its own.
    Failed,
    /// Taken out of the outbox by the user before the relay had it ([`crate::Client::cancel`]).
    Cancelled,
}

impl MessageState {
    /// The stored code (`sent_messages.state`).
    pub(crate) fn code(self) -> i64 {
        match self {
            Self::Queued => 1,
            Self::Sent => 2,
            Self::Delivered => 3,
            Self::Retrying => 4,
            Self::NotConfirmed => 5,
            Self::Failed => 6,
            Self::Cancelled => 7,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::Queued,
            2 => Self::Sent,
            3 => Self::Delivered,
            4 => Self::Retrying,
            5 => Self::NotConfirmed,
            6 => Self::Failed,
            7 => Self::Cancelled,
            _ => return None,
        })
    }
}
