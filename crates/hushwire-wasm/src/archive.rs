//! The supervisor's reading of a conversation's clinic archive (`docs/conversations.md` §7.3),
//! as `hushwire archive` does it (`Client::open_archive`): the `FetchArchive` frame, then every
//! envelope of the relay's `ArchiveItems` answers opened with the archive private key
//! (`hushwire::archive::ArchiveSecretKey::open`, which never leaves WebAssembly), its payload
//! decoded (`hushwire::payload`), and each entry checked against the conversation's verified
//! membership at the entry's epoch. TypeScript only shows and exports what this returns.

use hushwire::payload::{MessageId, Payload};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::conversation::queue::{ArchiveItem, QueueFrame};
use hushwire::proto::conversation::{ArchiveEnvelope, ConversationId};
use hushwire::proto::keys::Fingerprint;
use hushwire::proto::relay::{DeviceAddress, FrameBody};
use wasm_bindgen::prelude::*;

use crate::conversation::{ArchiveKey, Membership, conversation_id, whole};
use crate::web::{Incoming, format_address, frame, millis, parse_address};
use crate::{Error, Result};

/// One untrusted text (a name) as `hushwire archive` prints it on one line: the core's
/// `hushwire::display::escape`, the CLI's own function (control and format characters as
/// `\x07` or `\u{202e}`, newlines escaped, long runs of spaces as `[N spaces]`).
#[wasm_bindgen(js_name = escapeText)]
#[must_use]
pub fn escape_text(text: &str) -> String {
    hushwire::display::escape(text)
}

/// A message under its header as `hushwire archive` prints it to a file (no wrapping): the
/// core's `hushwire::display::message_block_for`, which the CLI calls, so the console's text
/// export is the CLI's lines.
#[wasm_bindgen(js_name = messageBlock)]
#[must_use]
pub fn message_block(header: &str, text: &str) -> String {
    hushwire::display::message_block_for(header, "", text, None)
}

#[allow(clippy::cast_precision_loss)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// The `FetchArchive` frame (`conversations.md` §5.2, supervisors only): the envelopes of the
/// conversation `conversation` (16 bytes) filed from position `fromIndex` on (0 for the
/// beginning). The relay answers `ArchiveItems` (at most 16 envelopes; `archiveNextIndex` is
/// where to ask next) or `Forbidden` without the supervisor role. Throws for an id that is not
/// 16 bytes or a position that is not a whole number.
#[wasm_bindgen(js_name = fetchArchiveFrame)]
pub fn fetch_archive_frame(
    request_id: u32,
    conversation: &[u8],
    from_index: f64,
) -> Result<Vec<u8>> {
    Ok(frame(
        request_id,
        FrameBody::Queue(Box::new(QueueFrame::FetchArchive {
            conversation: conversation_id(conversation)?,
            from_index: whole(from_index, "an archive position")?,
        })),
    ))
}

impl Incoming {
    fn archive_items(&self) -> Option<(u64, &[ArchiveItem])> {
        match self.body() {
            FrameBody::Queue(q) => match q.as_ref() {
                QueueFrame::ArchiveItems { next_index, items } => Some((*next_index, items)),
                _ => None,
            },
            _ => None,
        }
    }
}

#[wasm_bindgen]
impl Incoming {
    /// For an `archiveItems` answer: the position to ask from next (`fetchArchiveFrame`); 0 for
    /// other frames.
    #[wasm_bindgen(getter, js_name = archiveNextIndex)]
    pub fn archive_next_index(&self) -> f64 {
        self.archive_items().map_or(0.0, |(next, _)| to_f64(next))
    }

    /// For an `archiveItems` answer: how many envelopes it carries (0 to 16); 0 for other frames.
    #[wasm_bindgen(getter, js_name = archiveItemCount)]
    pub fn archive_item_count(&self) -> u32 {
        self.archive_items()
            .map_or(0, |(_, items)| crate::to_u32(items.len()))
    }
}

