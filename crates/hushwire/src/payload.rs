//! What a client puts inside a session message (the ratchet's plaintext), byte for byte in
//! `docs/client.md` §4:
//!
//! ```text
//! version u8 = 1
//! kind    u8 = 0x01 message | 0x02 receipt | 0x03 session reset | 0x04 sent copy
//!              | 0x05 conversation message | 0x06 conversation receipt | 0x07 recall
//!              | 0x08 history share | 0x09 staff note        (docs/conversations.md §8)
//! message: message_id[16] sent_at_ms u64 content_type u8 content (u32 length ‖ bytes)
//! receipt: count u16 (1..=256) message_id[16] × count
//! session reset: reason u8 (0x01 undecryptable | 0x02 key reused | 0x03 chain too far ahead)
//! sent copy: recipient_fingerprint[32] recipient_device u32, then a message's fields
//! conversation message: conversation_id[16] epoch u64, then a message's fields
//! conversation receipt: conversation_id[16] status u8 count u16 (1..=256) message_id[16] × count
//! recall: conversation_id[16] message_id[16] recalled_at_ms u64
//! history share: conversation_id[16] count u16 (1..=64)
//!                (sender_fingerprint[32] sender_device u32 u32 length ‖ conversation message)*
//! staff note: conversation_id[16] note_len u8 (1..=200) note
//! ```
//!
//! Before encryption the payload is padded with zero bytes to a multiple of [`PADDING_BLOCK`]
//! (256) bytes, so a ciphertext's length tells only which 256-byte bucket it falls in
//! (`docs/client.md` §4.5).

use core::fmt;

use hushwire_proto::codec::{DecodeError, Reader, put_bytes_u32};
use hushwire_proto::conversation::ConversationId;
use hushwire_proto::relay::DeviceAddress;
use zeroize::Zeroizing;

use crate::transcript::ContentType;
use crate::wire::MAX_PLAINTEXT_LEN;

/// A message's id: 16 random bytes chosen by the sending client, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Text that is not a message id (32 hex digits); holds at most its first 40 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidMessageId(pub String);

impl fmt::Display for InvalidMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a message id (32 hex digits): {:?}", self.0)
    }
}

impl core::str::FromStr for MessageId {
    type Err = InvalidMessageId;

    /// 32 hex digits (either case, surrounding blanks ignored), as `Display` writes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMessageId(s.chars().take(40).collect());
        let digits = s.trim().as_bytes();
        if digits.len() != 32 {
            return Err(invalid());
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
            let text = core::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| invalid())?;
        }
        Ok(Self(id))
    }
}

/// Payload format version.
pub const PAYLOAD_VERSION: u8 = 1;
const KIND_MESSAGE: u8 = 0x01;
const KIND_RECEIPT: u8 = 0x02;
const KIND_SESSION_RESET: u8 = 0x03;
const KIND_SENT_COPY: u8 = 0x04;
const KIND_CONVERSATION_MESSAGE: u8 = 0x05;
const KIND_CONVERSATION_RECEIPT: u8 = 0x06;
const KIND_RECALL: u8 = 0x07;
const KIND_HISTORY_SHARE: u8 = 0x08;
const KIND_STAFF_NOTE: u8 = 0x09;
/// Bytes a conversation message adds around its content: version, kind, conversation id 16,
/// epoch 8, message id 16, sent at 8, content type 1, length 4.
const CONVERSATION_MESSAGE_OVERHEAD: usize = 1 + 1 + 16 + 8 + 16 + 8 + 1 + 4;
/// Largest content of one conversation message: 65 481 bytes, so that the payload fits one
/// session message (`docs/conversations.md` §8.1). A sender's own other devices are members and
/// receive the same payload, so no sent copy has to hold it.
pub const MAX_CONVERSATION_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN - CONVERSATION_MESSAGE_OVERHEAD;
/// Most messages one history share carries (§8.4); more take several payloads.
pub const MAX_SHARED_MESSAGES: usize = 64;
/// Longest hand-off note, in bytes of UTF-8 (§8.5).
pub const MAX_NOTE_LEN: usize = 200;
/// A recall is honoured only if it reaches the relay at most this long after the message did
/// (both times from `Deliver`, §8.3).
pub const RECALL_WINDOW_MS: u64 = 600_000;
/// Bytes a sent copy adds around its content: a message's 31 and the recipient's address, 36.
const SENT_COPY_OVERHEAD: usize = 1 + 1 + 32 + 4 + 16 + 8 + 1 + 4;
/// Largest content one message carries: 65 469 bytes, so that the copy of any message sent to
/// this person's other devices (§4.6), the largest payload, fits in one session message.
pub const MAX_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN - SENT_COPY_OVERHEAD;
/// Most message ids one receipt acknowledges.
pub const MAX_RECEIPT_IDS: usize = 256;
/// Payloads are padded to a multiple of this many bytes before encryption (§4.5). It divides
/// `MAX_PLAINTEXT_LEN` (65 536), so padding never takes a payload past the session's limit.
pub const PADDING_BLOCK: usize = 256;

