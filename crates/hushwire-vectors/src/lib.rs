//! Hushwire's test vectors, generated from a fixed seed.
//!
//! Every secret the core draws from its RNG is printed, in draw order, so an independent
//! implementation can check the vectors without reproducing the RNG: take the drawn bytes as
//! given, and recompute every derived value from `docs/protocol.md`.

use std::convert::Infallible;
use std::path::PathBuf;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hushwire::proto::{Codec, PreKeyBundle, SafetyNumber, labels};
use hushwire::transcript::{
    AuditorKey, ContentType, Direction, ExportItem, ExportReader, ExportWriter, SealedRecord,
    TranscriptCheckpoint, TranscriptFault, TranscriptManifest, TranscriptRecord, TranscriptReport,
    TranscriptVerifier, TranscriptWriter, genesis_hash,
};
use hushwire::wire::Message;
use hushwire::{Account, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng as _, TryCryptoRng, TryRng};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

mod audit_cases;
mod clinic;
mod linking;
mod membership;
mod payloads;
mod relay_login;
mod xchacha;
pub use payloads::{decode_error_json, payload_json, reason_name};

/// Alice's RNG seed: the 32 ASCII bytes `Hushwire test vectors seed v1...`; Bob's is the same
/// with the last byte `b`.
pub const SEED: [u8; 32] = *b"Hushwire test vectors seed v1...";

/// The transcript vectors' RNG seed (`transcript.json`), separate so that adding them changed no
/// other file.
pub const TRANSCRIPT_SEED: [u8; 32] = *b"Hushwire transcript vectors v1..";

/// Where the vectors live in the repository.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors")
}

/// An RNG that records every draw, so the vectors can print the bytes each step consumed.
pub struct RecordingRng {
    inner: ChaCha20Rng,
    draws: Vec<Vec<u8>>,
}

impl RecordingRng {
    fn new(seed: [u8; 32]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
            draws: Vec::new(),
        }
    }

    /// The draws since the last call, hex-encoded.
    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.draws)
            .iter()
            .map(hex::encode)
            .collect()
    }
}

impl TryRng for RecordingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.try_fill_bytes(dst)?;
        self.draws.push(dst.to_vec());
        Ok(())
    }
}

impl TryCryptoRng for RecordingRng {}

type Error = Box<dyn std::error::Error>;

/// Generates every vector file: `(file name, JSON text)`.
pub fn generate() -> Result<Vec<(&'static str, String)>, Error> {
    let mut alice_rng = RecordingRng::new(SEED);
    let mut bob_seed = SEED;
    bob_seed[31] = b'b';
    let mut bob_rng = RecordingRng::new(bob_seed);

    // Keys.
    let alice = Account::new(1, 1_700_000_000, &mut alice_rng);
    let alice_draws = alice_rng.take();
    let mut bob = Account::new(7, 1_700_000_000, &mut bob_rng);
    let bob_draws = bob_rng.take();
    bob.generate_one_time_prekeys(1, &mut bob_rng);
    let bob_otpk_draws = bob_rng.take();
    bob.generate_one_time_kem_prekeys(1, &mut bob_rng);
    let bob_kem_draws = bob_rng.take();
    let bundle = bob.prekey_bundle().ok_or("bob has no signed prekey")?;

    let keys = json!({
        "description": "Identity and prekey generation. `draws` are the RNG outputs each step consumed, in order: Account::new draws the Ed25519 identity seed (32), the X25519 identity secret (32), the signed prekey secret (32), the last-resort ML-KEM-1024 seed d||z (64). Ed25519 signatures are deterministic (RFC 8032). Protocol version 2: prekey signatures cover the device id (SIG_SIGNED_PREKEY || device_id || id || key; SIG_KEM_PREKEY || device_id || kind || id || key, docs/protocol.md §3.5, §3.7) and bundles start with the version byte 0x02.",
        "alice": account_json(&alice, &alice_draws),
        "bob": {
            "account": account_json(&bob, &bob_draws),
            "one_time_prekey": {
                "draws": bob_otpk_draws,
                "id": bundle.one_time_prekey.as_ref().map(|k| k.id),
                "public": bundle.one_time_prekey.as_ref().map(|k| hex::encode(k.key.as_bytes())),
                "encoded": bundle.one_time_prekey.as_ref().map(|k| hex::encode(k.to_bytes())),
            },
            "one_time_kem_prekey": {
                "draws": bob_kem_draws,
                "id": bundle.kem_prekey.id,
                "kind": "one-time",
                "public": hex::encode(bundle.kem_prekey.key.as_bytes()),
                "signature": hex::encode(bundle.kem_prekey.signature),
                "encoded": hex::encode(bundle.kem_prekey.to_bytes()),
            },
        },
        "bob_bundle": hex::encode(bundle.to_bytes()),
        "safety_number": SafetyNumber::compute(alice.identity_key(), bob.identity_key()).digits(),
    });

    // Handshake.
    let (mut alice_session, trace) =
        Session::initiate_traced(alice.identity(), &bundle, &mut alice_rng)?;
    let initiate_draws = alice_rng.take();
    let (first, first_trace) =
        alice_session.encrypt_traced(b"Hello, this is Alice. Is the clinic open today?")?;
    let inbound = bob.accept(&first, &mut bob_rng)?;
    let accept_draws = bob_rng.take();
    let mut bob_session = inbound.session;
    let Message::PreKey(prekey_message) = Message::from_bytes(&first)? else {
        return Err("first message is not a prekey message".into());
    };
    let th_input = handshake_transcript(&alice, &bundle, &prekey_message);
    if <[u8; 32]>::from(Sha256::digest(&th_input)) != trace.transcript_hash {
        return Err("the transcript as published does not hash to TH".into());
    }
    let handshake = json!({
        "description": "Alice starts a session from bob_bundle (keys.json). Session::initiate draws EK_A's secret (32), the ML-KEM encapsulation message m (32, FIPS 203 ML-KEM.Encaps_internal), then Alice's first ratchet secret (32). Bob's Account::accept draws his first ratchet secret (32). Protocol version 2 (docs/protocol.md §4.4): `transcript` is the 3409 bytes hashed into `transcript_hash` (TH = SHA-256(transcript)); SK || HK_A || NHK_B = HKDF-SHA256(0^32, 0xFF^32 || DH1..DH4 || SS, KDF_HANDSHAKE || TH, 96) gives `shared_secret`, `initiator_header_key` and `responder_header_key`. The first message's body is AES-256-GCM with AD = associated_data || 0x02 || 0x01 || header plaintext (40 bytes); its `encrypted_header` (56 bytes) is XChaCha20-Poly1305 of the header plaintext under `header_key` (= HK_A), nonce = the body's 16-byte tag || 0^8, AD = associated_data (§5.3).",
        "bundle": hex::encode(bundle.to_bytes()),
        "initiator_draws": initiate_draws,
        "base_key": hex::encode(prekey_message.base_key.as_bytes()),
        "dh1": hex::encode(trace.dh1),
        "dh2": hex::encode(trace.dh2),
        "dh3": hex::encode(trace.dh3),
        "dh4": trace.dh4.map(hex::encode),
        "kem_ciphertext": hex::encode(prekey_message.kem_ciphertext.as_slice()),
        "kem_shared_secret": hex::encode(trace.kem_shared_secret),
        "transcript": hex::encode(&th_input),
        "transcript_hash": hex::encode(trace.transcript_hash),
        "shared_secret": hex::encode(trace.shared_secret),
        "initiator_header_key": hex::encode(trace.initiator_header_key),
        "responder_header_key": hex::encode(trace.responder_header_key),
        "associated_data": hex::encode(associated_data(&alice, &bob)),
        "first_message": {
            "plaintext": String::from_utf8_lossy(&inbound.plaintext),
            "sending_chain_key": hex::encode(first_trace.chain_key),
            "root_key": hex::encode(first_trace.root_key),
            "message_key": hex::encode(first_trace.message_key),
            "header_key": hex::encode(first_trace.header_key),
            "aead_key": hex::encode(first_trace.aead_key),
            "nonce": hex::encode(first_trace.nonce),
            "encrypted_header": hex::encode(prekey_message.message.encrypted_header),
            "handshake_digest": hex::encode(prekey_message.handshake_digest()),
            "wire": hex::encode(&first),
        },
        "responder_draws": accept_draws,
    });

    // Conversation: 30 messages, with reordering and DH ratchet turns both ways.
    let conversation = conversation(
        &mut alice_session,
        &mut bob_session,
        &mut alice_rng,
        &mut bob_rng,
    )?;

    // Sealed session.
    let storage_key = [0x5a; 32];
    let sealed = alice_session.seal(&StorageKey::from_bytes(storage_key), &mut alice_rng);
    let seal_draws = alice_rng.take();
    let mut reloaded = Session::unseal(&sealed, &StorageKey::from_bytes(storage_key))?;
    let after = reloaded.encrypt(b"sent after reload")?;
    let mut original = alice_session.clone();
    if original.encrypt(b"sent after reload")? != after {
        return Err("reloaded session diverged from the original".into());
    }
    let mut sealed_session = json!({
        "description": "Alice's session at the end of conversation.json, sealed under storage_key. The draw is the 24-byte XChaCha20-Poly1305 nonce. The contents are a postcard encoding private to this implementation (VersionedSessionPickle::V2 since protocol version 2: first byte 0x01, with the header keys HKs, NHKs, HKr, NHKr and the retired chains' header keys); what is specified is the envelope (docs/protocol.md §7). `next_message` is what the unsealed session encrypts next for the plaintext given, identical to the original's.",
        "storage_key": hex::encode(storage_key),
        "draws": seal_draws,
        "sealed": hex::encode(&sealed),
        "next_plaintext": "sent after reload",
        "next_message": hex::encode(&after),
    });
    xchacha::add_to_sealed_session(&mut sealed_session, &storage_key, &sealed)?;

    // Sealed transcript and export: Alice's record of her conversation with Bob.
    let mut transcript = transcript(&alice, &bob)?;
    xchacha::add_to_transcript(&mut transcript)?;

    // A short audit chain, as a relay writes it.
    let audit = audit_chain()?;

    Ok(vec![
        ("keys.json", pretty(&keys)?),
        ("handshake.json", pretty(&handshake)?),
        ("conversation.json", pretty(&conversation)?),
        ("sealed_session.json", pretty(&sealed_session)?),
        ("transcript.json", pretty(&transcript)?),
        ("audit.json", pretty(&audit)?),
        ("payloads.json", pretty(&payloads::payloads()?)?),
        (
            "relay_login.json",
            pretty(&relay_login::relay_login(&alice)?)?,
        ),
        ("clinic.json", pretty(&clinic::clinic(&alice, &bob)?)?),
        ("linking.json", pretty(&linking::linking(&alice)?)?),
        (
            "conversation_membership.json",
            pretty(&membership::membership()?)?,
        ),
    ])
}