/// What an archive entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EntryKind {
    /// A conversation message (kind `0x05`): its text.
    Message { sent_at_ms: u64, text: String },
    /// A recall (kind `0x07`) of message `id` of the conversation, at the sender's clock.
    Recall { recalled_at_ms: u64 },
    /// Any other payload (a receipt, say): kept, not listed by `hushwire archive`.
    Other,
}

/// One opened and checked entry of a conversation's archive (`ArchiveReading.entries`).
/// Its text is PHI: display it as text (`textContent`), never as HTML, and do not log it.
#[wasm_bindgen]
#[derive(Clone)]
pub struct ArchiveEntry {
    kind: EntryKind,
    id: String,
    sender: DeviceAddress,
    from: String,
    epoch: u64,
    verified: bool,
    filed_at_ms: u64,
    recalled: Option<(String, u64)>,
}

impl core::fmt::Debug for ArchiveEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArchiveEntry")
            .field("epoch", &self.epoch)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl ArchiveEntry {
    /// `message`, `recall` (of message `id`), or `other` (a payload `hushwire archive` does not
    /// list, such as a receipt).
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        match self.kind {
            EntryKind::Message { .. } => "message",
            EntryKind::Recall { .. } => "recall",
            EntryKind::Other => "other",
        }
        .to_owned()
    }

    /// The message id, 32 hex digits (for a recall: the id of the message recalled; "" for
    /// `other`).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The sending device as the entry names it (`fingerprint:deviceId`): the sender's claim
    /// (the seal is not a signature, §7.3), which `verified` checks.
    #[wasm_bindgen(getter)]
    pub fn sender(&self) -> String {
        format_address(&self.sender)
    }

    /// The sending device's number.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> u32 {
        self.sender.device_id
    }

    /// How the verified membership names the sender, as `hushwire archive` shows it: staff as
    /// "Name — verified agent of Clinic" (the certificate their adding change carried), the
    /// patient as "patient", anyone else as "a member whose name is not known here".
    #[wasm_bindgen(getter)]
    pub fn from(&self) -> String {
        self.from.clone()
    }

    /// The membership epoch it was sent under.
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> f64 {
        to_f64(self.epoch)
    }

    /// Whether the sender was a member device that writes at that epoch in the verified
    /// history and is the device the relay saw file the entry (§7.3). `false` flags the entry
    /// ("NOT VERIFIED" in `hushwire archive`); it is shown, never hidden.
    #[wasm_bindgen(getter)]
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// A message's time on its sender's clock (Unix ms; shown, not trusted); 0 otherwise.
    #[wasm_bindgen(getter, js_name = sentAtMs)]
    pub fn sent_at_ms(&self) -> f64 {
        match self.kind {
            EntryKind::Message { sent_at_ms, .. } => to_f64(sent_at_ms),
            _ => 0.0,
        }
    }

    /// A recall's time on its sender's clock (Unix ms; shown, not trusted); 0 otherwise.
    #[wasm_bindgen(getter, js_name = recalledAtMs)]
    pub fn recalled_at_ms(&self) -> f64 {
        match self.kind {
            EntryKind::Recall { recalled_at_ms } => to_f64(recalled_at_ms),
            _ => 0.0,
        }
    }

    /// When the relay filed it (Unix ms, the relay's clock, its word).
    #[wasm_bindgen(getter, js_name = filedAtMs)]
    pub fn filed_at_ms(&self) -> f64 {
        to_f64(self.filed_at_ms)
    }

    /// A message's text (invalid UTF-8 replaced, as `hushwire archive` prints it); "" for other
    /// kinds. Display it as text, never as HTML.
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        match &self.kind {
            EntryKind::Message { text, .. } => text.clone(),
            _ => String::new(),
        }
    }

    /// For a message that a verified recall entry from its sender's identity names (§8.3: only
    /// the sender recalls; the archive keeps the text, the record the clinic must keep): who
    /// recalled it, as `from` shows them; "" if it was not recalled.
    #[wasm_bindgen(getter, js_name = recalledBy)]
    pub fn recalled_by(&self) -> String {
        self.recalled
            .as_ref()
            .map(|(by, _)| by.clone())
            .unwrap_or_default()
    }

    /// For a recalled message: the recall's time on its sender's clock (Unix ms); 0 otherwise.
    #[wasm_bindgen(getter, js_name = recallAtMs)]
    pub fn recall_at_ms(&self) -> f64 {
        self.recalled.as_ref().map_or(0.0, |(_, at)| to_f64(*at))
    }
}