/// `payload ‖ 0x00 × k`, with `k` the fewest bytes (0 to 255) that make the length a multiple
/// of [`PADDING_BLOCK`] (§4.5). The empty payload (never sent) stays empty.
pub fn pad(payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let padded_len = payload.len().div_ceil(PADDING_BLOCK) * PADDING_BLOCK;
    let mut out = Zeroizing::new(Vec::with_capacity(padded_len));
    out.extend_from_slice(payload);
    out.resize(padded_len, 0);
    out
}

/// A decoded payload (`docs/client.md` §4). Public so that other implementations (a browser
/// client, a fuzzer, a test-vector checker) share this one codec.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// A message for the user (§4.1).
    Message {
        /// Chosen by the sender: 16 random bytes.
        id: MessageId,
        /// The sender's clock, Unix milliseconds.
        sent_at_ms: u64,
        /// What the content is.
        content_type: ContentType,
        /// At most [`MAX_CONTENT_LEN`] bytes, wiped when dropped.
        content: Zeroizing<Vec<u8>>,
    },
    /// The sender's device durably stored these messages.
    Receipt(Vec<MessageId>),
    /// The sender's device could not read a message from us: start a new session and send
    /// again what it has not confirmed (`docs/client.md` §5.13).
    SessionReset(ResetReason),
    /// A message this person's other device sent to `recipient`, copied to this device so that
    /// every device's transcript is complete (`docs/client.md` §4.6, §8.6).
    SentCopy {
        /// The device the message was sent to (the person is found by its fingerprint).
        recipient: hushwire_proto::relay::DeviceAddress,
        /// The message's id.
        id: MessageId,
        /// When the other device sent it, Unix milliseconds.
        sent_at_ms: u64,
        /// What the content is.
        content_type: ContentType,
        /// At most [`MAX_CONTENT_LEN`] bytes, wiped when dropped.
        content: Zeroizing<Vec<u8>>,
    },
    /// A message to a clinic conversation (`docs/conversations.md` §8.1).
    ConversationMessage(ConversationMessage),
    /// Delivered or read, per member, for messages of one conversation (§8.2).
    ConversationReceipt {
        /// The conversation.
        conversation: ConversationId,
        /// Delivered or read.
        status: ReceiptStatus,
        /// 1 to [`MAX_RECEIPT_IDS`] message ids.
        ids: Vec<MessageId>,
    },
    /// The sender withdraws one of its messages (§8.3). Shown, never erased.
    Recall {
        /// The conversation.
        conversation: ConversationId,
        /// The recalled message.
        id: MessageId,
        /// The recaller's clock, Unix milliseconds: shown, not trusted.
        recalled_at_ms: u64,
    },
    /// Earlier messages shared with a newly added member's devices (§8.4).
    HistoryShare {
        /// The conversation.
        conversation: ConversationId,
        /// 1 to [`MAX_SHARED_MESSAGES`] messages of this conversation, each with its sender.
        messages: Vec<SharedMessage>,
    },
    /// A hand-off note, to staff devices only (§8.5).
    StaffNote {
        /// The conversation.
        conversation: ConversationId,
        /// One line, 1 to [`MAX_NOTE_LEN`] bytes, under the display-name rules (`clinic.md` §1)
        /// except length; wiped when dropped.
        note: Zeroizing<String>,
    },
}