fn pretty(v: &Value) -> Result<String, Error> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn associated_data(initiator: &Account, responder: &Account) -> Vec<u8> {
    let mut ad = initiator.identity_key().public_bytes().to_vec();
    ad.extend_from_slice(&responder.identity_key().public_bytes());
    ad
}

/// The bytes hashed into the handshake transcript hash `TH` (`docs/protocol.md` §4.4), rebuilt
/// from public values so the vectors can publish them; generation checks they hash to the
/// core's `TH`.
fn handshake_transcript(
    initiator: &Account,
    bundle: &PreKeyBundle,
    message: &hushwire::wire::PreKeyMessage,
) -> Vec<u8> {
    let mut t = labels::HANDSHAKE_TRANSCRIPT.to_vec();
    t.extend_from_slice(&initiator.identity_key().public_bytes());
    t.extend_from_slice(&bundle.identity.public_bytes());
    t.extend_from_slice(&bundle.device_id.to_be_bytes());
    t.extend_from_slice(message.base_key.as_bytes());
    t.extend_from_slice(&bundle.signed_prekey.id.to_be_bytes());
    t.extend_from_slice(bundle.signed_prekey.key.as_bytes());
    match &bundle.one_time_prekey {
        Some(k) => {
            t.push(1);
            t.extend_from_slice(&k.id.to_be_bytes());
            t.extend_from_slice(k.key.as_bytes());
        }
        None => t.push(0),
    }
    t.extend_from_slice(&bundle.kem_prekey.id.to_be_bytes());
    t.extend_from_slice(bundle.kem_prekey.key.as_bytes());
    t.extend_from_slice(message.kem_ciphertext.as_slice());
    t
}

/// The 56-byte encrypted header of a session message (inside a prekey message, if it is one).
fn encrypted_header(wire: &[u8]) -> Result<[u8; 56], Error> {
    Ok(match Message::from_bytes(wire)? {
        Message::Ratchet(m) => m.encrypted_header,
        Message::PreKey(p) => p.message.encrypted_header,
    })
}