/// A conversation's archive as a supervisor reads it: every envelope opened with the clinic's
/// archive key and checked against the conversation's verified membership (`Membership`,
/// fetched from epoch 0 first), oldest first, in the order the relay filed them.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ArchiveReading {
    conversation: ConversationId,
    entries: Vec<ArchiveEntry>,
}

#[wasm_bindgen]
impl ArchiveReading {
    /// An empty reading of conversation `conversation` (16 bytes; throws otherwise).
    #[wasm_bindgen(constructor)]
    pub fn new(conversation: &[u8]) -> Result<ArchiveReading> {
        Ok(Self {
            conversation: conversation_id(conversation)?,
            entries: Vec::new(),
        })
    }

    /// Opens and checks every envelope of an `archiveItems` answer (`Incoming.queueKind`) and
    /// keeps them; returns how many it carried. Throws, keeping none of them, for another
    /// frame, for an envelope of another conversation, one that does not open with `key`
    /// (another archive key, or altered bytes: `OpenFailed`, `WeakKey`) or whose payload is
    /// malformed — as `hushwire archive` stops on such an envelope.
    #[wasm_bindgen(js_name = addItems)]
    pub fn add_items(
        &mut self,
        key: &ArchiveKey,
        answer: &Incoming,
        membership: &Membership,
    ) -> Result<u32> {
        let (_, items) = answer
            .archive_items()
            .ok_or_else(|| Error::new("not an answer to FetchArchive"))?;
        let opened = items
            .iter()
            .map(|item| {
                self.open(
                    key,
                    &item.envelope,
                    item.filer,
                    item.filed_at_ms,
                    membership,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.entries.extend(opened);
        Ok(crate::to_u32(items.len()))
    }

    /// Opens and checks one encoded archive envelope (§7.2, 74 to 65 670 bytes) that the relay
    /// says device `filer` (an address) filed at `filedAtMs`, and keeps it: what `addItems`
    /// does for each item. Throws, keeping nothing, for bytes that are not an envelope
    /// (truncated, trailing bytes, a weak ephemeral key), an envelope of another conversation,
    /// one that does not open with `key`, or a malformed payload.
    #[wasm_bindgen(js_name = addEnvelope)]
    pub fn add_envelope(
        &mut self,
        key: &ArchiveKey,
        envelope: &[u8],
        filer: &str,
        filed_at_ms: f64,
        membership: &Membership,
    ) -> Result<()> {
        let envelope = ArchiveEnvelope::from_bytes(envelope)
            .map_err(|e| Error::new(format_args!("not an archive envelope: {e}")))?;
        let entry = self.open(
            key,
            &envelope,
            parse_address(filer)?,
            millis(filed_at_ms)?,
            membership,
        )?;
        self.entries.push(entry);
        Ok(())
    }

    /// How many entries have been opened.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> u32 {
        crate::to_u32(self.entries.len())
    }

    /// The entries opened so far, oldest first, each message marked if a verified recall entry
    /// from its sender's identity names it.
    pub fn entries(&self) -> Vec<ArchiveEntry> {
        let mut entries = self.entries.clone();
        let recalls: Vec<(String, Fingerprint, String, u64)> = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::Recall { recalled_at_ms } if e.verified => Some((
                    e.id.clone(),
                    Fingerprint(e.sender.fingerprint),
                    e.from.clone(),
                    recalled_at_ms,
                )),
                _ => None,
            })
            .collect();
        for entry in &mut entries {
            if !matches!(entry.kind, EntryKind::Message { .. }) {
                continue;
            }
            entry.recalled = recalls
                .iter()
                .find(|(id, by, _, _)| *id == entry.id && by.0 == entry.sender.fingerprint)
                .map(|(_, _, shown, at)| (shown.clone(), *at));
        }
        entries
    }
}

