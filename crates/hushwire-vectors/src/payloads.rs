//! `payloads.json`: the client's payload (`docs/client.md` §4), the plaintext inside every
//! session message. No randomness: every field is fixed here, so the file changes only if the
//! format does.

use hushwire::proto::codec::DecodeError;
use hushwire::proto::conversation::ConversationId;
use hushwire::proto::relay::DeviceAddress;
use hushwire::transcript::ContentType;
use hushwire_client::MessageId;
use hushwire_client::payload::{
    ConversationMessage, MAX_CONTENT_LEN, MAX_CONVERSATION_CONTENT_LEN, MAX_NOTE_LEN,
    MAX_RECEIPT_IDS, MAX_SHARED_MESSAGES, PADDING_BLOCK, PAYLOAD_VERSION, Payload,
    RECALL_WINDOW_MS, ReceiptStatus, ResetReason, SharedMessage, content_type_byte, pad,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Error;

/// The message vector's id: the bytes 0x00 to 0x0f.
const MESSAGE_ID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The message vector's send time, Unix milliseconds.
const SENT_AT_MS: u64 = 1_700_000_000_000;
/// The message vector's text content.
const TEXT: &str = "Your lab results are ready. Reply here with any questions.";
/// The conversation vectors' conversation id: the bytes 0xc0 to 0xcf.
const CONVERSATION: [u8; 16] = [
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
];
/// The conversation message vector's epoch.
const EPOCH: u64 = 3;
/// The staff note vector's text.
const NOTE: &str = "Asked about her blood test; Dr. Okafor should call back — not urgent.";

/// The conversation message of the vectors.
fn conversation_message() -> ConversationMessage {
    ConversationMessage {
        conversation: ConversationId(CONVERSATION),
        epoch: EPOCH,
        id: MessageId(MESSAGE_ID),
        sent_at_ms: SENT_AT_MS,
        content_type: ContentType::Text,
        content: Zeroizing::new(TEXT.as_bytes().to_vec()),
    }
}

/// A reset reason's name in the vectors: the Rust variant's.
pub fn reason_name(reason: ResetReason) -> &'static str {
    match reason {
        ResetReason::Undecryptable => "Undecryptable",
        ResetReason::KeyReused => "KeyReused",
        ResetReason::TooFarAhead => "TooFarAhead",
    }
}

/// A decode error as the vectors publish it: the `DecodeError` variant and its fields.
pub fn decode_error_json(e: &DecodeError) -> Value {
    match *e {
        DecodeError::Truncated { field } => json!({"error": "Truncated", "field": field}),
        DecodeError::TrailingBytes { structure } => {
            json!({"error": "TrailingBytes", "structure": structure})
        }
        DecodeError::TooLong { field, len, max } => {
            json!({"error": "TooLong", "field": field, "len": len, "max": max})
        }
        DecodeError::UnsupportedVersion { version } => {
            json!({"error": "UnsupportedVersion", "version": version})
        }
        DecodeError::UnknownType { structure, tag } => {
            json!({"error": "UnknownType", "structure": structure, "tag": tag})
        }
        DecodeError::InvalidValue { field } => json!({"error": "InvalidValue", "field": field}),
    }
}

