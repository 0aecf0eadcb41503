//! What the browser client (`web/`) needs beyond sessions: relay frames, the login answer,
//! message payloads, Argon2id and value sealing, clinic links and agent certificates. Each is a
//! thin wrapper over the Rust codec or check the native client uses
//! (`hushwire_proto::relay::Frame`, `hushwire::payload`, `hushwire::seal`,
//! `hushwire_proto::clinic`), so TypeScript never encodes a byte of a wire format itself.

use core::str::FromStr as _;

use hushwire::payload::{MessageId, Payload, ReceiptStatus, pad};
use hushwire::proto::clinic::{AgentCertificate, ClinicLink};
use hushwire::proto::codec::Codec;
use hushwire::proto::relay::{
    Credentials, DeviceAddress, Frame, FrameBody, OutgoingEnvelope, RelayKey,
};
use hushwire::transcript::ContentType;
use hushwire::wire::PREKEY_MESSAGE_TYPE;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::conversation::SharedText;
use crate::{Account, Error, Result, StorageKey, count, os_rng, unix_seconds};

pub(crate) fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex32(text: &str) -> Result<[u8; 32]> {
    let digits = text.trim().as_bytes();
    let mut out = [0u8; 32];
    if digits.len() != 64 {
        return Err(Error::new("a fingerprint is 64 hex digits"));
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let text = core::str::from_utf8(pair).map_err(|_| Error::new("not hex"))?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| Error::new("not hex"))?;
    }
    Ok(out)
}

/// A device address as the CLI prints it (`hushwire whoami --address`): 64 hex digits of the
/// identity fingerprint, a colon, the device number.
pub(crate) fn parse_address(text: &str) -> Result<DeviceAddress> {
    let invalid = || Error::new("a device address is 64 hex digits, a colon and a device number");
    let (fp, id) = text.trim().split_once(':').ok_or_else(invalid)?;
    Ok(DeviceAddress {
        fingerprint: unhex32(fp).map_err(|_| invalid())?,
        device_id: id.parse().map_err(|_| invalid())?,
    })
}

pub(crate) fn format_address(a: &DeviceAddress) -> String {
    format!("{}:{}", hex(&a.fingerprint), a.device_id)
}

pub(crate) fn frame(request_id: u32, body: FrameBody) -> Vec<u8> {
    Frame { request_id, body }.to_bytes()
}

pub(crate) fn millis(ms: f64) -> Result<u64> {
    unix_seconds(ms).map_err(|_| Error::new("a time must be whole milliseconds in 0..=2^53"))
}

// ---------------------------------------------------------------------------------------------
// Login and account frames
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen]
impl Account {
    /// This device's address, `fingerprint:deviceId` (64 hex digits, a colon, a number).
    pub fn address(&self) -> String {
        format!(
            "{}:{}",
            self.0.identity_key().fingerprint(),
            self.0.device_id()
        )
    }

    /// Answers the relay's `Challenge` frame (`docs/relay-protocol.md` §3.2): checks that the
    /// relay key it carries equals `pinnedRelayKey` (32 bytes; pass `undefined` only at first
    /// registration, then pin `Incoming.relayKey`), that the relay's signature verifies under
    /// it, and returns the encoded `Register` (if `register`) or `Authenticate` frame with
    /// request id `requestId`. Throws, answering nothing, if the key changed or the signature
    /// fails. With `certificate` (this device's, `OwnCertificate.bytes` of
    /// `Clinic.verifyOwnCertificate`) the `Register` presents it, as `hushwire register --certificate` does: the device registers as staff.
    #[wasm_bindgen(js_name = answerChallenge)]
    pub fn answer_challenge(
        &self,
        challenge_frame: &[u8],
        pinned_relay_key: Option<Vec<u8>>,
        register: bool,
        request_id: u32,
        certificate: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let challenge = match Frame::from_bytes(challenge_frame).map_err(Error::new)?.body {
            FrameBody::Challenge(c) => c,
            _ => return Err(Error::new("the relay's first frame is not a challenge")),
        };
        if let Some(pinned) = pinned_relay_key {
            let pinned: [u8; 32] = pinned
                .as_slice()
                .try_into()
                .map_err(|_| Error::new("a relay key is 32 bytes"))?;
            if RelayKey(pinned) != challenge.relay_key {
                return Err(Error::new(format_args!(
                    "the relay's key changed: it presents {}, not the pinned {}; nothing was \
                     answered",
                    challenge.relay_key.fingerprint(),
                    RelayKey(pinned).fingerprint()
                )));
            }
        }
        if !challenge.verify_relay_signature() {
            return Err(Error::new(
                "the relay's challenge is not signed by the relay key it presents",
            ));
        }
        let credentials = Credentials::answer(
            self.0.identity_key().clone(),
            self.0.device_id(),
            &challenge,
            self.0.identity(),
        );
        let body = if register {
            FrameBody::Register {
                credentials,
                invite: None,
                certificate: match certificate {
                    Some(bytes) => Some(Box::new(
                        AgentCertificate::from_bytes(&bytes).map_err(Error::new)?,
                    )),
                    None => None,
                },
            }
        } else {
            FrameBody::Authenticate(credentials)
        };
        Ok(frame(request_id, body))
    }