fn account_json(account: &Account, draws: &[String]) -> Value {
    let identity = account.identity_key();
    let spk = account.signed_prekey();
    let kem = account.last_resort_kem_prekey();
    json!({
        "device_id": account.device_id(),
        "draws": draws,
        "identity_signing_key": hex::encode(identity.signing_key().as_bytes()),
        "identity_dh_key": hex::encode(identity.dh_key().as_bytes()),
        "identity_binding_signature": hex::encode(identity.binding_signature()),
        "identity_key": hex::encode(identity.to_bytes()),
        "fingerprint": identity.fingerprint().to_string(),
        "signed_prekey": spk.map(|k| json!({
            "id": k.id,
            "public": hex::encode(k.key.as_bytes()),
            "signature": hex::encode(k.signature),
            "encoded": hex::encode(k.to_bytes()),
        })),
        "last_resort_kem_prekey": kem.map(|k| json!({
            "id": k.id,
            "kind": "last-resort",
            "public": hex::encode(k.key.as_bytes()),
            "signature": hex::encode(k.signature),
            "encoded": hex::encode(k.to_bytes()),
        })),
    })
}

/// Who sends each of the 30 messages, and when each is delivered: `Send(alice?)` appends the
/// next message; `Deliver(n)` hands message `n` to its recipient.
enum Step {
    Send(bool),
    Deliver(usize),
}

fn script() -> Vec<Step> {
    use Step::{Deliver as D, Send as S};
    vec![
        // Alice's first message went out in handshake.json and is already delivered.
        // Alice sends 3 more (still prekey messages); Bob gets them out of order.
        S(true),
        S(true),
        S(true),
        D(2),
        D(0),
        D(1),
        // Bob replies twice (DH turn); Alice reads the second first.
        S(false),
        S(false),
        D(4),
        D(3),
        // Alice sends 4 in a new chain; one arrives only after Bob's next turn.
        S(true),
        S(true),
        S(true),
        S(true),
        D(5),
        D(7),
        D(8),
        S(false),
        D(9),
        D(6),
        // Ping-pong: a DH turn on every message.
        S(true),
        D(10),
        S(false),
        D(11),
        S(true),
        D(12),
        S(false),
        D(13),
        // Bob sends 5; Alice receives them in reverse.
        S(false),
        S(false),
        S(false),
        S(false),
        S(false),
        D(18),
        D(17),
        D(16),
        D(15),
        D(14),
        // Alice sends 6 in one chain, delivered with a gap filled last.
        S(true),
        S(true),
        S(true),
        S(true),
        S(true),
        S(true),
        D(19),
        D(20),
        D(22),
        D(23),
        D(24),
        D(21),
        // Bob closes with 5 more, in order.
        S(false),
        S(false),
        S(false),
        S(false),
        S(false),
        D(25),
        D(26),
        D(27),
        D(28),
        D(29),
    ]
}

/// The script as data for `conversation.json`: `{"send": n}` (the sender's next message, `n`
/// counting sends from 0) and `{"deliver": n}`, in the order the generator ran them.
fn schedule_json(script: &[Step]) -> Value {
    let mut sent = 0usize;
    script
        .iter()
        .map(|step| match step {
            Step::Send(_) => {
                sent += 1;
                json!({ "send": sent - 1 })
            }
            Step::Deliver(n) => json!({ "deliver": n }),
        })
        .collect()
}

fn conversation(
    alice: &mut Session,
    bob: &mut Session,
    alice_rng: &mut RecordingRng,
    bob_rng: &mut RecordingRng,
) -> Result<Value, Error> {
    let mut messages: Vec<(bool, Vec<u8>, Vec<u8>, Value)> = Vec::new();
    let mut deliveries = Vec::new();
    for step in script() {
        match step {
            Step::Send(from_alice) => {
                let n = messages.len();
                let plaintext = format!(
                    "message {n} from {}",
                    if from_alice { "alice" } else { "bob" }
                );
                let session = if from_alice { &mut *alice } else { &mut *bob };
                let (wire, trace) = session.encrypt_traced(plaintext.as_bytes())?;
                let header = trace.header;
                let entry = json!({
                    "number": n,
                    "sender": if from_alice { "alice" } else { "bob" },
                    "plaintext": plaintext,
                    "ratchet_key": hex::encode(header.ratchet_key.as_bytes()),
                    "previous_chain_length": header.previous_chain_length,
                    "index": header.index,
                    "chain_key": hex::encode(trace.chain_key),
                    "message_key": hex::encode(trace.message_key),
                    "header_key": hex::encode(trace.header_key),
                    "aead_key": hex::encode(trace.aead_key),
                    "nonce": hex::encode(trace.nonce),
                    "encrypted_header": hex::encode(encrypted_header(&wire)?),
                    "root_key_after": hex::encode(trace.root_key),
                    "wire": hex::encode(&wire),
                });
                messages.push((from_alice, plaintext.into_bytes(), wire, entry));
            }
            Step::Deliver(n) => {
                let (from_alice, plaintext, wire, _) =
                    messages.get(n).ok_or("script delivers an unsent message")?;
                let (receiver, rng) = if *from_alice {
                    (&mut *bob, &mut *bob_rng)
                } else {
                    (&mut *alice, &mut *alice_rng)
                };
                let decrypted = receiver.decrypt(wire, rng)?;
                if &decrypted != plaintext {
                    return Err(format!("message {n} decrypted to something else").into());
                }
                deliveries.push(json!({
                    "number": n,
                    "receiver": if *from_alice { "bob" } else { "alice" },
                    "receiver_draws": rng.take(),
                    "missing_after": receiver.missing_messages().iter().map(|g| json!({
                        "chain": hex::encode(g.chain.as_bytes()),
                        "missing": g.missing,
                    })).collect::<Vec<_>>(),
                }));
            }
        }
    }
    if !alice.missing_messages().is_empty() || !bob.missing_messages().is_empty() {
        return Err("every message was delivered, yet a gap remains".into());
    }
    Ok(json!({
        "description": "30 messages after the handshake of handshake.json (which holds message 0 of the session; numbers here start again at 0). `messages` lists them in sending order with the sender's secrets (`chain_key` is the sending chain key the message key came from: message_key = HMAC-SHA256(chain_key, 0x01)); `deliveries` lists them in delivery order, with the receiver's RNG draws (a new ratchet secret at each DH ratchet step) and the gaps it reports afterwards. `schedule` is the order the generator ran, to follow step by step: {\"send\": n} encrypts message n, {\"deliver\": n} hands message n to its receiver (the next entry of `deliveries`). Keys depend on how sends and deliveries interleave: encrypting all 30 first reproduces only 6 of them. Protocol version 2 (docs/protocol.md §5.3): each body is AES-256-GCM under `aead_key`/`nonce` with AD = handshake.associated_data || 0x02 || 0x01 || the 40-byte header plaintext (ratchet_key || previous_chain_length || index, big-endian); the header travels only as `encrypted_header` (56 bytes, bytes 2..58 of the ratchet message, which is inside a prekey message for Alice's messages before Bob's first reply): XChaCha20-Poly1305 of the header plaintext under `header_key`, nonce = the body's 16-byte tag || 0^8, AD = handshake.associated_data.",
        "messages": messages.iter().map(|(_, _, _, e)| e.clone()).collect::<Vec<_>>(),
        "deliveries": deliveries,
        "schedule": schedule_json(&script()),
    }))
}