/// A payload's fields as the vectors publish them (without its encoding).
pub fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Message {
            id,
            sent_at_ms,
            content_type,
            content,
        } => {
            let mut v = json!({
                "kind": 1,
                "message_id": hex::encode(id.0),
                "sent_at_ms": sent_at_ms,
                "content_type": content_type_byte(*content_type),
                "content": hex::encode(content.as_slice()),
            });
            if let (ContentType::Text, Ok(text), Some(o)) = (
                content_type,
                std::str::from_utf8(content),
                v.as_object_mut(),
            ) {
                o.insert("content_text".into(), json!(text));
            }
            v
        }
        Payload::Receipt(ids) => json!({
            "kind": 2,
            "message_ids": ids.iter().map(|id| hex::encode(id.0)).collect::<Vec<_>>(),
        }),
        Payload::SessionReset(reason) => json!({
            "kind": 3,
            "reason": *reason as u8,
            "reason_name": reason_name(*reason),
        }),
        Payload::SentCopy {
            recipient,
            id,
            sent_at_ms,
            content_type,
            content,
        } => {
            let mut v = payload_json(&Payload::Message {
                id: *id,
                sent_at_ms: *sent_at_ms,
                content_type: *content_type,
                content: content.clone(),
            });
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!(4));
                o.insert(
                    "recipient_fingerprint".into(),
                    json!(hex::encode(recipient.fingerprint)),
                );
                o.insert("recipient_device".into(), json!(recipient.device_id));
            }
            v
        }
        Payload::ConversationMessage(m) => {
            let mut v = payload_json(&Payload::Message {
                id: m.id,
                sent_at_ms: m.sent_at_ms,
                content_type: m.content_type,
                content: m.content.clone(),
            });
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!(5));
                o.insert(
                    "conversation_id".into(),
                    json!(hex::encode(m.conversation.0)),
                );
                o.insert("epoch".into(), json!(m.epoch));
            }
            v
        }
        Payload::ConversationReceipt {
            conversation,
            status,
            ids,
        } => json!({
            "kind": 6,
            "conversation_id": hex::encode(conversation.0),
            "status": *status as u8,
            "message_ids": ids.iter().map(|id| hex::encode(id.0)).collect::<Vec<_>>(),
        }),
        Payload::Recall {
            conversation,
            id,
            recalled_at_ms,
        } => json!({
            "kind": 7,
            "conversation_id": hex::encode(conversation.0),
            "message_id": hex::encode(id.0),
            "recalled_at_ms": recalled_at_ms,
        }),
        Payload::HistoryShare {
            conversation,
            messages,
        } => json!({
            "kind": 8,
            "conversation_id": hex::encode(conversation.0),
            "shared": messages.iter().map(|m| json!({
                "sender_fingerprint": hex::encode(m.sender.fingerprint),
                "sender_device": m.sender.device_id,
                "message": payload_json(&Payload::ConversationMessage(m.message.clone())),
            })).collect::<Vec<_>>(),
        }),
        Payload::StaffNote { conversation, note } => json!({
            "kind": 9,
            "conversation_id": hex::encode(conversation.0),
            "note": note.as_str(),
        }),
    }
}

