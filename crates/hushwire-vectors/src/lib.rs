//! Hushwire's test vectors, generated from a fixed seed.
//!
//! Every secret the core draws from its RNG is printed, in draw order, so an independent
//! implementation can check the vectors without reproducing the RNG: take the drawn bytes as
//! given, and recompute every derived value from `docs/protocol.md`.

use std::convert::Infallible;
use std::path::PathBuf;

use hushwire::proto::{Codec, PreKeyBundle, SafetyNumber};
use hushwire::wire::Message;
use hushwire::{Account, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng as _, TryCryptoRng, TryRng};
use serde_json::{Value, json};

/// Alice's RNG seed: the 32 ASCII bytes `Hushwire test vectors seed v1...`; Bob's is the same
/// with the last byte `b`.
pub const SEED: [u8; 32] = *b"Hushwire test vectors seed v1...";

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
        "description": "Identity and prekey generation. `draws` are the RNG outputs each step consumed, in order: Account::new draws the Ed25519 identity seed (32), the X25519 identity secret (32), the signed prekey secret (32), the last-resort ML-KEM-1024 seed d||z (64). Ed25519 signatures are deterministic (RFC 8032).",
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
    let handshake = json!({
        "description": "Alice starts a session from bob_bundle (keys.json). Session::initiate draws EK_A's secret (32), the ML-KEM encapsulation message m (32, FIPS 203 ML-KEM.Encaps_internal), then Alice's first ratchet secret (32). Bob's Account::accept draws his first ratchet secret (32).",
        "bundle": hex::encode(bundle.to_bytes()),
        "initiator_draws": initiate_draws,
        "base_key": hex::encode(prekey_message.base_key.as_bytes()),
        "dh1": hex::encode(trace.dh1),
        "dh2": hex::encode(trace.dh2),
        "dh3": hex::encode(trace.dh3),
        "dh4": trace.dh4.map(hex::encode),
        "kem_ciphertext": hex::encode(prekey_message.kem_ciphertext.as_slice()),
        "kem_shared_secret": hex::encode(trace.kem_shared_secret),
        "shared_secret": hex::encode(trace.shared_secret),
        "associated_data": hex::encode(associated_data(&alice, &bob)),
        "first_message": {
            "plaintext": String::from_utf8_lossy(&inbound.plaintext),
            "sending_chain_key": hex::encode(first_trace.chain_key),
            "root_key": hex::encode(first_trace.root_key),
            "message_key": hex::encode(first_trace.message_key),
            "aead_key": hex::encode(first_trace.aead_key),
            "nonce": hex::encode(first_trace.nonce),
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
    let sealed_session = json!({
        "description": "Alice's session at the end of conversation.json, sealed under storage_key. The draw is the 24-byte XChaCha20-Poly1305 nonce. The contents are a postcard encoding private to this implementation; what is specified is the envelope (docs/protocol.md §7). `next_message` is what the unsealed session encrypts next for the plaintext given, identical to the original's.",
        "storage_key": hex::encode(storage_key),
        "draws": seal_draws,
        "sealed": hex::encode(&sealed),
        "next_plaintext": "sent after reload",
        "next_message": hex::encode(&after),
    });

    Ok(vec![
        ("keys.json", pretty(&keys)?),
        ("handshake.json", pretty(&handshake)?),
        ("conversation.json", pretty(&conversation)?),
        ("sealed_session.json", pretty(&sealed_session)?),
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
                let header = match Message::from_bytes(&wire)? {
                    Message::Ratchet(m) => m.header,
                    Message::PreKey(p) => p.message.header,
                };
                let entry = json!({
                    "number": n,
                    "sender": if from_alice { "alice" } else { "bob" },
                    "plaintext": plaintext,
                    "ratchet_key": hex::encode(header.ratchet_key.as_bytes()),
                    "previous_chain_length": header.previous_chain_length,
                    "index": header.index,
                    "chain_key": hex::encode(trace.chain_key),
                    "message_key": hex::encode(trace.message_key),
                    "aead_key": hex::encode(trace.aead_key),
                    "nonce": hex::encode(trace.nonce),
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
        "description": "30 messages after the handshake of handshake.json (which holds message 0 of the session; numbers here start again at 0). `messages` lists them in sending order with the sender's secrets; `deliveries` lists them in delivery order, with the receiver's RNG draws (a new ratchet secret at each DH ratchet step) and the gaps it reports afterwards. AD for each message = handshake.associated_data || the 42 header bytes at the start of the ratchet message (inside a prekey message for Alice's messages before Bob's first reply).",
        "messages": messages.iter().map(|(_, _, _, e)| e.clone()).collect::<Vec<_>>(),
        "deliveries": deliveries,
    }))
}

/// Parses a bundle the vectors published; used by the test to check they are self-consistent.
pub fn parse_bundle(hex_bytes: &str) -> Result<PreKeyBundle, Error> {
    Ok(PreKeyBundle::from_bytes(&hex::decode(hex_bytes)?)?)
}