/// Parses a bundle the vectors published; used by the test to check they are self-consistent.
pub fn parse_bundle(hex_bytes: &str) -> Result<PreKeyBundle, Error> {
    Ok(PreKeyBundle::from_bytes(&hex::decode(hex_bytes)?)?)
}

// ---------------------------------------------------------------------------------------------
// transcript.json
// ---------------------------------------------------------------------------------------------

/// Records appended per interval checkpoint in `transcript.json`.
const CHECKPOINT_INTERVAL: u64 = 2;
/// When the transcript is closed (Unix milliseconds).
const CLOSED_AT_MS: u64 = 1_700_000_400_000;
/// Plaintext bytes per export chunk (`hushwire::transcript::CHUNK_LEN`).
const CHUNK_LEN: usize = hushwire::transcript::CHUNK_LEN;

/// The five records of Alice's transcript. Record 2 is an attachment-sized binary payload at the
/// content limit, so that the export needs two chunks; record 4 has a content type this version
/// does not name, which must survive unchanged.
fn transcript_records(alice: &Account, bob: &Account) -> Vec<TranscriptRecord> {
    let a = alice.identity_key().fingerprint();
    let b = bob.identity_key().fingerprint();
    let id = |n: u8| {
        let mut m = *b"vector message 0";
        if let Some(last) = m.last_mut() {
            *last = b'0' + n;
        }
        m
    };
    let attachment: Vec<u8> = (0..hushwire::transcript::MAX_CONTENT_LEN)
        .map(|i| (i % 251) as u8)
        .collect();
    vec![
        TranscriptRecord {
            direction: Direction::Sent,
            sender: a,
            message_id: id(0),
            sent_at_ms: 1_700_000_100_000,
            received_at_ms: 1_700_000_100_000,
            content_type: ContentType::Text,
            content: b"Hello, this is Alice. Is the clinic open today?".to_vec(),
        },
        TranscriptRecord {
            direction: Direction::Received,
            sender: b,
            message_id: id(1),
            sent_at_ms: 1_700_000_160_000,
            received_at_ms: 1_700_000_161_250,
            content_type: ContentType::Text,
            content: b"Yes, until 6 pm. Please fill in the attached intake form.".to_vec(),
        },
        TranscriptRecord {
            direction: Direction::Received,
            sender: b,
            message_id: id(2),
            sent_at_ms: 1_700_000_220_000,
            received_at_ms: 1_700_000_222_500,
            content_type: ContentType::Binary,
            content: attachment,
        },
        TranscriptRecord {
            direction: Direction::Sent,
            sender: a,
            message_id: id(3),
            sent_at_ms: 1_700_000_280_000,
            received_at_ms: 1_700_000_280_000,
            content_type: ContentType::Text,
            content: "Thank you. I will come at 4 pm — no allergies to report.".into(),
        },
        TranscriptRecord {
            direction: Direction::Received,
            sender: b,
            message_id: id(4),
            sent_at_ms: 1_700_000_340_000,
            received_at_ms: 1_700_000_340_900,
            content_type: ContentType::Other(0x07),
            content: br#"{"read":"vector message 3"}"#.to_vec(),
        },
    ]
}

fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<[u8; 32], Error> {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut okm)
        .map_err(|_| "HKDF expand failed")?;
    Ok(okm)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn content_type_byte(t: ContentType) -> u8 {
    match t {
        ContentType::Text => 1,
        ContentType::Binary => 2,
        ContentType::Other(b) => b,
    }
}

fn report_json(r: &TranscriptReport) -> Value {
    json!({
        "records": r.records,
        "checkpoints": r.checkpoints,
        "unsigned_tail": r.unsigned_tail,
        "closed": r.closed,
        "head_hash": hex::encode(r.head_hash),
    })
}

fn fault_json(f: TranscriptFault) -> Value {
    use TranscriptFault as F;
    match f {
        F::BadCheckpointSignature { count } => {
            json!({"fault": "BadCheckpointSignature", "count": count})
        }
        F::WrongTranscript => json!({"fault": "WrongTranscript"}),
        F::Modified { sequence } => json!({"fault": "Modified", "sequence": sequence}),
        F::Inserted { position } => json!({"fault": "Inserted", "position": position}),
        F::Duplicated { sequence } => json!({"fault": "Duplicated", "sequence": sequence}),
        F::Removed { sequence } => json!({"fault": "Removed", "sequence": sequence}),
        F::Reordered { sequence } => json!({"fault": "Reordered", "sequence": sequence}),
        F::Truncated {
            checkpoint_count,
            records,
        } => {
            json!({"fault": "Truncated", "checkpoint_count": checkpoint_count, "records": records})
        }
        F::RecordsAfterClose { closed_at } => {
            json!({"fault": "RecordsAfterClose", "closed_at": closed_at})
        }
        F::CheckpointMismatch { count } => json!({"fault": "CheckpointMismatch", "count": count}),
    }
}

/// One stored record in a tampering case: a published record by index, or other bytes.
enum Stored {
    Published(usize),
    Bytes(SealedRecord),
}

/// One checkpoint given to the verifier in a tampering case.
enum Given {
    Published(usize),
    Bytes(TranscriptCheckpoint),
}

struct Case {
    name: &'static str,
    records: Vec<Stored>,
    checkpoints: Vec<Given>,
}