    /// Generates `oneTime` one-time X25519 and `kem` one-time ML-KEM prekeys and returns the
    /// `UploadPreKeys` frame publishing them with the signed and last-resort prekeys (at most
    /// 100 of each per frame). Seal the account afterwards: it now holds their secrets.
    #[wasm_bindgen(js_name = uploadPrekeysFrame)]
    pub fn upload_prekeys_frame(
        &mut self,
        request_id: u32,
        one_time: u32,
        kem: u32,
    ) -> Result<Vec<u8>> {
        let mut rng = os_rng()?;
        let one_time_prekeys = self
            .0
            .generate_one_time_prekeys(count(one_time.min(100)), &mut rng);
        let one_time_kem_prekeys = self
            .0
            .generate_one_time_kem_prekeys(count(kem.min(100)), &mut rng);
        Ok(frame(
            request_id,
            FrameBody::UploadPreKeys {
                signed_prekey: self.0.signed_prekey().cloned(),
                last_resort_kem_prekey: self.0.last_resort_kem_prekey().cloned(),
                one_time_prekeys,
                one_time_kem_prekeys,
            },
        ))
    }
}

/// The `FetchBundle` frame for the device at `address` (`fingerprint:deviceId`).
#[wasm_bindgen(js_name = fetchBundleFrame)]
pub fn fetch_bundle_frame(request_id: u32, address: &str) -> Result<Vec<u8>> {
    Ok(frame(
        request_id,
        FrameBody::FetchBundle(parse_address(address)?),
    ))
}

/// The `Send` frame carrying one envelope (`payload`, a session message) to `address`.
#[wasm_bindgen(js_name = sendFrame)]
pub fn send_frame(request_id: u32, address: &str, payload: &[u8]) -> Result<Vec<u8>> {
    Ok(frame(
        request_id,
        FrameBody::Send(vec![OutgoingEnvelope {
            recipient: parse_address(address)?,
            payload: payload.to_vec(),
        }]),
    ))
}