impl ArchiveReading {
    /// `Client::open_archive`'s check of one item (§7.3): the envelope opens with the archive
    /// key; the sender named inside must be the device the relay saw file it and a member
    /// device that writes at the entry's epoch in the verified history.
    fn open(
        &self,
        key: &ArchiveKey,
        envelope: &ArchiveEnvelope,
        filer: DeviceAddress,
        filed_at_ms: u64,
        membership: &Membership,
    ) -> Result<ArchiveEntry> {
        if envelope.conversation != self.conversation {
            return Err(Error::new(
                "an archive envelope of another conversation was returned",
            ));
        }
        let opened = key.secret().open(envelope).map_err(|e| {
            Error::new(format_args!(
                "an archive envelope does not open with this key: {e}"
            ))
        })?;
        let payload = Payload::decode_padded(&opened.payload)
            .map_err(|e| Error::new(format_args!("an archived payload is malformed: {e}")))?;
        let sender = DeviceAddress {
            fingerprint: opened.sender.0,
            device_id: opened.sender_device,
        };
        let mut verified = filer == sender && membership.writes_at(opened.epoch, &sender);
        let (kind, id) = match &payload {
            Payload::ConversationMessage(m) => {
                verified &= m.conversation == self.conversation;
                (
                    EntryKind::Message {
                        sent_at_ms: m.sent_at_ms,
                        text: String::from_utf8_lossy(&m.content).into_owned(),
                    },
                    m.id,
                )
            }
            Payload::Recall {
                conversation,
                id,
                recalled_at_ms,
            } => {
                verified &= *conversation == self.conversation;
                (
                    EntryKind::Recall {
                        recalled_at_ms: *recalled_at_ms,
                    },
                    *id,
                )
            }
            _ => (EntryKind::Other, MessageId([0; 16])),
        };
        Ok(ArchiveEntry {
            id: if kind == EntryKind::Other {
                String::new()
            } else {
                id.to_string()
            },
            kind,
            from: membership.shown_ever(&opened.sender),
            sender,
            epoch: opened.epoch,
            verified,
            filed_at_ms,
            recalled: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::conversation::{encode_conversation_message, encode_recall};
    use crate::{Account, web::Clinic};
    use hushwire::archive::{ArchiveSecretKey, ArchivedMessage, seal};
    use hushwire::proto::conversation::ArchivePolicy;

    const NOW: u64 = 1_800_000_000;

    /// A clinic, a conversation the patient opened and an agent claimed, and the clinic's
    /// archive key with its signed policy.
    struct Fixture {
        membership: Membership,
        patient: Account,
        agent: Account,
        key: ArchiveKey,
        policy: ArchivePolicy,
        id: [u8; 16],
    }

    fn fixture() -> Fixture {
        let mut rng = crate::os_rng().unwrap();
        let org = hushwire::IdentityKeyPair::generate(&mut rng);
        let link = hushwire::proto::clinic::ClinicLink::issue(
            &org,
            "Test Clinic",
            "ws://127.0.0.1:7700/v1/websocket",
        )
        .unwrap();
        let clinic = Clinic::parse(&link.to_string()).unwrap();
        #[allow(clippy::cast_precision_loss)]
        let now = NOW as f64;
        let patient = Account::new(1, now).unwrap();
        let agent = Account::new(1, now).unwrap();
        let id = [5u8; 16];
        let mut membership = Membership::new(&clinic, &id).unwrap();
        patient
            .open_conversation_frame(&mut membership, 1, now)
            .unwrap();
        let claim = crate::conversation::tests::claim(&membership, &agent, &org, "Dr. Ada");
        membership.apply(&claim, now).unwrap();
        let secret = ArchiveSecretKey::generate(&mut rng);
        let policy = ArchivePolicy::issue(&org, 1, *secret.public(), 30).unwrap();
        Fixture {
            membership,
            patient,
            agent,
            key: ArchiveKey::from_secret(secret),
            policy,
            id,
        }
    }

    fn envelope(f: &Fixture, sender: &Account, epoch: u64, payload: Vec<u8>) -> Vec<u8> {
        let address = parse_address(&sender.address()).unwrap();
        seal(
            &f.policy,
            ConversationId(f.id),
            &ArchivedMessage {
                sender: Fingerprint(address.fingerprint),
                sender_device: address.device_id,
                epoch,
                payload,
            },
            &mut crate::os_rng().unwrap(),
        )
        .unwrap()
        .to_bytes()
    }

    #[test]
    fn entries_open_are_checked_against_the_membership_and_recalls_mark_messages() {
        let f = fixture();
        let mut reading = ArchiveReading::new(&f.id).unwrap();
        let patient = f.patient.address();
        let agent = f.agent.address();
        // The patient wrote at epoch 1 (waiting), the agent at 2 (on it), then recalled.
        let waiting = encode_conversation_message(&f.id, 1.0, &[1; 16], 1000.0, "<b>rash</b>");
        let reply = encode_conversation_message(&f.id, 2.0, &[2; 16], 2000.0, "withdrawn");
        let recall = encode_recall(&f.id, &[2; 16], 3000.0).unwrap();
        for (sender, filer, epoch, payload) in [
            (&f.patient, &patient, 1, waiting.unwrap()),
            (&f.agent, &agent, 2, reply.unwrap()),
            (&f.agent, &agent, 2, recall),
        ] {
            let e = envelope(&f, sender, epoch, payload);
            reading
                .add_envelope(&f.key, &e, filer, 5000.0, &f.membership)
                .unwrap();
        }
        // Claimed by the agent, but written at epoch 1, before it joined: flagged.
        let early = encode_conversation_message(&f.id, 1.0, &[3; 16], 1500.0, "early").unwrap();
        let e = envelope(&f, &f.agent, 1, early);
        reading
            .add_envelope(&f.key, &e, &agent, 5000.0, &f.membership)
            .unwrap();
        // Filed by another device than the one it names: flagged.
        let forged = encode_conversation_message(&f.id, 2.0, &[4; 16], 1600.0, "forged").unwrap();
        let e = envelope(&f, &f.patient, 2, forged);
        reading
            .add_envelope(&f.key, &e, &agent, 5000.0, &f.membership)
            .unwrap();

        let entries = reading.entries();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].kind(), "message");
        assert_eq!(entries[0].text(), "<b>rash</b>");
        assert_eq!(entries[0].from(), "patient");
        assert!(entries[0].verified());
        assert_eq!(entries[0].recalled_by(), "");
        assert_eq!(entries[1].from(), "Dr. Ada — verified agent of Test Clinic");
        assert!(entries[1].verified());
        assert_eq!(entries[1].recalled_by(), entries[1].from());
        assert_eq!(entries[1].recall_at_ms(), 3000.0);
        assert_eq!(entries[1].text(), "withdrawn", "the archive keeps the text");
        assert_eq!(entries[2].kind(), "recall");
        assert_eq!(entries[2].id(), hex_id(2));
        assert!(!entries[3].verified(), "written before the agent joined");
        assert!(!entries[4].verified(), "filed by another device");
    }

    fn hex_id(b: u8) -> String {
        MessageId([b; 16]).to_string()
    }

    #[test]
    fn hostile_envelopes_are_errors_and_keep_nothing() {
        let f = fixture();
        let mut reading = ArchiveReading::new(&f.id).unwrap();
        let msg = encode_conversation_message(&f.id, 1.0, &[1; 16], 1.0, "x").unwrap();
        let good = envelope(&f, &f.patient, 1, msg);
        let patient = f.patient.address();
        for cut in [0, 1, 57, 58, 62, good.len() - 1] {
            assert!(
                reading
                    .add_envelope(&f.key, &good[..cut], &patient, 1.0, &f.membership)
                    .is_err(),
                "truncated to {cut}"
            );
        }
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let err = reading
            .add_envelope(&f.key, &tampered, &patient, 1.0, &f.membership)
            .unwrap_err();
        assert!(err.message().contains("does not open"), "{err}");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            reading
                .add_envelope(&f.key, &trailing, &patient, 1.0, &f.membership)
                .is_err()
        );
        // Another conversation's reading refuses the envelope.
        let mut other = ArchiveReading::new(&[6; 16]).unwrap();
        assert!(
            other
                .add_envelope(&f.key, &good, &patient, 1.0, &f.membership)
                .is_err()
        );
        // Another archive key does not open it.
        let stranger =
            ArchiveKey::from_secret(ArchiveSecretKey::generate(&mut crate::os_rng().unwrap()));
        assert!(
            reading
                .add_envelope(&stranger, &good, &patient, 1.0, &f.membership)
                .is_err()
        );
        assert_eq!(reading.length(), 0);
        reading
            .add_envelope(&f.key, &good, &patient, 1.0, &f.membership)
            .unwrap();
        assert_eq!(reading.length(), 1);
        // Not an ArchiveItems answer.
        let not_items =
            crate::web::decode_frame(&crate::conversation::fetch_archive_policy_frame(1)).unwrap();
        assert!(
            reading
                .add_items(&f.key, &not_items, &f.membership)
                .is_err()
        );
        assert!(fetch_archive_frame(1, &f.id, 0.5).is_err());
        assert!(fetch_archive_frame(1, &f.id[..15], 0.0).is_err());
    }