fn transcript(alice: &Account, bob: &Account) -> Result<Value, Error> {
    let mut rng = RecordingRng::new(TRANSCRIPT_SEED);
    let device = alice.identity();
    let signing_key = *alice.identity_key().signing_key();

    // The transcript: id and key drawn by TranscriptWriter::new.
    let mut writer = TranscriptWriter::new(CHECKPOINT_INTERVAL, &mut rng);
    let writer_draws = rng.take();
    let id = writer.id();
    let key = writer.key().to_bytes();
    if writer_draws != [hex::encode(id.0), hex::encode(*key)] {
        return Err("TranscriptWriter::new did not draw the id, then the key".into());
    }
    let record_key = hkdf32(&id.0, key.as_slice(), labels::KDF_TRANSCRIPT_RECORD)?;
    let genesis = sha256(&[labels::TRANSCRIPT_GENESIS, &id.0]);
    if genesis != genesis_hash(&id) || genesis != writer.head() {
        return Err("genesis hash differs from SHA-256(TRANSCRIPT_GENESIS || id)".into());
    }
    let cipher = XChaCha20Poly1305::new(&record_key.into());

    // Append the records; a checkpoint every CHECKPOINT_INTERVAL records, one more on close.
    let plain = transcript_records(alice, bob);
    let mut sealed = Vec::new();
    let mut checkpoints = Vec::new();
    let mut records_json = Vec::new();
    let mut made_after = Vec::new();
    for (i, record) in plain.iter().enumerate() {
        let appended = writer.append(record, device, record.received_at_ms, &mut rng)?;
        let draws = rng.take();
        let r = appended.record;
        let encoding = r.to_bytes();
        let plaintext = record.to_bytes();
        if TranscriptRecord::from_bytes(&plaintext)? != *record {
            return Err(format!("record {i} does not round-trip its encoding").into());
        }
        // Recompute what the core keeps private: the AD, and the AEAD under the record key.
        let ad: Vec<u8> = [&id.0[..], encoding.get(..66).ok_or("short record")?].concat();
        let opened = cipher
            .decrypt(
                &XNonce::from(r.nonce),
                Payload {
                    msg: &r.ciphertext,
                    aad: &ad,
                },
            )
            .map_err(|_| format!("record {i} does not open under the derived record key"))?;
        if opened != plaintext || draws != [hex::encode(r.nonce)] {
            return Err(format!("record {i}: plaintext or nonce draw differs").into());
        }
        let hash = sha256(&[labels::TRANSCRIPT_RECORD_HASH, &id.0, &encoding]);
        if hash != r.hash(&id) || hash != writer.head() {
            return Err(format!("record {i}: hash differs from the chain hash formula").into());
        }
        let mut entry = serde_json::Map::new();
        let mut put = |k: &str, v: Value| entry.insert(k.to_owned(), v);
        put("sequence", json!(r.sequence));
        put("draws", json!(draws));
        put(
            "direction",
            json!(match record.direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            }),
        );
        put("sender", json!(record.sender.to_string()));
        put("message_id", json!(hex::encode(record.message_id)));
        put("sent_at_ms", json!(record.sent_at_ms));
        put("received_at_ms", json!(record.received_at_ms));
        put(
            "content_type",
            json!(content_type_byte(record.content_type)),
        );
        put("content_len", json!(record.content.len()));
        put(
            "content_sha256",
            json!(hex::encode(sha256(&[&record.content]))),
        );
        if record.content_type == ContentType::Text {
            put(
                "content_text",
                json!(String::from_utf8_lossy(&record.content)),
            );
        }
        put("plaintext", json!(hex::encode(&plaintext)));
        put("previous_hash", json!(hex::encode(r.previous_hash)));
        put("nonce", json!(hex::encode(r.nonce)));
        put("associated_data", json!(hex::encode(&ad)));
        put("sealed", json!(hex::encode(&encoding)));
        put("hash", json!(hex::encode(hash)));
        records_json.push(Value::Object(entry));
        if let Some(c) = appended.checkpoint {
            checkpoints.push(c);
            made_after.push(format!("interval: after record {i}"));
        }
        sealed.push(r);
    }
    checkpoints.push(writer.close(device, CLOSED_AT_MS));
    made_after.push("close".to_owned());
    if !rng.take().is_empty() {
        return Err("signing a checkpoint drew from the RNG".into());
    }
    let mut checkpoints_json = Vec::new();
    for (c, made) in checkpoints.iter().zip(&made_after) {
        let message = TranscriptCheckpoint::signed_message(
            &c.transcript,
            c.count,
            &c.head_hash,
            c.time_ms,
            c.closed,
        );
        if !c.verify(&signing_key) {
            return Err("a checkpoint does not verify under alice's signing key".into());
        }
        checkpoints_json.push(json!({
            "made": made,
            "count": c.count,
            "head_hash": hex::encode(c.head_hash),
            "time_ms": c.time_ms,
            "closed": c.closed,
            "signed_message": hex::encode(&message),
            "signature": hex::encode(c.signature),
            "encoded": hex::encode(c.to_bytes()),
        }));
    }

    let verification = transcript_verification(alice, &writer, &sealed, &checkpoints)?;
    let export = transcript_export(alice, &writer, &sealed, &checkpoints, &mut rng)?;

    Ok(json!({
        "description": "Alice's sealed transcript of her conversation with Bob (docs/transcripts.md): five records, a checkpoint every 2 records, then closed; verified as stored and under tampering; exported to one auditor key. The RNG is a ChaCha20 RNG seeded with TRANSCRIPT_SEED; `draws` are its outputs in order: TranscriptWriter::new draws the transcript id (16) then the transcript key (32); each append draws its record's nonce (24); checkpoints draw nothing (Ed25519 signing is deterministic); then AuditorKey::generate draws the auditor's X25519 secret (32) and ExportWriter::new the file key (32) then one ephemeral X25519 secret (32) per recipient. The signer is Alice's identity from keys.json (Ed25519 seed = keys.json alice.draws[0]). The record key is one key per transcript, the same for every record. Record contents are given by `content_sha256` (and `content_text` for text records); the full content is inside `plaintext`. Record 2 is 65 536 bytes (the content limit), so the export's body is two chunks.",
        "signer": {
            "identity_key": hex::encode(alice.identity_key().to_bytes()),
            "signing_key": hex::encode(signing_key.as_bytes()),
            "fingerprint": alice.identity_key().fingerprint().to_string(),
        },
        "checkpoint_interval": CHECKPOINT_INTERVAL,
        "draws": writer_draws,
        "transcript_id": hex::encode(id.0),
        "transcript_key": hex::encode(*key),
        "record_key": hex::encode(record_key),
        "genesis_hash": hex::encode(genesis),
        "records": records_json,
        "checkpoints": checkpoints_json,
        "verification": verification,
        "export": export,
    }))
}