/// A conversation message's fields (`docs/conversations.md` §8.1).
#[derive(Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    /// The conversation.
    pub conversation: ConversationId,
    /// The membership epoch the sender encrypted under (its verified head's next epoch).
    pub epoch: u64,
    /// Chosen by the sender: 16 random bytes.
    pub id: MessageId,
    /// The sender's clock, Unix milliseconds.
    pub sent_at_ms: u64,
    /// What the content is.
    pub content_type: ContentType,
    /// At most [`MAX_CONVERSATION_CONTENT_LEN`] bytes, wiped when dropped.
    pub content: Zeroizing<Vec<u8>>,
}

/// One message of a history share: who sent it, and the message.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedMessage {
    /// The device that sent it (as the sharer recorded it).
    pub sender: DeviceAddress,
    /// The message, of the share's conversation.
    pub message: ConversationMessage,
}

/// `message_id[16] ‖ sent_at_ms[8] ‖ content_type[1] ‖ content_len[4] ‖ content`: the fields every
/// message-carrying payload ends with (kinds 0x01, 0x04, 0x05).
fn put_message_fields(
    out: &mut Vec<u8>,
    id: MessageId,
    sent_at_ms: u64,
    content_type: ContentType,
    content: &[u8],
) {
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    out.push(content_type_byte(content_type));
    put_bytes_u32(out, content);
}

/// A message's id, send time, content type and content, as [`read_message_fields`] returns them.
type MessageFields = (MessageId, u64, ContentType, Zeroizing<Vec<u8>>);

/// Reads what [`put_message_fields`] writes, refusing content over `max_content` bytes before
/// allocating.
fn read_message_fields(
    r: &mut Reader<'_>,
    max_content: usize,
) -> Result<MessageFields, DecodeError> {
    Ok((
        MessageId(r.array("message id")?),
        r.u64("sent at")?,
        content_type_from(r.u8("content type")?),
        Zeroizing::new(r.bytes_u32(max_content, "content")?.to_vec()),
    ))
}

/// `count[2] ‖ message_id[16] × count`, at most [`MAX_RECEIPT_IDS`] ids (receipt kinds 0x02 and
/// 0x06).
fn put_receipt_ids(out: &mut Vec<u8>, ids: &[MessageId]) {
    let count = u16::try_from(ids.len().min(MAX_RECEIPT_IDS)).unwrap_or(0);
    out.extend_from_slice(&count.to_be_bytes());
    for id in ids.iter().take(MAX_RECEIPT_IDS) {
        out.extend_from_slice(&id.0);
    }
}

/// Reads what [`put_receipt_ids`] writes: 1 to [`MAX_RECEIPT_IDS`] ids, else
/// `InvalidValue { field: "receipt count" }` before allocating.
fn read_receipt_ids(r: &mut Reader<'_>) -> Result<Vec<MessageId>, DecodeError> {
    let count = usize::from(r.u16("receipt count")?);
    if count == 0 || count > MAX_RECEIPT_IDS {
        return Err(DecodeError::InvalidValue {
            field: "receipt count",
        });
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(MessageId(r.array("message id")?));
    }
    Ok(ids)
}

/// A conversation receipt's status (§8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptStatus {
    /// The device stored the message.
    Delivered = 0x01,
    /// The message was shown to its user.
    Read = 0x02,
}

impl ConversationMessage {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(KIND_CONVERSATION_MESSAGE);
        out.extend_from_slice(&self.conversation.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_message_fields(
            out,
            self.id,
            self.sent_at_ms,
            self.content_type,
            &self.content,
        );
    }

    /// Reads the fields after the kind byte.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let conversation = ConversationId(r.array("conversation id")?);
        let epoch = r.u64("epoch")?;
        let (id, sent_at_ms, content_type, content) =
            read_message_fields(r, MAX_CONVERSATION_CONTENT_LEN)?;
        Ok(Self {
            conversation,
            epoch,
            id,
            sent_at_ms,
            content_type,
            content,
        })
    }

    /// The payload's bytes, unpadded.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![PAYLOAD_VERSION]);
        self.write(&mut out);
        out
    }
}