    #[test]
    fn the_console_escapes_untrusted_text_as_the_cli_does() {
        // BEL, a zero-width space, a right-to-left override and a newline: the CLI's escapes
        // (crates/hushwire-cli/src/display.rs re-exports the same core functions).
        let text = "a\u{7}b\u{200b}c\u{202e}d\ne";
        assert_eq!(escape_text(text), hushwire::display::escape(text));
        assert_eq!(escape_text(text), "a\\x07b\\u{200b}c\\u{202e}d\\x0ae");
        let header = "[10:00:00] message 1 Dr. A (device 1):";
        assert_eq!(
            message_block(header, text),
            hushwire::display::message_block_for(header, "", text, None)
        );
        assert_eq!(
            message_block("H:", text),
            "H:\n    | a\\x07b\\u{200b}c\\u{202e}d\n    | e"
        );
        assert_eq!(message_block("H:", "one line\n"), "H: one line");
        assert_eq!(message_block("H:", "x\r\ny"), "H:\n    | x\n    | y");
    }

    /// `js-tests/fixtures/archive-key-vector.sealed` is the published vectors' archive secret
    /// (`conversation_membership.json` `archive_policy.archive_secret`, 32 × 0x41) sealed as an
    /// archive key file under "archive passphrase" with test parameters, so that the Node check
    /// opens the vectors' sealed envelope through `ArchiveKey.openFile`. Written once by
    /// `HUSHWIRE_WRITE_FIXTURE=1 cargo test -p hushwire-wasm vector_archive_key`.
    #[test]
    fn the_vector_archive_key_fixture_opens_to_the_vector_secret() {
        use hushwire::sealed_file::{KdfParams, Secret};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/js-tests/fixtures/archive-key-vector.sealed"
        );
        if std::env::var("HUSHWIRE_WRITE_FIXTURE").as_deref() == Ok("1") {
            let file = hushwire::sealed_file::seal(
                &Secret::passphrase("archive passphrase"),
                KdfParams::INSECURE_FOR_TESTS,
                hushwire::archive::ARCHIVE_KEY_FILE_PURPOSE,
                &[0x41; 32],
                &mut crate::os_rng().unwrap(),
            )
            .unwrap();
            std::fs::write(path, file).unwrap();
        }
        let file = std::fs::read(path).unwrap();
        let key = ArchiveKey::open_file(&file, "archive passphrase".into()).unwrap();
        assert_eq!(*key.secret().to_secret_bytes(), [0x41; 32]);
    }
}