/// The verifier's verdict on the transcript as stored and on tampered copies of it.
fn transcript_verification(
    alice: &Account,
    writer: &TranscriptWriter,
    sealed: &[SealedRecord],
    checkpoints: &[TranscriptCheckpoint],
) -> Result<Value, Error> {
    use Given as G;
    use Stored as S;
    let record = |i: usize| sealed.get(i).cloned().ok_or("no such record");
    let checkpoint = |i: usize| checkpoints.get(i).cloned().ok_or("no such checkpoint");

    let mut flipped = record(1)?;
    if let Some(b) = flipped.ciphertext.get_mut(3) {
        *b ^= 0x04;
    }
    let mut forged = record(3)?;
    if let Some(b) = forged.nonce.first_mut() {
        *b ^= 0xff;
    }
    let mut bad_signature = checkpoint(0)?;
    if let Some(b) = bad_signature.signature.get_mut(10) {
        *b ^= 0x01;
    }
    // A checkpoint the device key signed over another history: count 4 with record 2's hash.
    let other_head = record(2)?.hash(&writer.id());
    let message =
        TranscriptCheckpoint::signed_message(&writer.id(), 4, &other_head, CLOSED_AT_MS, false);
    let resigned = TranscriptCheckpoint {
        transcript: writer.id(),
        count: 4,
        head_hash: other_head,
        time_ms: CLOSED_AT_MS,
        closed: false,
        signature: alice
            .identity()
            .sign(labels::SIG_TRANSCRIPT_CHECKPOINT, &message),
    };

    let all = || (0..sealed.len()).map(S::Published).collect::<Vec<_>>();
    let all_checkpoints = || (0..checkpoints.len()).map(G::Published).collect::<Vec<_>>();
    let cases = vec![
        Case {
            name: "as stored",
            records: all(),
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "one bit of record 1's ciphertext flipped (byte 3, 0x04)",
            records: vec![
                S::Published(0),
                S::Bytes(flipped),
                S::Published(2),
                S::Published(3),
                S::Published(4),
            ],
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "record 2 removed",
            records: [0, 1, 3, 4].map(S::Published).into(),
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "records 1 and 3 swapped",
            records: [0, 3, 2, 1, 4].map(S::Published).into(),
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "record 0 stored twice",
            records: [0, 0, 1, 2, 3, 4].map(S::Published).into(),
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "a forged record (record 3 with its first nonce byte inverted) inserted before record 3",
            records: vec![
                S::Published(0),
                S::Published(1),
                S::Published(2),
                S::Bytes(forged),
                S::Published(3),
                S::Published(4),
            ],
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "record 4 cut off",
            records: [0, 1, 2, 3].map(S::Published).into(),
            checkpoints: all_checkpoints(),
        },
        Case {
            name: "checkpoint 0's signature altered (byte 10, 0x01)",
            records: all(),
            checkpoints: vec![G::Bytes(bad_signature), G::Published(1), G::Published(2)],
        },
        Case {
            name: "checkpoint at 4 replaced by one the device key signed over record 2's hash",
            records: all(),
            checkpoints: vec![G::Published(0), G::Bytes(resigned), G::Published(2)],
        },
        Case {
            name: "LIMITATION: record 4 and the closing checkpoint both withheld (undetectable)",
            records: [0, 1, 2, 3].map(S::Published).into(),
            checkpoints: vec![G::Published(0), G::Published(1)],
        },
        Case {
            name: "LIMITATION: no checkpoints given (every record is an unsigned tail)",
            records: all(),
            checkpoints: Vec::new(),
        },
    ];

    let mut out = Vec::new();
    for case in cases {
        let mut given = Vec::new();
        let mut given_json = Vec::new();
        for g in &case.checkpoints {
            match g {
                G::Published(i) => {
                    given.push(checkpoint(*i)?);
                    given_json.push(json!(i));
                }
                G::Bytes(c) => {
                    given.push(c.clone());
                    given_json.push(json!({"encoded": hex::encode(c.to_bytes())}));
                }
            }
        }
        let mut v = TranscriptVerifier::new(
            writer.id(),
            writer.key().clone(),
            *alice.identity_key().signing_key(),
            given,
        );
        let mut stored_json = Vec::new();
        for s in &case.records {
            match s {
                S::Published(i) => {
                    v.push(&record(*i)?);
                    stored_json.push(json!(i));
                }
                S::Bytes(r) => {
                    v.push(r);
                    stored_json.push(json!({"sealed": hex::encode(r.to_bytes())}));
                }
            }
        }
        let verdict = match v.finish() {
            Ok(report) => json!({"ok": report_json(&report)}),
            Err(fault) => json!({"fault": fault_json(fault)}),
        };
        out.push(json!({
            "name": case.name,
            "records": stored_json,
            "checkpoints": given_json,
            "verdict": verdict,
        }));
    }
    Ok(json!({
        "description": "TranscriptVerifier over stored records and given checkpoints. A number names a published record or checkpoint of this file by index; an object gives other bytes. `verdict` is the report or the first fault (docs/transcripts.md §5).",
        "cases": out,
    }))
}

/// 12-byte STREAM nonce of chunk `index`: `index[8] ‖ 0x00 0x00 0x00 ‖ last[1]`.
fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    for (n, b) in nonce.iter_mut().zip(index.to_be_bytes()) {
        *n = b;
    }
    if let Some(flag) = nonce.last_mut() {
        *flag = u8::from(last);
    }
    nonce
}