/// A history share's inner payload: `0x01 ‖ 0x05 ‖` a conversation message's fields, nothing
/// after them.
fn read_shared_message(bytes: &[u8]) -> Result<ConversationMessage, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.u8("payload version")? != PAYLOAD_VERSION
        || r.u8("payload kind")? != KIND_CONVERSATION_MESSAGE
    {
        return Err(DecodeError::InvalidValue {
            field: "shared message",
        });
    }
    let message = ConversationMessage::read(&mut r)?;
    r.expect_empty("shared message")?;
    Ok(message)
}

/// Why a device asks for a new session (`docs/client.md` §4.3, §5.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// No session could read the message (unknown prekey, failed authentication, lost state).
    Undecryptable = 0x01,
    /// A different message arrived under a message key already used (a rolled-back sender).
    KeyReused = 0x02,
    /// More messages were lost in a row than a session walks (`protocol.md` §5.4).
    TooFarAhead = 0x03,
}

/// The content type's byte (§4.1).
pub fn content_type_byte(t: ContentType) -> u8 {
    match t {
        ContentType::Text => 1,
        ContentType::Binary => 2,
        ContentType::Other(b) => b,
    }
}

fn content_type_from(b: u8) -> ContentType {
    match b {
        1 => ContentType::Text,
        2 => ContentType::Binary,
        other => ContentType::Other(other),
    }
}

impl Payload {
    /// The payload's bytes (`docs/client.md` §4), in a buffer wiped when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.push(PAYLOAD_VERSION);
        match self {
            Self::Message {
                id,
                sent_at_ms,
                content_type,
                content,
            } => {
                out.push(KIND_MESSAGE);
                put_message_fields(&mut out, *id, *sent_at_ms, *content_type, content);
            }
            Self::Receipt(ids) => {
                out.push(KIND_RECEIPT);
                put_receipt_ids(&mut out, ids);
            }
            Self::SessionReset(reason) => {
                out.push(KIND_SESSION_RESET);
                out.push(*reason as u8);
            }
            Self::SentCopy {
                recipient,
                id,
                sent_at_ms,
                content_type,
                content,
            } => {
                out.push(KIND_SENT_COPY);
                out.extend_from_slice(&recipient.fingerprint);
                out.extend_from_slice(&recipient.device_id.to_be_bytes());
                put_message_fields(&mut out, *id, *sent_at_ms, *content_type, content);
            }
            Self::ConversationMessage(message) => message.write(&mut out),
            Self::ConversationReceipt {
                conversation,
                status,
                ids,
            } => {
                out.push(KIND_CONVERSATION_RECEIPT);
                out.extend_from_slice(&conversation.0);
                out.push(*status as u8);
                put_receipt_ids(&mut out, ids);
            }
            Self::Recall {
                conversation,
                id,
                recalled_at_ms,
            } => {
                out.push(KIND_RECALL);
                out.extend_from_slice(&conversation.0);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&recalled_at_ms.to_be_bytes());
            }
            Self::HistoryShare {
                conversation,
                messages,
            } => {
                out.push(KIND_HISTORY_SHARE);
                out.extend_from_slice(&conversation.0);
                let count = u16::try_from(messages.len().min(MAX_SHARED_MESSAGES)).unwrap_or(0);
                out.extend_from_slice(&count.to_be_bytes());
                for shared in messages.iter().take(MAX_SHARED_MESSAGES) {
                    out.extend_from_slice(&shared.sender.fingerprint);
                    out.extend_from_slice(&shared.sender.device_id.to_be_bytes());
                    put_bytes_u32(&mut out, &shared.message.encode());
                }
            }
            Self::StaffNote { conversation, note } => {
                out.push(KIND_STAFF_NOTE);
                out.extend_from_slice(&conversation.0);
                // Notes are checked on construction (`staff_note`); a longer one would not
                // decode.
                out.push(u8::try_from(note.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(note.as_bytes());
            }
        }
        out
    }

    /// A staff note, if `note` is one line of 1 to [`MAX_NOTE_LEN`] bytes under the
    /// display-name rules (`clinic.md` §1) except length; `InvalidValue { field: "note" }`
    /// otherwise.
    pub fn staff_note(conversation: ConversationId, note: &str) -> Result<Self, DecodeError> {
        hushwire_proto::clinic::check_line(note, MAX_NOTE_LEN)
            .map_err(|_| DecodeError::InvalidValue { field: "note" })?;
        Ok(Self::StaffNote {
            conversation,
            note: Zeroizing::new(note.to_owned()),
        })
    }