/// The whole file.
pub fn payloads() -> Result<Value, Error> {
    let message = Payload::Message {
        id: MessageId(MESSAGE_ID),
        sent_at_ms: SENT_AT_MS,
        content_type: ContentType::Text,
        content: Zeroizing::new(TEXT.as_bytes().to_vec()),
    };
    let receipt = Payload::Receipt(vec![MessageId(MESSAGE_ID), MessageId([0xa5; 16])]);
    let valid = [
        ("message", message),
        ("receipt of two messages", receipt),
        (
            "session reset, undecryptable",
            Payload::SessionReset(ResetReason::Undecryptable),
        ),
        (
            "session reset, key reused",
            Payload::SessionReset(ResetReason::KeyReused),
        ),
        (
            "session reset, too far ahead",
            Payload::SessionReset(ResetReason::TooFarAhead),
        ),
        (
            "sent copy",
            Payload::SentCopy {
                recipient: hushwire::proto::relay::DeviceAddress {
                    fingerprint: [0x3c; 32],
                    device_id: 2,
                },
                id: MessageId(MESSAGE_ID),
                sent_at_ms: SENT_AT_MS,
                content_type: ContentType::Text,
                content: Zeroizing::new(TEXT.as_bytes().to_vec()),
            },
        ),
        (
            "conversation message",
            Payload::ConversationMessage(conversation_message()),
        ),
        (
            "conversation receipt, read, of two messages",
            Payload::ConversationReceipt {
                conversation: ConversationId(CONVERSATION),
                status: ReceiptStatus::Read,
                ids: vec![MessageId(MESSAGE_ID), MessageId([0xa5; 16])],
            },
        ),
        (
            "recall",
            Payload::Recall {
                conversation: ConversationId(CONVERSATION),
                id: MessageId(MESSAGE_ID),
                recalled_at_ms: SENT_AT_MS + 120_000,
            },
        ),
        (
            "history share of one message",
            Payload::HistoryShare {
                conversation: ConversationId(CONVERSATION),
                messages: vec![SharedMessage {
                    sender: DeviceAddress {
                        fingerprint: [0x5a; 32],
                        device_id: 1,
                    },
                    message: conversation_message(),
                }],
            },
        ),
        (
            "staff note",
            Payload::staff_note(ConversationId(CONVERSATION), NOTE)?,
        ),
    ];
    let mut valid_json = Vec::new();
    for (name, payload) in &valid {
        let encoded = payload.encode();
        if Payload::decode(&encoded).ok().as_ref() != Some(payload) {
            return Err(format!("payload vector `{name}` does not round-trip").into());
        }
        let mut v = json!({"name": name});
        if let (Some(o), Value::Object(fields)) = (v.as_object_mut(), payload_json(payload)) {
            o.extend(fields);
            o.insert("encoded".into(), json!(hex::encode(encoded.as_slice())));
        }
        valid_json.push(v);
    }

    let message_bytes = valid[0].1.encode();
    let mut too_long = message_bytes.get(..27).ok_or("short message")?.to_vec();
    too_long.extend_from_slice(&u32::try_from(MAX_CONTENT_LEN + 1)?.to_be_bytes());
    let mut receipt_257 = vec![PAYLOAD_VERSION, 0x02];
    receipt_257.extend_from_slice(&u16::try_from(MAX_RECEIPT_IDS + 1)?.to_be_bytes());
    let copy_bytes = valid.get(5).ok_or("sent copy")?.1.encode();
    let conversation_bytes = Payload::ConversationMessage(conversation_message()).encode();
    let mut conversation_too_long = conversation_bytes
        .get(..51)
        .ok_or("short conversation message")?
        .to_vec();
    conversation_too_long
        .extend_from_slice(&u32::try_from(MAX_CONVERSATION_CONTENT_LEN + 1)?.to_be_bytes());
    let mut receipt_status = vec![PAYLOAD_VERSION, 0x06];
    receipt_status.extend_from_slice(&CONVERSATION);
    receipt_status.extend_from_slice(&[0x03, 0x00, 0x01]);
    receipt_status.extend_from_slice(&MESSAGE_ID);
    let mut empty_share = vec![PAYLOAD_VERSION, 0x08];
    empty_share.extend_from_slice(&CONVERSATION);
    empty_share.extend_from_slice(&[0x00, 0x00]);
    // A share whose message belongs to another conversation (the first id byte changed).
    let mut foreign_share = valid.get(9).ok_or("history share")?.1.encode().to_vec();
    let inner_conversation = 2 + 16 + 2 + 32 + 4 + 4 + 2;
    *foreign_share
        .get_mut(inner_conversation)
        .ok_or("short share")? ^= 0xff;
    let mut note_line_feed = vec![PAYLOAD_VERSION, 0x09];
    note_line_feed.extend_from_slice(&CONVERSATION);
    note_line_feed.extend_from_slice(&[0x05]);
    note_line_feed.extend_from_slice(b"call\n");
    let mut note_empty = vec![PAYLOAD_VERSION, 0x09];
    note_empty.extend_from_slice(&CONVERSATION);
    note_empty.push(0x00);
    let mut note_201 = vec![PAYLOAD_VERSION, 0x09];
    note_201.extend_from_slice(&CONVERSATION);
    note_201.push(u8::try_from(MAX_NOTE_LEN + 1)?);
    let recall_bytes = valid.get(8).ok_or("recall")?.1.encode();
    let invalid: [(&str, Vec<u8>); 20] = [
        ("empty", vec![]),
        ("unsupported version", vec![0x02, 0x03, 0x01]),
        ("unknown kind", vec![PAYLOAD_VERSION, 0x0a]),
        (
            "conversation message, content longer than MAX_CONVERSATION_CONTENT_LEN",
            conversation_too_long,
        ),
        (
            "conversation message, truncated in the epoch",
            conversation_bytes.get(..20).ok_or("short")?.to_vec(),
        ),
        ("conversation receipt, unknown status 0x03", receipt_status),
        (
            "recall, truncated in the recall time",
            recall_bytes
                .get(..recall_bytes.len() - 1)
                .ok_or("short recall")?
                .to_vec(),
        ),
        ("history share of no message", empty_share),
        (
            "history share of a message of another conversation",
            foreign_share,
        ),
        ("staff note, empty", note_empty),
        ("staff note with a line feed", note_line_feed),
        ("staff note of 201 bytes", note_201),
        (
            "sent copy, truncated in the recipient device",
            copy_bytes.get(..36).ok_or("short copy")?.to_vec(),
        ),
        (
            "sent copy, truncated in the content",
            copy_bytes
                .get(..copy_bytes.len() - 1)
                .ok_or("short copy")?
                .to_vec(),
        ),
        (
            "session reset, unknown reason 0x09",
            vec![PAYLOAD_VERSION, 0x03, 0x09],
        ),
        ("session reset, truncated", vec![PAYLOAD_VERSION, 0x03]),
        (
            "session reset, trailing byte",
            vec![PAYLOAD_VERSION, 0x03, 0x01, 0x00],
        ),
        ("empty receipt", vec![PAYLOAD_VERSION, 0x02, 0x00, 0x00]),
        ("receipt of 257 ids", receipt_257),
        ("message, content longer than MAX_CONTENT_LEN", too_long),
    ];
    let mut invalid_json = Vec::new();
    for (name, bytes) in &invalid {
        let Err(e) = Payload::decode(bytes) else {
            return Err(format!("invalid payload vector `{name}` decodes").into());
        };
        invalid_json.push(json!({
            "name": name,
            "encoded": hex::encode(bytes),
            "error": decode_error_json(&e),
        }));
    }

    // §4.5: the message and the receipt as a client encrypts them, and a padded message whose
    // last padding byte is not zero.
    let mut padded_json = Vec::new();
    for (name, payload) in valid.get(..2).ok_or("valid payloads")? {
        let padded = pad(&payload.encode());
        if Payload::decode_padded(&padded).ok().as_ref() != Some(payload) {
            return Err(format!("padded payload vector `{name}` does not decode").into());
        }
        padded_json.push(json!({"name": name, "padded": hex::encode(padded.as_slice())}));
    }
    let mut bad_padding = pad(&message_bytes).to_vec();
    if let Some(last) = bad_padding.last_mut() {
        *last = 0x01;
    }
    let Err(e) = Payload::decode_padded(&bad_padding) else {
        return Err("a non-zero padding byte decodes".into());
    };
    let padded_invalid = [json!({
        "name": "message, last padding byte 0x01",
        "padded": hex::encode(&bad_padding),
        "error": decode_error_json(&e),
    })];

    Ok(json!({
        "description": "The client's payload, the plaintext a client encrypts with a session (docs/client.md §4). `valid`: each payload's fields and its encoding; decoding `encoded` gives the fields, and encoding the fields gives `encoded`. `content` is hex; `content_text` is the same bytes as UTF-8 when the content type is text (0x01). `reason` is the session reset's reason byte. A sent copy (kind 4, §4.6) has a message's fields and `recipient_fingerprint` (hex) and `recipient_device`. Clinic conversations (docs/conversations.md §8, client.md §4.7): a conversation message (kind 5) has a message's fields and `conversation_id` (hex) and `epoch`; a conversation receipt (kind 6) `conversation_id`, `status` (1 delivered, 2 read) and `message_ids`; a recall (kind 7) `conversation_id`, `message_id` and `recalled_at_ms`; a history share (kind 8) `conversation_id` and `shared`, each with `sender_fingerprint` (hex), `sender_device` and `message` (a conversation message's fields); a staff note (kind 9) `conversation_id` and `note` (UTF-8 text). `invalid`: encodings every decoder refuses, with the error the reference decoder gives (`DecodeError` variant and fields, §4.4). `padded` (§4.5): the message and the receipt of `valid` (same `name`) as a client encrypts them, the encoding followed by zero bytes up to the next multiple of `padding_block` (256). `max_conversation_content_len`, `max_shared_messages`, `max_note_len` and `recall_window_ms` are the limits of conversations.md §8. `padded_invalid`: a padded payload with a non-zero padding byte, refused by the padded decoder with `error`.",
        "padding_block": PADDING_BLOCK,
        "payload_version": PAYLOAD_VERSION,
        "max_content_len": MAX_CONTENT_LEN,
        "max_receipt_ids": MAX_RECEIPT_IDS,
        "max_conversation_content_len": MAX_CONVERSATION_CONTENT_LEN,
        "max_shared_messages": MAX_SHARED_MESSAGES,
        "max_note_len": MAX_NOTE_LEN,
        "recall_window_ms": RECALL_WINDOW_MS,
        "valid": valid_json,
        "invalid": invalid_json,
        "padded": padded_json,
        "padded_invalid": padded_invalid,
    }))
}