fn transcript_export(
    alice: &Account,
    writer: &TranscriptWriter,
    sealed: &[SealedRecord],
    checkpoints: &[TranscriptCheckpoint],
    rng: &mut RecordingRng,
) -> Result<Value, Error> {
    let auditor = AuditorKey::generate(rng);
    let auditor_draws = rng.take();
    let auditor_secret = auditor.to_secret_bytes();
    if auditor_draws != [hex::encode(*auditor_secret)] {
        return Err("the auditor's secret is not its draw".into());
    }
    let (mut export, header) =
        ExportWriter::new(&[*auditor.public()], rng).ok_or("export refused its recipient")?;
    let export_draws = rng.take();
    let manifest = TranscriptManifest {
        id: writer.id(),
        signer: alice.identity_key().clone(),
        key: writer.key().clone(),
        record_count: sealed.len() as u64,
    };
    let mut bytes = header.clone();
    bytes.extend(export.begin_transcript(&manifest, checkpoints));
    for r in sealed {
        bytes.extend(export.record(r));
    }
    bytes.extend(export.end_transcript());
    bytes.extend(export.finish(alice.identity()));

    // Recompute the key wrap and the payload key from the draws.
    let [file_key, ephemeral_secret] = export_draws
        .iter()
        .map(|d| -> Result<[u8; 32], Error> {
            hex::decode(d)?
                .try_into()
                .map_err(|_| "draw is not 32 bytes".into())
        })
        .collect::<Result<Vec<_>, _>>()?
        .try_into()
        .map_err(|_| "ExportWriter::new made other than two draws")?;
    let ephemeral = x25519_dalek::StaticSecret::from(ephemeral_secret);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let auditor_public = *auditor.public().as_bytes();
    let shared = ephemeral
        .diffie_hellman(&x25519_dalek::PublicKey::from(auditor_public))
        .to_bytes();
    let auditor_shared = x25519_dalek::StaticSecret::from(*auditor_secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral_public))
        .to_bytes();
    if shared != auditor_shared {
        return Err("X25519 disagrees between the two sides".into());
    }
    let wrap = export_wrap(&file_key, &ephemeral_public, &auditor_public, &shared)?;
    let expected_header = [
        &[hushwire::transcript::EXPORT_VERSION, 0x60, 1][..],
        &auditor_public,
        &ephemeral_public,
        &wrap.wrapped,
    ]
    .concat();
    if expected_header != header {
        return Err("the export header differs from its recomputation".into());
    }
    let header_hash = sha256(&[&header]);
    let payload_key = hkdf32(&header_hash, &file_key, labels::KDF_EXPORT_PAYLOAD)?;

    // Open the body chunk by chunk with the recomputed payload key.
    let payload = ChaCha20Poly1305::new(&payload_key.into());
    let mut rest = bytes.get(header.len()..).ok_or("no body")?;
    let mut offset = header.len();
    let mut stream = Vec::new();
    let mut chunks = Vec::new();
    let mut index = 0u64;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(4).ok_or("chunk length cut")?;
        let len = u32::from_be_bytes(len.try_into()?) as usize;
        let (sealed_chunk, tail) = tail.split_at_checked(len).ok_or("chunk cut")?;
        let last = tail.is_empty();
        let nonce = chunk_nonce(index, last);
        let plain = payload
            .decrypt(&nonce.into(), sealed_chunk)
            .map_err(|_| format!("chunk {index} does not open"))?;
        chunks.push(json!({
            "index": index,
            "last": last,
            "offset": offset,
            "sealed_len": len,
            "plaintext_len": plain.len(),
            "nonce": hex::encode(nonce),
        }));
        stream.extend_from_slice(&plain);
        offset += 4 + len;
        rest = tail;
        index += 1;
    }

    // Parse the items and name each body by what it is.
    let encodings: Vec<Vec<u8>> = sealed.iter().map(Codec::to_bytes).collect();
    let checkpoint_encodings: Vec<Vec<u8>> = checkpoints.iter().map(Codec::to_bytes).collect();
    let mut items = Vec::new();
    let mut at = 0usize;
    while at < stream.len() {
        let tag = *stream.get(at).ok_or("item cut")?;
        let len = u32::from_be_bytes(stream.get(at + 1..at + 5).ok_or("item cut")?.try_into()?);
        let body = stream
            .get(at + 5..at + 5 + len as usize)
            .ok_or("item body cut")?;
        let mut item = json!({"offset": at, "tag": tag, "length": len});
        let o = item.as_object_mut().ok_or("not an object")?;
        match tag {
            0x01 => {
                o.insert("kind".into(), json!("transcript start"));
                o.insert("body".into(), json!(hex::encode(body)));
            }
            0x02 => {
                let k = checkpoint_encodings.iter().position(|e| e == body);
                o.insert("kind".into(), json!("checkpoint"));
                o.insert("checkpoint".into(), json!(k.ok_or("unknown checkpoint")?));
            }
            0x03 => {
                let k = encodings.iter().position(|e| e == body);
                o.insert("kind".into(), json!("record"));
                o.insert("record".into(), json!(k.ok_or("unknown record")?));
            }
            0x04 => {
                o.insert("kind".into(), json!("transcript end"));
                o.insert("body".into(), json!(hex::encode(body)));
            }
            0xff => {
                o.insert("kind".into(), json!("export end"));
                o.insert("body".into(), json!(hex::encode(body)));
            }
            _ => return Err("unknown item tag".into()),
        }
        items.push(item);
        at += 5 + len as usize;
    }

    let signature = export_signature(alice, writer, sealed, &header, &stream)?;

    // The core's reader must agree.
    let mut reader = ExportReader::new(&auditor);
    let mut read = 0usize;
    for item in reader.feed(&bytes)? {
        read += 1;
        match item {
            ExportItem::TranscriptStart(m) => {
                if m.id != writer.id() || m.record_count != sealed.len() as u64 {
                    return Err("manifest differs".into());
                }
            }
            ExportItem::Checkpoint(c) => {
                if !checkpoints.contains(&c) {
                    return Err("unknown checkpoint read back".into());
                }
            }
            ExportItem::Record(r) => {
                if !sealed.contains(&r) {
                    return Err("unknown record read back".into());
                }
            }
            ExportItem::TranscriptEnd => {}
        }
    }
    if reader.finish()? != *alice.identity_key() {
        return Err("the reader names another exporter".into());
    }
    if read + 1 != items.len() {
        return Err("the reader returned another number of items".into());
    }

    Ok(json!({
        "description": "The transcript exported to one auditor key, export format version 2 (docs/transcripts.md §6): ExportWriter::new, begin_transcript with all three checkpoints, the five records in order, end_transcript, finish signed by Alice's identity. `file_key` and `ephemeral_secret` are the two draws of ExportWriter::new. `wrap_okm` is HKDF(salt = ephemeral_public || recipient, ikm = shared_secret, KDF_EXPORT_WRAP, 44): `wrap_key` its first 32 bytes, `wrap_nonce` its last 12; `wrap_ad` the wrap's associated data (recipient || header[0..3] || each entry's recipient || ephemeral key). `chunks` gives each body chunk's position in `bytes`, its nonce and lengths (every chunk but the last carries exactly 65 536 plaintext bytes); `items` gives each item's offset in the decrypted plaintext stream, its tag and length, and which published checkpoint or record its body is (the transcript start, transcript end and export end bodies in full). `signature` is the exporter's signature (§6.6): each transcript's state entry, their SHA-256, the 72-byte signed message and the Ed25519 signature under SIG_TRANSCRIPT_EXPORT.",
        "auditor": {
            "draws": auditor_draws,
            "secret": hex::encode(*auditor_secret),
            "public": hex::encode(auditor_public),
        },
        "draws": export_draws,
        "file_key": hex::encode(file_key),
        "ephemeral_secret": hex::encode(ephemeral_secret),
        "ephemeral_public": hex::encode(ephemeral_public),
        "shared_secret": hex::encode(shared),
        "wrap_okm": hex::encode(wrap.okm),
        "wrap_key": hex::encode(wrap.okm.get(..32).unwrap_or_default()),
        "wrap_nonce": hex::encode(wrap.okm.get(32..).unwrap_or_default()),
        "wrap_ad": hex::encode(&wrap.ad),
        "wrapped_file_key": hex::encode(&wrap.wrapped),
        "header": hex::encode(&header),
        "header_sha256": hex::encode(header_hash),
        "payload_key": hex::encode(payload_key),
        "chunk_len": CHUNK_LEN,
        "chunks": chunks,
        "items": items,
        "signature": signature,
        "bytes": hex::encode(&bytes),
    }))
}

/// The export key wrap of §6.2, recomputed from its inputs.
struct Wrap {
    okm: [u8; 44],
    ad: Vec<u8>,
    wrapped: Vec<u8>,
}

