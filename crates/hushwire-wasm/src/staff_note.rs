//! Hand-off notes for the agent console (`docs/conversations.md` §5.2 "The hand-off note",
//! §8.5): the `StaffNote` payload, the note envelopes a `HandOff` frame carries, and the
//! on-duty devices a note handed back to the queue goes to. The note is encrypted by
//! `Session.encrypt` to each staff device, as `hushwire handoff --note` does
//! (`crates/hushwire-client`, `encrypt_notes`); TypeScript only chooses the recipients from the
//! verified membership and the verified certificates, and never sees a rule of the payload.

use hushwire::payload::{MAX_NOTE_LEN, Payload, pad};
use hushwire::proto::conversation::queue::{
    MAX_NOTE_ENVELOPE_LEN, MAX_NOTE_ENVELOPES, NoteEnvelope, QueueFrame,
};
use wasm_bindgen::prelude::*;

use crate::conversation::conversation_id;
use crate::web::{Incoming, format_address, frame, parse_address};
use crate::{Error, Result};

/// The longest hand-off note, in bytes of UTF-8 (200, §8.5).
#[wasm_bindgen(js_name = staffNoteMaxLen)]
#[must_use]
pub fn staff_note_max_len() -> u32 {
    crate::to_u32(MAX_NOTE_LEN)
}

/// A staff note payload (kind `0x09`, §8.5), padded, ready for `Session.encrypt` to each staff
/// device: `0x01 ‖ 0x09 ‖ conversation_id[16] ‖ note_len[1] ‖ note`. `conversation` is 16
/// bytes. Throws unless `note` is one line of 1 to 200 bytes without control, invisible or
/// bidirectional characters (the display-name rules of `clinic.md` §1 except length), with a
/// message saying so and how many bytes it has; the text is not in the message.
#[wasm_bindgen(js_name = encodeStaffNote)]
pub fn encode_staff_note(conversation: &[u8], note: &str) -> Result<Vec<u8>> {
    let payload = Payload::staff_note(conversation_id(conversation)?, note).map_err(|_| {
        Error::new(format_args!(
            "the note must be one line of 1 to {MAX_NOTE_LEN} bytes, without control, \
             invisible or bidirectional characters (this one has {} bytes)",
            note.len()
        ))
    })?;
    Ok(pad(&payload.encode()).to_vec())
}

/// The note envelopes of a `HandOff` frame (§5.2): `addresses[i]` (a staff device,
/// `fingerprint:device`) receives the `lengths[i]` bytes of `sessionMessages` that follow the
/// earlier ones. 0 to 64 envelopes, each at most 4 096 bytes; anything else throws.
pub(crate) fn note_envelopes(
    addresses: &[String],
    session_messages: &[u8],
    lengths: &[u32],
) -> Result<Vec<NoteEnvelope>> {
    if lengths.len() > MAX_NOTE_ENVELOPES {
        return Err(Error::new("a hand-off carries at most 64 note envelopes"));
    }
    if addresses.len() != lengths.len() {
        return Err(Error::new("one address per note envelope"));
    }
    let mut notes = Vec::with_capacity(lengths.len());
    let mut rest = session_messages;
    for (address, &len) in addresses.iter().zip(lengths) {
        let len = crate::count(len);
        if len > MAX_NOTE_ENVELOPE_LEN {
            return Err(Error::new("a note envelope is at most 4096 bytes"));
        }
        if len > rest.len() {
            return Err(Error::new("the lengths exceed the note envelopes"));
        }
        let (one, tail) = rest.split_at(len);
        notes.push(NoteEnvelope {
            recipient: parse_address(address)?,
            payload: one.to_vec(),
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::new("the lengths do not cover the note envelopes"));
    }
    Ok(notes)
}

/// The `FetchOnDuty` frame (§5.2, staff with the agent role): the devices of the agents on
/// duty, where a note handed back to the queue goes (each checked against its certificate).
#[wasm_bindgen(js_name = fetchOnDutyFrame)]
#[must_use]
pub fn fetch_on_duty_frame(request_id: u32) -> Vec<u8> {
    frame(
        request_id,
        hushwire::proto::relay::FrameBody::Queue(Box::new(QueueFrame::FetchOnDuty)),
    )
}

#[wasm_bindgen]
impl Incoming {
    /// An `onDuty` answer's devices (`fingerprint:device`, at most 256); empty otherwise.
    #[wasm_bindgen(getter, js_name = onDutyDevices)]
    pub fn on_duty_devices(&self) -> Vec<String> {
        match self.body() {
            hushwire::proto::relay::FrameBody::Queue(q) => match &**q {
                QueueFrame::OnDuty(devices) => devices.iter().map(format_address).collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_note_round_trips_and_a_bad_one_is_refused_without_its_text() {
        let conversation = [7u8; 16];
        let bytes = encode_staff_note(&conversation, "Allergic to <b>penicillin</b>").unwrap();
        match Payload::decode_padded(&bytes).unwrap() {
            Payload::StaffNote { note, .. } => {
                assert_eq!(note.as_str(), "Allergic to <b>penicillin</b>");
            }
            _ => panic!("not decoded as a staff note"),
        }
        let long = "x".repeat(201);
        let e = encode_staff_note(&conversation, &long)
            .unwrap_err()
            .to_string();
        assert!(e.contains("201 bytes"), "{e}");
        assert!(encode_staff_note(&conversation, "two\nlines").is_err());
        assert!(encode_staff_note(&conversation, "").is_err());
        assert!(encode_staff_note(&conversation[..15], "ok").is_err());
        assert!(!e.contains("xxxx"), "the note's text is not in the error");
    }

    #[test]
    fn note_envelopes_are_bounded() {
        let a = format!("{}:1", "ab".repeat(32));
        let notes = note_envelopes(&[a.clone(), a.clone()], &[1, 2, 3], &[1, 2]).unwrap();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[1].payload, vec![2, 3]);
        assert!(note_envelopes(std::slice::from_ref(&a), &[1, 2], &[1]).is_err());
        assert!(note_envelopes(std::slice::from_ref(&a), &[1], &[2]).is_err());
        assert!(note_envelopes(std::slice::from_ref(&a), &vec![0; 4097], &[4097]).is_err());
        let many = vec![a; 65];
        assert!(note_envelopes(&many, &[0; 65], &[1; 65]).is_err());
    }
}
