//! One transcript entry as the app sees it, and its explicit encoding (the plaintext that is
//! sealed; `docs/transcripts.md` §2).

use hushwire_proto::Fingerprint;
use hushwire_proto::codec::{Codec, DecodeError, Reader, put_bytes_u32};

use crate::wire::MAX_PLAINTEXT_LEN;

/// Largest content a record holds: one message's plaintext.
pub const MAX_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN;

/// Whether this device sent or received the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent by this device.
    Sent,
    /// Received by this device.
    Received,
}

/// What the content bytes are. Values other than these are kept as [`ContentType::Other`] so a
/// newer app's records stay verifiable by an older auditor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// UTF-8 text.
    Text,
    /// Opaque bytes (an attachment pointer, a structured app payload).
    Binary,
    /// A value this version does not name.
    Other(u8),
}

impl ContentType {
    fn to_byte(self) -> u8 {
        match self {
            Self::Text => 1,
            Self::Binary => 2,
            Self::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::Text,
            2 => Self::Binary,
            other => Self::Other(other),
        }
    }
}

/// One message in a conversation, as recorded.
#[derive(Clone, PartialEq, Eq)]
pub struct TranscriptRecord {
    /// Sent or received.
    pub direction: Direction,
    /// Fingerprint of the sender's identity.
    pub sender: Fingerprint,
    /// The message's id (assigned by the sending client).
    pub message_id: [u8; 16],
    /// When it was sent (sender's clock, Unix milliseconds).
    pub sent_at_ms: u64,
    /// When this device recorded it (Unix milliseconds).
    pub received_at_ms: u64,
    /// What the content is.
    pub content_type: ContentType,
    /// The message content (at most [`MAX_CONTENT_LEN`] bytes).
    pub content: Vec<u8>,
}

impl core::fmt::Debug for TranscriptRecord {
    /// Never prints the content: transcripts hold PHI.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TranscriptRecord")
            .field("direction", &self.direction)
            .field("sender", &self.sender)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("content_type", &self.content_type)
            .field("content_len", &self.content.len())
            .finish_non_exhaustive()
    }
}

impl Codec for TranscriptRecord {
    const NAME: &'static str = "transcript record";

    /// `direction[1] ‖ sender[32] ‖ message_id[16] ‖ sent_at_ms[8] ‖ received_at_ms[8] ‖
    /// content_type[1] ‖ content_len[4] ‖ content`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.direction {
            Direction::Sent => 0,
            Direction::Received => 1,
        });
        out.extend_from_slice(&self.sender.0);
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        out.push(self.content_type.to_byte());
        put_bytes_u32(out, &self.content);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let direction = match r.u8("direction")? {
            0 => Direction::Sent,
            1 => Direction::Received,
            _ => return Err(DecodeError::InvalidValue { field: "direction" }),
        };
        Ok(Self {
            direction,
            sender: Fingerprint(r.array("sender")?),
            message_id: r.array("message id")?,
            sent_at_ms: r.u64("sent at")?,
            received_at_ms: r.u64("received at")?,
            content_type: ContentType::from_byte(r.u8("content type")?),
            content: r.bytes_u32(MAX_CONTENT_LEN, "content")?.to_vec(),
        })
    }
}