/// `okm = HKDF(salt = E ‖ R, ikm = shared, KDF_EXPORT_WRAP, 44)`, key = okm[..32], nonce =
/// okm[32..]; AD = `R ‖ header[0..3] ‖ R ‖ E` for the one recipient (§6.2).
fn export_wrap(
    file_key: &[u8; 32],
    ephemeral_public: &[u8; 32],
    recipient: &[u8; 32],
    shared: &[u8; 32],
) -> Result<Wrap, Error> {
    let salt = [&ephemeral_public[..], &recipient[..]].concat();
    let mut okm = [0u8; 44];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(labels::KDF_EXPORT_WRAP, &mut okm)
        .map_err(|_| "HKDF expand failed")?;
    let (key, nonce) = okm.split_at(32);
    let ad = [
        &recipient[..],
        &[hushwire::transcript::EXPORT_VERSION, 0x60, 1],
        &recipient[..],
        &ephemeral_public[..],
    ]
    .concat();
    let key: [u8; 32] = key.try_into()?;
    let nonce: [u8; 12] = nonce.try_into()?;
    let wrapped = ChaCha20Poly1305::new(&key.into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: file_key,
                aad: &ad,
            },
        )
        .map_err(|_| "wrap failed")?;
    Ok(Wrap { okm, ad, wrapped })
}

/// The exporter's signature of §6.6, recomputed from the records and checked against the
/// transcript-end and export-end items of the decrypted `stream`.
fn export_signature(
    alice: &Account,
    writer: &TranscriptWriter,
    sealed: &[SealedRecord],
    header: &[u8],
    stream: &[u8],
) -> Result<Value, Error> {
    let id = writer.id();
    let head = sealed
        .last()
        .map_or_else(|| hushwire::transcript::genesis_hash(&id), |r| r.hash(&id));
    let count = sealed.len() as u64;
    let fingerprint = alice.identity_key().fingerprint();
    let state = [&id.0[..], &fingerprint.0, &count.to_be_bytes(), &head].concat();
    let states_hash = sha256(&[&state]);
    let message = [&sha256(&[header])[..], &1u64.to_be_bytes(), &states_hash].concat();
    let signature = alice
        .identity()
        .sign(labels::SIG_TRANSCRIPT_EXPORT, &message);
    let transcript_end = [&count.to_be_bytes()[..], &head].concat();
    let export_end = [&alice.identity_key().to_bytes()[..], &signature].concat();
    let framed = |tag: u8, body: &[u8]| {
        let mut item = vec![tag];
        item.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        item.extend_from_slice(body);
        item
    };
    let tail = [framed(0x04, &transcript_end), framed(0xff, &export_end)].concat();
    if !stream.ends_with(&tail) {
        return Err(
            "the transcript end and export end items differ from their recomputation".into(),
        );
    }
    Ok(json!({
        "exporter": hex::encode(alice.identity_key().to_bytes()),
        "exporter_fingerprint": fingerprint.to_string(),
        "record_count": count,
        "head_hash": hex::encode(head),
        "state_entries": [hex::encode(&state)],
        "states_hash": hex::encode(states_hash),
        "signed_message": hex::encode(&message),
        "signature": hex::encode(signature),
        "transcript_end_body": hex::encode(&transcript_end),
        "export_end_body": hex::encode(&export_end),
    }))
}

// ---------------------------------------------------------------------------------------------
// audit.json

/// Six metadata events of a relay, with checkpoints after records 3 and 6. Everything is fixed
/// (chain id, times, the signer's Ed25519 secret), and Ed25519 is deterministic, so nothing is
/// drawn from an RNG.
fn audit_chain() -> Result<Value, Error> {
    use hushwire::proto::Fingerprint;
    use hushwire::proto::audit::{
        self, AuditChain, AuditEvent, AuthFailure, DeviceRef, EnvelopeId,
    };

    let chain_id = [0x11u8; 16];
    let signer_secret = [0x44u8; 32];
    let signer = ed25519_dalek::SigningKey::from_bytes(&signer_secret);
    let alice = DeviceRef {
        fingerprint: Fingerprint([0xa1; 32]),
        device_id: 1,
    };
    let bob = DeviceRef {
        fingerprint: Fingerprint([0xb0; 32]),
        device_id: 2,
    };
    let envelope = EnvelopeId([0xe1; 16]);
    let events = [
        AuditEvent::DeviceRegistered { device: alice },
        AuditEvent::AuthenticationFailed {
            reason: AuthFailure::BadSignature,
        },
        AuditEvent::BundleFetched {
            requester: alice,
            target: bob,
            one_time_left: 9,
        },
        AuditEvent::EnvelopeStored {
            sender: alice,
            recipient: bob,
            envelope,
            size: 1849,
        },
        AuditEvent::EnvelopeDelivered {
            recipient: bob,
            envelope,
        },
        AuditEvent::EnvelopeAcknowledged {
            recipient: bob,
            envelope,
        },
    ];
    let mut chain = AuditChain::new(chain_id);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut time_ms = 1_700_000_000_000u64;
    let mut hashes = Vec::new();
    for event in events {
        time_ms += 250;
        let record = chain.append(time_ms, event);
        hashes.push(hex::encode(record.hash()));
        records.push(record);
        if chain.len().is_multiple_of(3) {
            checkpoints.push(chain.checkpoint(&signer, time_ms + 1));
        }
    }
    let report = audit::verify(chain_id, &signer.verifying_key(), &records, &checkpoints)
        .map_err(|e| format!("the published audit chain does not verify: {e}"))?;
    Ok(json!({
        "description": "A relay's audit chain of six metadata events (docs/audit.md). genesis_hash = SHA-256(\"Hushwire v1 audit genesis\" || chain_id); each record's hash = SHA-256(\"Hushwire v1 audit record\" || encoded record), and each record carries the previous hash at bytes 18..50. Records are numbered from 0 (their sequence field). The checkpoints at counts 3 and 6 (after records 2 and 5) are Ed25519 signatures by signer_secret over \"Hushwire v1 audit checkpoint\" || chain_id || count || head_hash || time_ms.",
        "chain_id": hex::encode(chain_id),
        "signer_secret": hex::encode(signer_secret),
        "signer_public": hex::encode(signer.verifying_key().as_bytes()),
        "genesis_hash": hex::encode(audit::genesis_hash(&chain_id)),
        "records": records.iter().zip(&hashes).map(|(r, h)| json!({
            "sequence": r.sequence,
            "time_ms": r.time_ms,
            "encoded": hex::encode(r.to_bytes()),
            "hash": h,
        })).collect::<Vec<_>>(),
        "checkpoints": checkpoints.iter().map(|c| json!({
            "count": c.count,
            "time_ms": c.time_ms,
            "head_hash": hex::encode(c.head_hash),
            "encoded": hex::encode(c.to_bytes()),
        })).collect::<Vec<_>>(),
        "verdict": { "records": report.records, "checkpoints": report.checkpoints, "unsigned_tail": report.unsigned_tail },
        "verification": audit_cases::verification(chain_id, &signer, &records, &checkpoints)?,
    }))
}