/// The `Send` frame carrying several envelopes to `address` (at most 16, the relay's limit per
/// frame): `payloads` is the session messages concatenated, `lengths` the length of each.
#[wasm_bindgen(js_name = sendFrameMany)]
pub fn send_frame_many(
    request_id: u32,
    address: &str,
    payloads: &[u8],
    lengths: &[u32],
) -> Result<Vec<u8>> {
    use hushwire::proto::relay::MAX_ENVELOPES_PER_FRAME;
    if lengths.is_empty() || lengths.len() > MAX_ENVELOPES_PER_FRAME {
        return Err(Error::new("a Send frame carries 1 to 16 envelopes"));
    }
    let recipient = parse_address(address)?;
    let mut envelopes = Vec::with_capacity(lengths.len());
    let mut rest = payloads;
    for &len in lengths {
        let len = len as usize;
        if len > rest.len() {
            return Err(Error::new("the lengths exceed the payloads"));
        }
        let (one, tail) = rest.split_at(len);
        envelopes.push(OutgoingEnvelope {
            recipient,
            payload: one.to_vec(),
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::new("the lengths do not cover the payloads"));
    }
    Ok(frame(request_id, FrameBody::Send(envelopes)))
}

/// The `Ack` frame for the delivered envelopes whose server ids are `serverIds` (16 bytes
/// each, concatenated; at most 256). An empty list is the "mailbox drained" barrier.
#[wasm_bindgen(js_name = ackFrame)]
pub fn ack_frame(request_id: u32, server_ids: &[u8]) -> Result<Vec<u8>> {
    if !server_ids.len().is_multiple_of(16) || server_ids.len() / 16 > 256 {
        return Err(Error::new("server ids are 16 bytes each, at most 256"));
    }
    let ids = server_ids
        .chunks_exact(16)
        .map(|c| {
            let mut id = [0u8; 16];
            id.copy_from_slice(c);
            id
        })
        .collect();
    Ok(frame(request_id, FrameBody::Ack(ids)))
}

/// The `FetchCertificate` frame for the identity whose fingerprint is `fingerprintHex`.
#[wasm_bindgen(js_name = fetchCertificateFrame)]
pub fn fetch_certificate_frame(request_id: u32, fingerprint_hex: &str) -> Result<Vec<u8>> {
    Ok(frame(
        request_id,
        FrameBody::FetchCertificate(unhex32(fingerprint_hex)?),
    ))
}

/// Whether a session message is a prekey message (a session's first, §6.2), which an account
/// `accept`s, rather than a message of an existing session.
#[wasm_bindgen(js_name = isPrekeyMessage)]
pub fn is_prekey_message(message: &[u8]) -> bool {
    message.get(1) == Some(&PREKEY_MESSAGE_TYPE)
}

// ---------------------------------------------------------------------------------------------
// Frames from the relay
// ---------------------------------------------------------------------------------------------

/// A frame from the relay, decoded by `hushwire_proto::relay::Frame`. `kind` names it; the
/// getters of other kinds return empty values.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Incoming {
    request_id: u32,
    body: FrameBody,
}

/// Decodes a frame from the relay. Throws for bytes that are not a frame.
#[wasm_bindgen(js_name = decodeFrame)]
pub fn decode_frame(bytes: &[u8]) -> Result<Incoming> {
    let f = Frame::from_bytes(bytes).map_err(Error::new)?;
    Ok(Incoming {
        request_id: f.request_id,
        body: f.body,
    })
}

impl Incoming {
    pub(crate) fn body(&self) -> &FrameBody {
        &self.body
    }
}