    /// Decodes a payload; bounded and total (`docs/client.md` §4.4): every refusal is a
    /// [`DecodeError`], and whatever decodes re-encodes to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let payload = Self::read(&mut r)?;
        r.expect_empty("payload")?;
        Ok(payload)
    }

    /// Decodes a decrypted plaintext: a payload followed by its padding (§4.5), which must be
    /// zero bytes, of any length (0 included). A non-zero byte after the payload is
    /// `InvalidValue { field: "padding" }`.
    pub fn decode_padded(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let payload = Self::read(&mut r)?;
        if r.rest().iter().any(|&b| b != 0) {
            return Err(DecodeError::InvalidValue { field: "padding" });
        }
        Ok(payload)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("payload version")?;
        if version != PAYLOAD_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let payload = match r.u8("payload kind")? {
            KIND_MESSAGE => {
                let (id, sent_at_ms, content_type, content) =
                    read_message_fields(r, MAX_CONTENT_LEN)?;
                Self::Message {
                    id,
                    sent_at_ms,
                    content_type,
                    content,
                }
            }
            KIND_RECEIPT => Self::Receipt(read_receipt_ids(r)?),
            KIND_SESSION_RESET => Self::SessionReset(match r.u8("reset reason")? {
                0x01 => ResetReason::Undecryptable,
                0x02 => ResetReason::KeyReused,
                0x03 => ResetReason::TooFarAhead,
                _ => {
                    return Err(DecodeError::InvalidValue {
                        field: "reset reason",
                    });
                }
            }),
            KIND_SENT_COPY => {
                let recipient = hushwire_proto::relay::DeviceAddress {
                    fingerprint: r.array("recipient fingerprint")?,
                    device_id: r.u32("recipient device")?,
                };
                let (id, sent_at_ms, content_type, content) =
                    read_message_fields(r, MAX_CONTENT_LEN)?;
                Self::SentCopy {
                    recipient,
                    id,
                    sent_at_ms,
                    content_type,
                    content,
                }
            }
            KIND_CONVERSATION_MESSAGE => Self::ConversationMessage(ConversationMessage::read(r)?),
            KIND_CONVERSATION_RECEIPT => {
                let conversation = ConversationId(r.array("conversation id")?);
                let status = match r.u8("receipt status")? {
                    0x01 => ReceiptStatus::Delivered,
                    0x02 => ReceiptStatus::Read,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "receipt status",
                        });
                    }
                };
                let ids = read_receipt_ids(r)?;
                Self::ConversationReceipt {
                    conversation,
                    status,
                    ids,
                }
            }
            KIND_RECALL => Self::Recall {
                conversation: ConversationId(r.array("conversation id")?),
                id: MessageId(r.array("message id")?),
                recalled_at_ms: r.u64("recalled at")?,
            },
            KIND_HISTORY_SHARE => {
                let conversation = ConversationId(r.array("conversation id")?);
                let count = usize::from(r.u16("shared count")?);
                if count == 0 || count > MAX_SHARED_MESSAGES {
                    return Err(DecodeError::InvalidValue {
                        field: "shared count",
                    });
                }
                let mut messages = Vec::with_capacity(count);
                for _ in 0..count {
                    let sender = DeviceAddress {
                        fingerprint: r.array("shared sender")?,
                        device_id: r.u32("shared sender")?,
                    };
                    let bytes = r.bytes_u32(MAX_PLAINTEXT_LEN, "shared message")?;
                    // The inner payload is a whole conversation message of this conversation,
                    // unpadded. Its kind is checked before anything else is read, so a share
                    // never nests another share (no recursion).
                    let message = read_shared_message(bytes)
                        .ok()
                        .filter(|m| m.conversation == conversation)
                        .ok_or(DecodeError::InvalidValue {
                            field: "shared message",
                        })?;
                    messages.push(SharedMessage { sender, message });
                }
                Self::HistoryShare {
                    conversation,
                    messages,
                }
            }
            KIND_STAFF_NOTE => {
                let conversation = ConversationId(r.array("conversation id")?);
                let len = usize::from(r.u8("note")?);
                if len > MAX_NOTE_LEN {
                    return Err(DecodeError::TooLong {
                        field: "note",
                        len,
                        max: MAX_NOTE_LEN,
                    });
                }
                let bytes = r.take(len, "note")?;
                let note = core::str::from_utf8(bytes)
                    .map_err(|_| DecodeError::InvalidValue { field: "note" })?;
                Self::staff_note(conversation, note)?
            }
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "payload kind",
                });
            }
        };
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn message_ids_read_back_what_they_print() {
        let id = MessageId([0xab; 16]);
        assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
        assert_eq!(
            " ABABABABABABABABABABABABABABABAB ".parse::<MessageId>(),
            Ok(id)
        );
        for bad in ["", "ab", &"g".repeat(32), &"é".repeat(16), &"ab".repeat(17)] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn padding_rounds_up_to_256_and_decodes_back() {
        let message = |len: usize| Payload::Message {
            id: MessageId([7; 16]),
            sent_at_ms: 1,
            content_type: ContentType::Binary,
            content: Zeroizing::new(vec![0u8; len]),
        };
        for (content, padded) in [(0, 256), (225, 256), (226, 512), (MAX_CONTENT_LEN, 65_536)] {
            let payload = message(content);
            let bytes = pad(&payload.encode());
            assert_eq!(bytes.len(), padded, "content of {content} bytes");
            // Content that ends in zero bytes is not mistaken for padding: the payload knows
            // its own length.
            assert!(Payload::decode_padded(&bytes).unwrap() == payload);
            // Strict decoding refuses padding; an exact fit has none.
            assert_eq!(
                Payload::decode(&bytes).is_ok(),
                bytes.len() == payload.encode().len()
            );
        }
        let receipt = Payload::Receipt(vec![MessageId([0; 16])]);
        assert_eq!(pad(&receipt.encode()).len(), 256);
        let mut bad = pad(&receipt.encode());
        *bad.last_mut().unwrap() = 1;
        assert!(matches!(
            Payload::decode_padded(&bad),
            Err(DecodeError::InvalidValue { field: "padding" })
        ));
        // Unpadded payloads (older senders) still decode.
        assert!(Payload::decode_padded(&receipt.encode()).unwrap() == receipt);
    }

    #[test]
    fn payloads_round_trip_and_bad_bytes_are_errors() {
        let message = Payload::Message {
            id: MessageId([7; 16]),
            sent_at_ms: 1_700_000_000_000,
            content_type: ContentType::Text,
            content: Zeroizing::new(b"hello".to_vec()),
        };
        let bytes = message.encode();
        assert!(Payload::decode(&bytes).unwrap() == message);
        let receipt = Payload::Receipt(vec![MessageId([1; 16]), MessageId([2; 16])]);
        assert!(Payload::decode(&receipt.encode()).unwrap() == receipt);
        for cut in 0..bytes.len() {
            assert!(Payload::decode(&bytes[..cut]).is_err());
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(Payload::decode(&trailing).is_err());
        assert!(
            Payload::decode(&[1, 2, 0, 0]).is_err(),
            "an empty receipt is refused"
        );
        assert!(Payload::decode(&[2, 1]).is_err(), "unknown version");
        // The session reset's bytes are fixed by the spec (client.md §4): 01 03 reason.
        let reset = Payload::SessionReset(ResetReason::KeyReused);
        assert_eq!(reset.encode().as_slice(), [1, 3, 2]);
        assert!(Payload::decode(&[1, 3, 2]).unwrap() == reset);
        assert!(Payload::decode(&[1, 3, 9]).is_err(), "unknown reason");
        assert!(Payload::decode(&[1, 3]).is_err(), "no reason");
        assert!(Payload::decode(&[1, 3, 1, 0]).is_err(), "trailing byte");
        assert!(Payload::decode(&[1, 9]).is_err(), "unknown kind");
        // A sent copy of the largest message is the largest payload: exactly the session's
        // limit, so every message can be copied to this person's other devices.
        let copy = Payload::SentCopy {
            recipient: hushwire_proto::relay::DeviceAddress {
                fingerprint: [9; 32],
                device_id: 3,
            },
            id: MessageId([7; 16]),
            sent_at_ms: 1,
            content_type: ContentType::Text,
            content: Zeroizing::new(vec![b'a'; MAX_CONTENT_LEN]),
        };
        let bytes = copy.encode();
        assert_eq!(bytes.len(), MAX_PLAINTEXT_LEN);
        assert!(Payload::decode(&bytes).unwrap() == copy);
        for cut in [0, 2, 33, 37, 53, 61, 62, 66, bytes.len() - 1] {
            assert!(Payload::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn conversation_message(len: usize) -> ConversationMessage {
        ConversationMessage {
            conversation: ConversationId([0xc0; 16]),
            epoch: 3,
            id: MessageId([7; 16]),
            sent_at_ms: 1,
            content_type: ContentType::Text,
            content: Zeroizing::new(vec![b'a'; len]),
        }
    }

    #[test]
    fn conversation_payloads_round_trip_within_the_session_limit() {
        let largest =
            Payload::ConversationMessage(conversation_message(MAX_CONVERSATION_CONTENT_LEN));
        let bytes = largest.encode();
        assert_eq!(bytes.len(), MAX_PLAINTEXT_LEN);
        assert!(Payload::decode(&bytes).unwrap() == largest);
        assert_eq!(pad(&bytes).len(), MAX_PLAINTEXT_LEN);
        let conversation = ConversationId([0xc0; 16]);
        let all = [
            Payload::ConversationMessage(conversation_message(5)),
            Payload::ConversationReceipt {
                conversation,
                status: ReceiptStatus::Delivered,
                ids: vec![MessageId([1; 16])],
            },
            Payload::Recall {
                conversation,
                id: MessageId([1; 16]),
                recalled_at_ms: 9,
            },
            Payload::HistoryShare {
                conversation,
                messages: vec![SharedMessage {
                    sender: DeviceAddress {
                        fingerprint: [2; 32],
                        device_id: 4,
                    },
                    message: conversation_message(3),
                }],
            },
            Payload::staff_note(conversation, "Call back about the lab — not urgent").unwrap(),
        ];
        for payload in &all {
            let bytes = payload.encode();
            assert!(Payload::decode(&bytes).unwrap() == *payload);
            assert!(Payload::decode_padded(&pad(&bytes)).unwrap() == *payload);
            for cut in 0..bytes.len() {
                assert!(Payload::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn conversation_payloads_refuse_what_the_spec_refuses() {
        let conversation = ConversationId([0xc0; 16]);
        for bad in [
            "",
            " padded",
            "two\nlines",
            "bidi \u{202e}",
            &"x".repeat(201),
        ] {
            assert!(Payload::staff_note(conversation, bad).is_err(), "{bad:?}");
        }
        assert!(Payload::staff_note(conversation, &"x".repeat(200)).is_ok());
        // A share of a message of another conversation, or nesting a share, is refused.
        let share = |inner: Zeroizing<Vec<u8>>| {
            let mut out = vec![PAYLOAD_VERSION, KIND_HISTORY_SHARE];
            out.extend_from_slice(&conversation.0);
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&[2; 36]);
            put_bytes_u32(&mut out, &inner);
            out
        };
        let mut foreign = conversation_message(1);
        foreign.conversation = ConversationId([0xc1; 16]);
        let nested = share(conversation_message(1).encode());
        assert!(Payload::decode(&nested).is_ok());
        for bad in [
            share(foreign.encode()),
            share(Zeroizing::new(nested.clone())),
        ] {
            assert_eq!(
                Payload::decode(&bad).err(),
                Some(DecodeError::InvalidValue {
                    field: "shared message"
                })
            );
        }
        // Unknown receipt status; a receipt of no id.
        let mut receipt = vec![PAYLOAD_VERSION, KIND_CONVERSATION_RECEIPT];
        receipt.extend_from_slice(&conversation.0);
        assert!(Payload::decode(&[receipt.as_slice(), &[3, 0, 1], &[0; 16]].concat()).is_err());
        assert!(Payload::decode(&[receipt.as_slice(), &[1, 0, 0]].concat()).is_err());
        assert!(
            Payload::decode(&[PAYLOAD_VERSION, 0x0a]).is_err(),
            "unknown kind"
        );
    }
}
