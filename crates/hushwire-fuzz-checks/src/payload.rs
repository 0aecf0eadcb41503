//! The client's payload, the plaintext inside every session message (`docs/client.md` §4):
//! what a peer's device chose to encrypt, so as untrusted as any bytes on the wire.

use hushwire_client::payload::{
    MAX_CONTENT_LEN, MAX_CONVERSATION_CONTENT_LEN, MAX_NOTE_LEN, MAX_RECEIPT_IDS,
    MAX_SHARED_MESSAGES, PAYLOAD_VERSION, Payload,
};

/// A client payload (message, receipt, session reset, sent copy, or a clinic conversation's): decoding never panics, whatever
/// decodes re-encodes to exactly the same bytes, and a decoded payload is within the limits
/// §4 sets (so the encoder, which trusts its input, never has to drop or clamp anything).
pub fn client_payload(data: &[u8]) {
    let Ok(payload) = Payload::decode(data) else {
        return;
    };
    assert_eq!(
        payload.encode().as_slice(),
        data,
        "non-canonical payload accepted"
    );
    assert_eq!(
        data.first(),
        Some(&PAYLOAD_VERSION),
        "wrong version accepted"
    );
    match &payload {
        Payload::Message { content, .. } => {
            assert!(
                content.len() <= MAX_CONTENT_LEN,
                "oversized content accepted"
            );
            assert_eq!(data.len(), 31 + content.len(), "message length off");
        }
        Payload::Receipt(ids) => {
            assert!(
                (1..=MAX_RECEIPT_IDS).contains(&ids.len()),
                "receipt of {} ids accepted",
                ids.len()
            );
            assert_eq!(data.len(), 4 + 16 * ids.len(), "receipt length off");
        }
        Payload::SessionReset(reason) => {
            assert_eq!(
                data,
                [PAYLOAD_VERSION, 0x03, *reason as u8],
                "reset bytes off"
            );
        }
        Payload::SentCopy { content, .. } => {
            assert!(
                content.len() <= MAX_CONTENT_LEN,
                "oversized content accepted"
            );
            assert_eq!(data.len(), 67 + content.len(), "sent copy length off");
            assert!(
                data.len() <= hushwire::wire::MAX_PLAINTEXT_LEN,
                "a sent copy past the session's limit"
            );
        }
        Payload::ConversationMessage(m) => {
            assert!(
                m.content.len() <= MAX_CONVERSATION_CONTENT_LEN,
                "oversized content accepted"
            );
            assert_eq!(data.len(), 55 + m.content.len(), "message length off");
        }
        Payload::ConversationReceipt { ids, .. } => {
            assert!(
                (1..=MAX_RECEIPT_IDS).contains(&ids.len()),
                "receipt of {} ids accepted",
                ids.len()
            );
            assert_eq!(data.len(), 21 + 16 * ids.len(), "receipt length off");
        }
        Payload::Recall { .. } => assert_eq!(data.len(), 42, "recall length off"),
        Payload::HistoryShare {
            conversation,
            messages,
        } => {
            assert!(
                (1..=MAX_SHARED_MESSAGES).contains(&messages.len()),
                "share of {} messages accepted",
                messages.len()
            );
            assert!(
                messages
                    .iter()
                    .all(|m| m.message.conversation == *conversation),
                "a message of another conversation shared"
            );
        }
        Payload::StaffNote { note, .. } => {
            assert!(
                (1..=MAX_NOTE_LEN).contains(&note.len()),
                "note of {} bytes accepted",
                note.len()
            );
            assert!(
                !note.chars().any(char::is_control),
                "a control character in a note"
            );
        }
    }
}