#[wasm_bindgen]
impl Incoming {
    /// The request id echoed by the relay (0 for frames it sends on its own).
    #[wasm_bindgen(getter, js_name = requestId)]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// `challenge`, `ok`, `error`, `bundle`, `sent`, `deliver`, `prekeyCount`, `certificate`,
    /// `wiped`, `queue` (see `queueKind`), `deviceList`, or `other`.
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        match &self.body {
            FrameBody::Challenge(_) => "challenge",
            FrameBody::Ok => "ok",
            FrameBody::Error { .. } => "error",
            FrameBody::Bundle(_) => "bundle",
            FrameBody::Sent(_) => "sent",
            FrameBody::Deliver(_) => "deliver",
            FrameBody::PreKeyCount { .. } => "prekeyCount",
            FrameBody::Certificate(_) => "certificate",
            FrameBody::Wiped(_) => "wiped",
            FrameBody::Queue(_) => "queue",
            FrameBody::DeviceList(_) => "deviceList",
            _ => "other",
        }
        .to_owned()
    }

    /// A challenge's relay key (32 bytes), what a client pins at registration.
    #[wasm_bindgen(getter, js_name = relayKey)]
    pub fn relay_key(&self) -> Vec<u8> {
        match &self.body {
            FrameBody::Challenge(c) => c.relay_key.0.to_vec(),
            _ => Vec::new(),
        }
    }

    /// A challenge's relay key fingerprint (64 hex digits), what a person compares.
    #[wasm_bindgen(getter, js_name = relayKeyFingerprint)]
    pub fn relay_key_fingerprint(&self) -> String {
        match &self.body {
            FrameBody::Challenge(c) => c.relay_key.fingerprint().to_string(),
            _ => String::new(),
        }
    }

    /// An error's name (`RateLimited`, `UnknownDevice`, ...).
    #[wasm_bindgen(getter, js_name = errorName)]
    pub fn error_name(&self) -> String {
        match &self.body {
            FrameBody::Error { code, .. } => format!("{code:?}"),
            _ => String::new(),
        }
    }

    /// An error's retry delay in milliseconds (0 if none).
    #[wasm_bindgen(getter, js_name = retryAfterMs)]
    pub fn retry_after_ms(&self) -> u32 {
        match &self.body {
            FrameBody::Error { retry_after_ms, .. } => *retry_after_ms,
            _ => 0,
        }
    }

    /// A bundle's encoded prekey bundle, for `Session.initiate`.
    #[wasm_bindgen(getter)]
    pub fn bundle(&self) -> Vec<u8> {
        match &self.body {
            FrameBody::Bundle(b) => b.to_bytes(),
            _ => Vec::new(),
        }
    }

    /// A delivery's server id (16 bytes), or a `Sent`'s ids concatenated.
    #[wasm_bindgen(getter, js_name = serverIds)]
    pub fn server_ids(&self) -> Vec<u8> {
        match &self.body {
            FrameBody::Deliver(d) => d.server_id.to_vec(),
            FrameBody::Sent(receipts) => receipts.iter().flat_map(|r| r.server_id).collect(),
            _ => Vec::new(),
        }
    }

    /// A delivery's authenticated sender, `fingerprint:deviceId`.
    #[wasm_bindgen(getter)]
    pub fn sender(&self) -> String {
        match &self.body {
            FrameBody::Deliver(d) => format_address(&d.sender),
            _ => String::new(),
        }
    }

    /// A delivery's relay time (Unix milliseconds).
    #[wasm_bindgen(getter, js_name = serverTimeMs)]
    pub fn server_time_ms(&self) -> f64 {
        match &self.body {
            #[allow(clippy::cast_precision_loss)]
            FrameBody::Deliver(d) => d.server_time_ms as f64,
            _ => 0.0,
        }
    }

    /// A delivery's ciphertext.
    #[wasm_bindgen(getter)]
    pub fn payload(&self) -> Vec<u8> {
        match &self.body {
            FrameBody::Deliver(d) => d.payload.clone(),
            _ => Vec::new(),
        }
    }

    /// `PreKeyCount`: one-time X25519 prekeys left.
    #[wasm_bindgen(getter, js_name = oneTimeLeft)]
    pub fn one_time_left(&self) -> u32 {
        match &self.body {
            FrameBody::PreKeyCount { one_time, .. } => *one_time,
            _ => 0,
        }
    }

    /// `Certificate`: the encoded agent certificate, empty if the identity holds none.
    #[wasm_bindgen(getter)]
    pub fn certificate(&self) -> Vec<u8> {
        match &self.body {
            FrameBody::Certificate(Some(c)) => c.to_bytes(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads (docs/client.md §4)
// ---------------------------------------------------------------------------------------------

/// A text message payload, padded (§4.5), ready for `Session.encrypt`. `messageId` is 16
/// random bytes (`crypto.getRandomValues`), `sentAtMs` the sender's clock.
#[wasm_bindgen(js_name = encodeTextMessage)]
pub fn encode_text_message(message_id: &[u8], sent_at_ms: f64, text: &str) -> Result<Vec<u8>> {
    let id: [u8; 16] = message_id
        .try_into()
        .map_err(|_| Error::new("a message id is 16 bytes"))?;
    let payload = Payload::Message {
        id: MessageId(id),
        sent_at_ms: millis(sent_at_ms)?,
        content_type: ContentType::Text,
        content: Zeroizing::new(text.as_bytes().to_vec()),
    };
    Ok(pad(&payload.encode()).to_vec())
}

/// A receipt payload (padded) for the messages whose ids are given as 32-hex-digit strings
/// (1 to 256).
#[wasm_bindgen(js_name = encodeReceipt)]
pub fn encode_receipt(message_ids: Vec<String>) -> Result<Vec<u8>> {
    if message_ids.is_empty() || message_ids.len() > 256 {
        return Err(Error::new("a receipt names 1 to 256 messages"));
    }
    let ids = message_ids
        .iter()
        .map(|s| MessageId::from_str(s).map_err(Error::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(pad(&Payload::Receipt(ids).encode()).to_vec())
}

/// A decrypted payload (`hushwire::payload::Payload::decode_padded`).
#[wasm_bindgen]
#[derive(Debug)]
pub struct DecodedPayload {
    kind: &'static str,
    message_id: String,
    sent_at_ms: u64,
    text: String,
    receipt_ids: Vec<String>,
    conversation: String,
    epoch: u64,
    shared: Vec<SharedText>,
}

/// Decodes a decrypted plaintext. Throws for bytes that are not a payload.
#[wasm_bindgen(js_name = decodePayload)]
pub fn decode_payload(plaintext: &[u8]) -> Result<DecodedPayload> {
    let empty = DecodedPayload {
        kind: "other",
        message_id: String::new(),
        sent_at_ms: 0,
        text: String::new(),
        receipt_ids: Vec::new(),
        conversation: String::new(),
        epoch: 0,
        shared: Vec::new(),
    };
    Ok(
        match Payload::decode_padded(plaintext).map_err(Error::new)? {
            Payload::Message {
                id,
                sent_at_ms,
                content_type,
                content,
            } => DecodedPayload {
                kind: if content_type == ContentType::Text {
                    "message"
                } else {
                    "binary"
                },
                message_id: id.to_string(),
                sent_at_ms,
                text: String::from_utf8_lossy(&content).into_owned(),
                ..empty
            },
            Payload::Receipt(ids) => DecodedPayload {
                kind: "receipt",
                receipt_ids: ids.iter().map(ToString::to_string).collect(),
                ..empty
            },
            Payload::SessionReset(_) => DecodedPayload {
                kind: "sessionReset",
                ..empty
            },
            Payload::SentCopy { .. } => DecodedPayload {
                kind: "sentCopy",
                ..empty
            },
            // Conversation payloads (docs/conversations.md §8).
            Payload::ConversationMessage(m) => DecodedPayload {
                kind: if m.content_type == ContentType::Text {
                    "conversationMessage"
                } else {
                    "conversationBinary"
                },
                message_id: m.id.to_string(),
                sent_at_ms: m.sent_at_ms,
                text: String::from_utf8_lossy(&m.content).into_owned(),
                conversation: m.conversation.to_string(),
                epoch: m.epoch,
                ..empty
            },
            Payload::ConversationReceipt {
                conversation,
                status,
                ids,
            } => DecodedPayload {
                kind: match status {
                    ReceiptStatus::Delivered => "conversationDelivered",
                    ReceiptStatus::Read => "conversationRead",
                },
                receipt_ids: ids.iter().map(ToString::to_string).collect(),
                conversation: conversation.to_string(),
                ..empty
            },
            Payload::Recall {
                conversation,
                id,
                recalled_at_ms,
            } => DecodedPayload {
                kind: "recall",
                message_id: id.to_string(),
                sent_at_ms: recalled_at_ms,
                conversation: conversation.to_string(),
                ..empty
            },
            Payload::HistoryShare {
                conversation,
                messages,
            } => DecodedPayload {
                kind: "historyShare",
                conversation: conversation.to_string(),
                shared: messages.iter().map(SharedText::from_shared).collect(),
                ..empty
            },
            // §8.5: for staff devices only; the console shows it marked as a staff note.
            Payload::StaffNote { conversation, note } => DecodedPayload {
                kind: "staffNote",
                text: note.as_str().to_owned(),
                conversation: conversation.to_string(),
                ..empty
            },
        },
    )
}

#[wasm_bindgen]
impl DecodedPayload {
    /// `message`, `binary`, `receipt`, `sessionReset`, `sentCopy`; for clinic conversations
    /// `conversationMessage`, `conversationBinary`, `conversationDelivered`, `conversationRead`,
    /// `recall`, `historyShare`, `staffNote`; or `other`.
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        self.kind.to_owned()
    }
    /// A message's id, 32 hex digits.
    #[wasm_bindgen(getter, js_name = messageId)]
    pub fn message_id(&self) -> String {
        self.message_id.clone()
    }
    /// A message's sender clock, Unix milliseconds (a recall's `recalled_at_ms`: shown, not
    /// trusted).
    #[wasm_bindgen(getter, js_name = sentAtMs)]
    pub fn sent_at_ms(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ms = self.sent_at_ms as f64;
        ms
    }
    /// A text message's text (invalid UTF-8 replaced), or a staff note's one line. Display it as
    /// text, never as HTML.
    #[wasm_bindgen(getter)]
    pub fn text(&self) -> String {
        self.text.clone()
    }
    /// A receipt's message ids.
    #[wasm_bindgen(getter, js_name = receiptIds)]
    pub fn receipt_ids(&self) -> Vec<String> {
        self.receipt_ids.clone()
    }
    /// A conversation payload's conversation id, 32 hex digits (empty for two-party kinds).
    #[wasm_bindgen(getter)]
    pub fn conversation(&self) -> String {
        self.conversation.clone()
    }
    /// A conversation message's membership epoch.
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let epoch = self.epoch as f64;
        epoch
    }
    /// A history share's messages.
    #[wasm_bindgen(getter)]
    pub fn shared(&self) -> Vec<SharedText> {
        self.shared.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Passphrase and sealed values
// ---------------------------------------------------------------------------------------------

/// Argon2id (RFC 9106, version 0x13) of `passphrase` with `salt` (at least 8 bytes; 16 random
/// ones), with `memoryKib` KiB, `iterations` passes and one lane, as a `StorageKey`. The web
/// client uses the native client's parameters, 65 536 KiB and 3 passes (`docs/browser.md`).
#[wasm_bindgen(js_name = deriveStorageKey)]
pub fn derive_storage_key(
    passphrase: &str,
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
) -> Result<StorageKey> {
    let params = argon2::Params::new(memory_kib, iterations, 1, Some(32)).map_err(Error::new)?;
    let mut key = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(Error::new)?;
    Ok(StorageKey(hushwire::StorageKey::from_bytes(*key)))
}

#[wasm_bindgen]
impl StorageKey {
    /// A fresh random key that lives only in this WebAssembly instance (a one-off chat whose
    /// store dies with the tab).
    pub fn random() -> Result<StorageKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| Error::new(format_args!("no secure randomness available: {e}")))?;
        Ok(StorageKey(hushwire::StorageKey::from_bytes(*bytes)))
    }

    /// Seals arbitrary bytes (`hushwire::seal::seal_value`: XChaCha20-Poly1305, the account
    /// and session format with kind 0x33).
    #[wasm_bindgen(js_name = sealValue)]
    pub fn seal_value(&self, value: &[u8]) -> Result<Vec<u8>> {
        Ok(hushwire::seal::seal_value(value, &self.0, &mut os_rng()?))
    }

    /// Opens bytes sealed by `sealValue`. Throws for a wrong key or altered bytes.
    #[wasm_bindgen(js_name = openValue)]
    pub fn open_value(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        hushwire::seal::unseal_value(sealed, &self.0)
            .map(|v| v.to_vec())
            .map_err(Error::new)
    }
}

// ---------------------------------------------------------------------------------------------
// Clinic link and agent certificates
// ---------------------------------------------------------------------------------------------

/// A clinic link (`docs/clinic.md` §2), its signature checked when parsed.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Clinic(ClinicLink);

impl Clinic {
    pub(crate) fn link(&self) -> &ClinicLink {
        &self.0
    }
}

#[wasm_bindgen]
impl Clinic {
    /// Parses and verifies `hushwire-clinic:...`. Throws if it is malformed or its signature
    /// fails (an altered name or relay URL).
    pub fn parse(text: &str) -> Result<Clinic> {
        ClinicLink::from_str(text.trim())
            .map(Self)
            .map_err(Error::new)
    }

    /// The clinic's name, as its organization key signed it.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.0.name().to_owned()
    }

    /// The relay URL the link names.
    #[wasm_bindgen(getter, js_name = relayUrl)]
    pub fn relay_url(&self) -> String {
        self.0.relay_url().to_owned()
    }

    /// Checks an agent certificate (`Incoming.certificate`) against this clinic at
    /// `nowSeconds` and that it certifies the identity whose fingerprint is `fingerprintHex`;
    /// returns the agent's certified name. Throws with the reason otherwise.
    #[wasm_bindgen(js_name = verifyAgent)]
    pub fn verify_agent(
        &self,
        certificate: &[u8],
        now_seconds: f64,
        fingerprint_hex: &str,
    ) -> Result<String> {
        let cert = AgentCertificate::from_bytes(certificate).map_err(Error::new)?;
        cert.verify(self.0.org(), unix_seconds(now_seconds)?, None)
            .map_err(Error::new)?;
        if cert.subject().fingerprint().0 != unhex32(fingerprint_hex)? {
            return Err(Error::new("the certificate is for another identity"));
        }
        Ok(cert.name().to_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::Session;
    use hushwire::proto::relay::Challenge;

    #[test]
    fn login_answer_is_bound_to_the_pinned_key() {
        let relay = hushwire::IdentityKeyPair::generate(&mut os_rng().unwrap());
        let challenge = frame(0, FrameBody::Challenge(Challenge::new([3; 32], 99, &relay)));
        let account = Account::new(1, 1_700_000_000.0).unwrap();
        let pin = decode_frame(&challenge).unwrap().relay_key();
        let answer = account
            .answer_challenge(&challenge, Some(pin.clone()), false, 7, None)
            .unwrap();
        let decoded = Frame::from_bytes(&answer).unwrap();
        assert_eq!(decoded.request_id, 7);
        let FrameBody::Authenticate(credentials) = decoded.body else {
            panic!("not Authenticate");
        };
        let FrameBody::Challenge(c) = Frame::from_bytes(&challenge).unwrap().body else {
            panic!()
        };
        assert!(credentials.verify(&c));
        let err = account
            .answer_challenge(&challenge, Some(vec![1; 32]), true, 1, None)
            .unwrap_err();
        assert!(err.message().contains("key changed"), "{err}");
        assert!(matches!(
            Frame::from_bytes(
                &account
                    .answer_challenge(&challenge, None, true, 1, None)
                    .unwrap()
            )
            .unwrap()
            .body,
            FrameBody::Register { .. }
        ));
    }

    #[test]
    fn payloads_frames_and_values_round_trip() {
        let id = [0xab; 16];
        let bytes = encode_text_message(&id, 1234.0, "<img src=x onerror=alert(1)>").unwrap();
        assert_eq!(bytes.len() % 256, 0);
        let p = decode_payload(&bytes).unwrap();
        assert_eq!(p.kind(), "message");
        assert_eq!(p.text(), "<img src=x onerror=alert(1)>");
        assert_eq!(p.message_id(), hex(&id));
        let r = decode_payload(&encode_receipt(vec![hex(&id)]).unwrap()).unwrap();
        assert_eq!(r.receipt_ids(), vec![hex(&id)]);

        let mut alice = Account::new(1, 1.0).unwrap();
        let upload = alice.upload_prekeys_frame(2, 3, 2).unwrap();
        assert!(matches!(
            Frame::from_bytes(&upload).unwrap().body,
            FrameBody::UploadPreKeys { ref one_time_prekeys, .. } if one_time_prekeys.len() == 3
        ));
        let address = alice.address();
        let send = send_frame(4, &address, b"ct").unwrap();
        assert!(
            matches!(Frame::from_bytes(&send).unwrap().body, FrameBody::Send(ref e) if e[0].recipient == parse_address(&address).unwrap())
        );
        let many = send_frame_many(5, &address, b"abcdef", &[1, 2, 3]).unwrap();
        let FrameBody::Send(envelopes) = Frame::from_bytes(&many).unwrap().body else {
            panic!("not Send");
        };
        let parts: Vec<&[u8]> = envelopes.iter().map(|e| e.payload.as_slice()).collect();
        assert_eq!(parts, [&b"a"[..], b"bc", b"def"]);
        assert!(send_frame_many(5, &address, b"abc", &[1, 1]).is_err());
        assert!(send_frame_many(5, &address, b"ab", &[1, 2]).is_err());
        assert!(send_frame_many(5, &address, b"", &[]).is_err());
        assert!(send_frame_many(5, &address, &[0; 17], &[1; 17]).is_err());
        assert!(fetch_bundle_frame(1, "nope").is_err());
        assert!(ack_frame(1, &[0; 15]).is_err());
        assert!(
            matches!(Frame::from_bytes(&ack_frame(1, &[]).unwrap()).unwrap().body, FrameBody::Ack(ref v) if v.is_empty())
        );

        let bob = Account::new(2, 1.0).unwrap();
        let mut s = Session::initiate(&bob, &alice.prekey_bundle().unwrap()).unwrap();
        assert!(is_prekey_message(&s.encrypt(b"x").unwrap()));

        let key = derive_storage_key("correct horse", &[1; 16], 64, 1).unwrap();
        let again = derive_storage_key("correct horse", &[1; 16], 64, 1).unwrap();
        let other = derive_storage_key("wrong horse", &[1; 16], 64, 1).unwrap();
        let sealed = key.seal_value(b"secret").unwrap();
        assert_eq!(again.open_value(&sealed).unwrap(), b"secret");
        assert!(other.open_value(&sealed).is_err());
        assert!(StorageKey::random().unwrap().open_value(&sealed).is_err());
        // A sealed account is not a sealed value.
        assert!(key.open_value(&alice.seal(&key).unwrap()).is_err());
    }
}
