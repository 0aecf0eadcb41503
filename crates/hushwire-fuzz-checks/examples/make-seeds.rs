//! Writes the fuzz seeds, `fuzz/seeds/<target>/` (or `<dir>/<target>/` given as the only
//! argument): inputs taken from the committed test vectors (`vector-*`), and inputs made here
//! from the fixtures every target runs with (`made-*`), so that seeds reach past signature and
//! AEAD checks into what lies behind them. Files of other names (regression seeds from
//! crashes) are left alone.
//!
//! `cargo run -p hushwire-fuzz-checks --example make-seeds`
//!
//! Each seed that should be valid is checked to be so before it is written, so a change in
//! the core that made the seeds shallow fails here rather than silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::error::Error;
use std::path::{Path, PathBuf};

use hushwire::proto::audit::{
    AuditChain, AuditEvent, AuthFailure, ConversationId, DeviceRef, EnvelopeId,
    TranscriptId as AuditTranscriptId, verify,
};
use hushwire::proto::relay::{
    Challenge, Credentials, Delivery, DeviceAddress, ErrorCode, Frame, FrameBody, OutgoingEnvelope,
    Receipt,
};
use hushwire::proto::{
    Codec, Fingerprint, IdentityKey, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey,
    Signer as _,
};
use hushwire::transcript::{
    ExportItem, ExportReader, ExportWriter, SealedRecord, TranscriptCheckpoint, TranscriptId,
    TranscriptKey, TranscriptManifest, TranscriptVerifier, TranscriptWriter,
};
use hushwire::{Account, IdentityKeyPair, StorageKey};
use hushwire_client::MessageId;
use hushwire_client::payload::Payload;
use hushwire_fuzz_checks::TARGETS;
use hushwire_fuzz_checks::conversation::Step;
use hushwire_fuzz_checks::fixtures::{
    AUDIT_CHAIN_ID, UNSEAL_KEY, audit_signer, auditor_key, pair, relay_challenge, relay_signer,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use serde_json::Value;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Seeds above this size are refused, except the one full export.
const MAX_SEED_LEN: usize = 4 * 1024;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| root.join("fuzz/seeds"), PathBuf::from);
    let vectors = Vectors::load(&root.join("docs/vectors"))?;
    for (target, _) in TARGETS {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("vector-") || name.starts_with("made-") {
                std::fs::remove_file(&path)?;
            }
        }
    }
    let mut seeds = Seeds { out, count: 0 };
    decode_message(&mut seeds, &vectors)?;
    decode_bundle(&mut seeds, &vectors)?;
    relay_frame(&mut seeds, &vectors)?;
    audit_record(&mut seeds, &vectors)?;
    transcript_record(&mut seeds, &vectors)?;
    export_reader(&mut seeds, &vectors)?;
    session_decrypt(&mut seeds, &vectors)?;
    unseal(&mut seeds, &vectors)?;
    conversation(&mut seeds)?;
    client_payload(&mut seeds, &vectors)?;
    clinic_structures(&mut seeds, &vectors)?;
    conversation_structures(&mut seeds, &vectors)?;
    conversation_members(&mut seeds)?;
    println!("wrote {} seeds under {}", seeds.count, seeds.out.display());
    Ok(())
}

/// Where the seeds go.
struct Seeds {
    out: PathBuf,
    count: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_sized(target, name, bytes, MAX_SEED_LEN)
    }

    fn write_sized(&mut self, target: &str, name: &str, bytes: &[u8], max: usize) -> Result<()> {
        if !TARGETS.iter().any(|(t, _)| *t == target) {
            return Err(format!("no target {target}").into());
        }
        if bytes.len() > max {
            return Err(format!("seed {target}/{name} is {} bytes", bytes.len()).into());
        }
        std::fs::write(self.out.join(target).join(name), bytes)?;
        self.count += 1;
        Ok(())
    }
}

/// The parsed `docs/vectors/*.json`.
struct Vectors {
    keys: Value,
    handshake: Value,
    conversation: Value,
    sealed_session: Value,
    transcript: Value,
    audit: Value,
    payloads: Value,
    clinic: Value,
    membership: Value,
}

impl Vectors {
    fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Value> {
            Ok(serde_json::from_str(&std::fs::read_to_string(
                dir.join(name),
            )?)?)
        };
        Ok(Self {
            keys: read("keys.json")?,
            handshake: read("handshake.json")?,
            conversation: read("conversation.json")?,
            sealed_session: read("sealed_session.json")?,
            transcript: read("transcript.json")?,
            audit: read("audit.json")?,
            payloads: read("payloads.json")?,
            clinic: read("clinic.json")?,
            membership: read("conversation_membership.json")?,
        })
    }
}

/// The bytes of hex field `pointer` (a JSON pointer) of `json`.
fn hex_at(json: &Value, pointer: &str) -> Result<Vec<u8>> {
    let text = json
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no hex string at {pointer}"))?;
    Ok(hex::decode(text)?)
}

/// Decodes `<array>/<i><field>` as `T` for every element of the array at `array`.
fn decode_each<T: Codec>(json: &Value, array: &str, field: &str) -> Result<Vec<T>> {
    (0..array_len(json, array)?)
        .map(|i| {
            Ok(T::from_bytes(&hex_at(
                json,
                &format!("{array}/{i}{field}"),
            )?)?)
        })
        .collect()
}

fn array_len(json: &Value, pointer: &str) -> Result<usize> {
    Ok(json
        .pointer(pointer)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no array at {pointer}"))?
        .len())
}

fn decode_message(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "decode_message";
    seeds.write(
        t,
        "vector-handshake-first-message",
        &hex_at(&v.handshake, "/first_message/wire")?,
    )?;
    seeds.write(
        t,
        "vector-sealed-session-next-message",
        &hex_at(&v.sealed_session, "/next_message")?,
    )?;
    // Ratchet messages are ~100 bytes; a handful from different chains is plenty.
    let mut kept = 0;
    for i in 0..array_len(&v.conversation, "/messages")? {
        let wire = hex_at(&v.conversation, &format!("/messages/{i}/wire"))?;
        if wire.len() < 512 && kept < 6 && i % 3 == 0 {
            seeds.write(t, &format!("vector-conversation-{i:02}"), &wire)?;
            kept += 1;
        }
    }
    Ok(())
}

fn decode_bundle(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let bob = hex_at(&v.keys, "/bob_bundle")?;
    PreKeyBundle::from_bytes(&bob)?.verify()?;
    seeds.write("decode_bundle", "vector-bob-bundle", &bob)?;
    // Without a one-time prekey, and with the last-resort ML-KEM prekey.
    let account = Account::new(9, 0, &mut ChaCha20Rng::from_seed([0x0d; 32]));
    let bundle = account.prekey_bundle().ok_or("no bundle")?;
    bundle.verify()?;
    seeds.write(
        "decode_bundle",
        "made-bundle-without-one-time-prekey",
        &bundle.to_bytes(),
    )
}

fn relay_frame(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "relay_frame";
    let device = IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([0x0e; 32]));
    let credentials = Credentials::answer(device.public().clone(), 3, relay_challenge(), &device);
    if !credentials.verify(relay_challenge()) {
        return Err("made credentials do not verify".into());
    }
    let address = DeviceAddress {
        fingerprint: [0x42; 32],
        device_id: 7,
    };
    let small_message = hex_at(&v.sealed_session, "/next_message")?;
    let frames = [
        (
            "register",
            FrameBody::Register {
                credentials: credentials.clone(),
                invite: Some(b"clinic-invite".to_vec()),
                certificate: None,
            },
        ),
        ("authenticate", FrameBody::Authenticate(credentials)),
        (
            "upload-prekeys",
            FrameBody::UploadPreKeys {
                signed_prekey: Some(SignedPreKey::from_bytes(&hex_at(
                    &v.keys,
                    "/alice/signed_prekey/encoded",
                )?)?),
                last_resort_kem_prekey: None,
                one_time_prekeys: vec![OneTimePreKey::from_bytes(&hex_at(
                    &v.keys,
                    "/bob/one_time_prekey/encoded",
                )?)?],
                one_time_kem_prekeys: vec![KemPreKey::from_bytes(&hex_at(
                    &v.keys,
                    "/bob/one_time_kem_prekey/encoded",
                )?)?],
            },
        ),
        ("fetch-bundle", FrameBody::FetchBundle(address)),
        (
            "send",
            FrameBody::Send(vec![
                OutgoingEnvelope {
                    recipient: address,
                    payload: small_message.clone(),
                },
                OutgoingEnvelope {
                    recipient: DeviceAddress {
                        device_id: 8,
                        ..address
                    },
                    payload: small_message.clone(),
                },
            ]),
        ),
        ("ack", FrameBody::Ack(vec![[1; 16], [2; 16]])),
        (
            "challenge",
            // Signed, so the seed reaches past the client's signature check.
            FrameBody::Challenge(Challenge::new(
                [0x0c; 32],
                1_700_000_030_000,
                relay_signer(),
            )),
        ),
        ("ok", FrameBody::Ok),
        (
            "error-rate-limited",
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: 1500,
            },
        ),
        (
            "bundle",
            FrameBody::Bundle(PreKeyBundle::from_bytes(&hex_at(&v.keys, "/bob_bundle")?)?),
        ),
        (
            "sent",
            FrameBody::Sent(vec![Receipt {
                server_id: [3; 16],
                server_time_ms: 1_700_000_000_001,
            }]),
        ),
        (
            "deliver",
            FrameBody::Deliver(Delivery {
                server_id: [4; 16],
                sender: address,
                server_time_ms: 1_700_000_000_002,
                payload: small_message,
            }),
        ),
        (
            "prekey-count",
            FrameBody::PreKeyCount {
                one_time: 12,
                kem_one_time: 3,
            },
        ),
    ];
    for (i, (name, body)) in frames.into_iter().enumerate() {
        let bytes = Frame {
            request_id: u32::try_from(i)? + 1,
            body,
        }
        .to_bytes();
        Frame::from_bytes(&bytes)?;
        seeds.write(t, &format!("made-{name}"), &bytes)?;
    }
    Ok(())
}

fn audit_record(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "audit_record";
    let device = |n: u8| DeviceRef {
        fingerprint: Fingerprint([n; 32]),
        device_id: u32::from(n),
    };
    let transcript = AuditTranscriptId([0x77; 16]);
    let envelope = EnvelopeId([0x55; 16]);
    let events = [
        AuditEvent::DeviceRegistered { device: device(1) },
        AuditEvent::DeviceAuthenticated { device: device(1) },
        AuditEvent::AuthenticationFailed {
            reason: AuthFailure::ExpiredChallenge,
        },
        AuditEvent::RateLimited { device: device(2) },
        AuditEvent::PreKeysUploaded {
            device: device(1),
            one_time: 100,
            kem_one_time: 20,
        },
        AuditEvent::BundleFetched {
            requester: device(2),
            target: device(1),
            one_time_left: 99,
        },
        AuditEvent::EnvelopeStored {
            sender: device(2),
            recipient: device(1),
            envelope,
            size: 180,
        },
        AuditEvent::EnvelopeDelivered {
            recipient: device(1),
            envelope,
        },
        AuditEvent::EnvelopeAcknowledged {
            recipient: device(1),
            envelope,
        },
        AuditEvent::EnvelopesExpired {
            recipient: device(3),
            count: 4,
        },
        AuditEvent::SessionStarted {
            device: device(1),
            peer: device(2),
            conversation: ConversationId([0x66; 16]),
        },
        AuditEvent::IdentityChanged {
            device: device(1),
            peer: device(2),
        },
        AuditEvent::TranscriptCheckpointed {
            transcript,
            records: 8,
        },
        AuditEvent::TranscriptExported {
            transcript,
            records: 8,
            recipients: 1,
        },
        AuditEvent::TranscriptOpened {
            transcript,
            by: device(4),
        },
        AuditEvent::TranscriptShredded { transcript },
    ];
    let signer = audit_signer();
    let mut chain = AuditChain::new(AUDIT_CHAIN_ID);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    // The log as a verifier is fed it: each checkpoint right after the last record it covers.
    let mut log = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let record = chain.append(1_700_000_000_000 + u64::try_from(i)? * 1000, event);
        log.extend(record.to_bytes());
        records.push(record);
        if i % 5 == 4 {
            let checkpoint = chain.checkpoint(signer, 1_700_000_100_000 + u64::try_from(i)?);
            log.extend(checkpoint.to_bytes());
            checkpoints.push(checkpoint);
        }
    }
    verify(
        AUDIT_CHAIN_ID,
        &signer.verifying_key(),
        &records,
        &checkpoints,
    )?;
    seeds.write(t, "made-log", &log)?;
    // Record 6 moved after record 9: a reordered log, which the verifier must locate.
    let mut reordered = Vec::new();
    let mut moved = records.clone();
    let r6 = moved.remove(6);
    moved.insert(9, r6);
    for r in &moved {
        reordered.extend(r.to_bytes());
    }
    seeds.write(t, "made-log-reordered", &reordered)?;
    for (i, r) in records.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        seeds.write(t, &format!("made-record-{i:02}"), &r.to_bytes())?;
    }
    seeds.write(t, "made-checkpoint", &checkpoints[0].to_bytes())?;
    // The vectors' relay chain, each checkpoint after the last record it covers. It is another
    // chain than the target verifies, so it exercises the decoders and the chain-id check.
    let mut vector_log = Vec::new();
    let vector_checkpoints = (0..array_len(&v.audit, "/checkpoints")?)
        .map(|i| {
            let count = v
                .audit
                .pointer(&format!("/checkpoints/{i}/count"))
                .and_then(Value::as_u64);
            Ok((
                count.ok_or("checkpoint count")?,
                hex_at(&v.audit, &format!("/checkpoints/{i}/encoded"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for i in 0..array_len(&v.audit, "/records")? {
        vector_log.extend(hex_at(&v.audit, &format!("/records/{i}/encoded"))?);
        for (_, c) in vector_checkpoints
            .iter()
            .filter(|(count, _)| *count == i as u64 + 1)
        {
            vector_log.extend(c);
        }
    }
    seeds.write(t, "vector-audit-log", &vector_log)
}

fn transcript_record(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "transcript_record";
    for i in 0..array_len(&v.transcript, "/records")? {
        for field in ["sealed", "plaintext"] {
            let bytes = hex_at(&v.transcript, &format!("/records/{i}/{field}"))?;
            if bytes.len() <= 1024 {
                seeds.write(t, &format!("vector-record-{i}-{field}"), &bytes)?;
            }
        }
    }
    for i in 0..array_len(&v.transcript, "/checkpoints")? {
        let bytes = hex_at(&v.transcript, &format!("/checkpoints/{i}/encoded"))?;
        seeds.write(t, &format!("vector-checkpoint-{i}"), &bytes)?;
    }
    Ok(())
}

/// The vectors' transcript: its manifest (all records), checkpoints and sealed records.
fn vector_transcript(
    v: &Vectors,
) -> Result<(
    TranscriptManifest,
    Vec<TranscriptCheckpoint>,
    Vec<SealedRecord>,
)> {
    let records: Vec<SealedRecord> = decode_each(&v.transcript, "/records", "/sealed")?;
    let checkpoints: Vec<TranscriptCheckpoint> =
        decode_each(&v.transcript, "/checkpoints", "/encoded")?;
    let manifest = TranscriptManifest {
        id: TranscriptId(
            hex_at(&v.transcript, "/transcript_id")?
                .try_into()
                .map_err(|_| "id")?,
        ),
        signer: IdentityKey::from_bytes(&hex_at(&v.transcript, "/signer/identity_key")?)?,
        key: TranscriptKey::from_bytes(
            hex_at(&v.transcript, "/transcript_key")?
                .try_into()
                .map_err(|_| "key")?,
        ),
        record_count: records.len() as u64,
    };
    Ok((manifest, checkpoints, records))
}

/// An export to the fuzz targets' auditor key of `transcripts` (manifest, checkpoints,
/// records), read back and verified before it is returned.
fn export(
    transcripts: &[(
        &TranscriptManifest,
        &[TranscriptCheckpoint],
        &[SealedRecord],
    )],
) -> Result<Vec<u8>> {
    export_signed_by(transcripts, audit_signer())
}

/// [`export`], signed by `exporter`.
fn export_signed_by(
    transcripts: &[(
        &TranscriptManifest,
        &[TranscriptCheckpoint],
        &[SealedRecord],
    )],
    exporter: &IdentityKeyPair,
) -> Result<Vec<u8>> {
    let mut rng = ChaCha20Rng::from_seed([0x0f; 32]);
    let (mut writer, mut bytes) =
        ExportWriter::new(&[*auditor_key().public()], &mut rng).ok_or("export refused")?;
    for (manifest, checkpoints, records) in transcripts {
        let manifest = TranscriptManifest {
            id: manifest.id,
            signer: manifest.signer.clone(),
            key: TranscriptKey::from_bytes(*manifest.key.to_bytes()),
            record_count: records.len() as u64,
        };
        bytes.extend(writer.begin_transcript(&manifest, checkpoints));
        for r in *records {
            bytes.extend(writer.record(r));
        }
        bytes.extend(writer.end_transcript());
    }
    bytes.extend(writer.finish(exporter));

    let mut reader = ExportReader::new(auditor_key());
    let items = reader.feed(&bytes)?;
    if reader.finish()? != *exporter.public() {
        return Err("the export reads back signed by another identity".into());
    }
    let mut transcripts_read = 0;
    let mut current = None;
    for item in items {
        match item {
            ExportItem::TranscriptStart(m) => current = Some((m, Vec::new(), Vec::new())),
            ExportItem::Checkpoint(c) => current.as_mut().ok_or("item order")?.1.push(c),
            ExportItem::Record(r) => current.as_mut().ok_or("item order")?.2.push(r),
            ExportItem::TranscriptEnd => {
                let (m, checkpoints, records) = current.take().ok_or("item order")?;
                let m = *m;
                let mut verifier =
                    TranscriptVerifier::new(m.id, m.key, *m.signer.signing_key(), checkpoints);
                for r in &records {
                    verifier.push(r).ok_or("a record does not open")?;
                }
                verifier.finish()?;
                transcripts_read += 1;
            }
        }
    }
    if transcripts_read != transcripts.len() {
        return Err("the export did not read back whole".into());
    }
    Ok(bytes)
}

/// `split[2] ‖ export`: the export_reader target's input.
fn with_split(split: u16, export: &[u8]) -> Vec<u8> {
    let mut input = split.to_be_bytes().to_vec();
    input.extend_from_slice(export);
    input
}

fn export_reader(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "export_reader";
    let (manifest, checkpoints, records) = vector_transcript(v)?;
    // Records 0 and 1 under the vectors' first checkpoint (count 2): a small valid transcript.
    let first_two = checkpoints
        .iter()
        .filter(|c| c.count == 2 && !c.closed)
        .cloned()
        .collect::<Vec<_>>();
    let small = export(&[(&manifest, &first_two, &records[..2])])?;
    seeds.write(t, "made-export-two-records", &with_split(130, &small))?;
    let twice = export(&[
        (&manifest, &first_two, &records[..2]),
        (&manifest, &first_two[..0], &records[..1]),
    ])?;
    seeds.write(t, "made-export-two-transcripts", &with_split(7, &twice))?;
    // The whole transcript: record 2 holds 64 KiB, so the body spans two chunks. The one seed
    // allowed past the size limit.
    let full = export(&[(&manifest, &checkpoints, &records)])?;
    seeds.write_sized(
        t,
        "made-export-full",
        &with_split(40_000, &full),
        100 * 1024,
    )?;
    // The vectors' own export is sealed to another auditor: its header alone exercises the
    // recipient search.
    let header = hex_at(&v.transcript, "/export/header")?;
    seeds.write(t, "vector-export-header", &with_split(0, &header))?;
    // A version-1 header (the unsigned format, refused before anything else is read).
    let mut v1 = small.clone();
    if let Some(version) = v1.first_mut() {
        *version = 1;
    }
    seeds.write(t, "made-export-version-1", &with_split(3, &v1))?;
    // The small export signed by another identity than the fixtures' exporter.
    let other = IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([0x0c; 32]));
    let stranger = export_signed_by(&[(&manifest, &first_two, &records[..2])], &other)?;
    seeds.write(t, "made-export-other-exporter", &with_split(500, &stranger))
}

fn session_decrypt(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "session_decrypt";
    let fixture = pair();
    let mut rng = ChaCha20Rng::from_seed([0x10; 32]);
    let mut alice = fixture.alice.clone();
    let mut bob = fixture.bob.clone();
    // Alice still repeats the handshake: a second prekey message.
    let second = alice.encrypt(b"second, still a prekey message")?;
    // Bob's reply ends that; Alice's next messages start a new chain the fixed Bob can follow.
    let reply = bob.encrypt(b"reply")?;
    alice.decrypt(&reply, &mut rng)?;
    let after_reply = [
        alice.encrypt(b"after the reply, 0")?,
        alice.encrypt(b"after the reply, 1")?,
    ];
    for (name, message) in [
        ("made-alice-prekey-message", &second),
        ("made-alice-new-chain-0", &after_reply[0]),
        ("made-alice-new-chain-1", &after_reply[1]),
    ] {
        fixture.bob.clone().decrypt(message, &mut rng)?;
        seeds.write(t, name, message)?;
    }
    seeds.write(t, "made-first-message-replayed", &fixture.first)?;
    seeds.write(t, "made-bob-own-reply", &reply)?;
    seeds.write(
        t,
        "vector-conversation-00",
        &hex_at(&v.conversation, "/messages/0/wire")?,
    )
}

fn unseal(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "unseal";
    let key = StorageKey::from_bytes(UNSEAL_KEY);
    let mut rng = ChaCha20Rng::from_seed([0x12; 32]);
    let session = pair().bob.seal(&key, &mut rng);
    hushwire::Session::unseal(&session, &key)?;
    seeds.write(t, "made-session", &session)?;
    let account = Account::new(4, 0, &mut rng).seal(&key, &mut rng);
    Account::unseal(&account, &key)?;
    seeds.write(t, "made-account", &account)?;
    let writer = TranscriptWriter::new(2, &mut rng).seal(&key, &mut rng);
    TranscriptWriter::unseal(&writer, &key)?;
    seeds.write(t, "made-transcript-writer", &writer)?;
    // Sealed under the vectors' storage key, not the target's: refused at authentication.
    seeds.write(
        t,
        "vector-sealed-session",
        &hex_at(&v.sealed_session, "/sealed")?,
    )
}

fn conversation(seeds: &mut Seeds) -> Result<()> {
    use Step::*;
    let program = |steps: &[Step]| {
        let mut out = Vec::new();
        for s in steps {
            s.encode(&mut out);
        }
        out
    };
    let a = true;
    let b = false;
    let ping_pong = [
        Send { from_alice: a },
        Deliver {
            from_alice: a,
            pick: 0,
        },
        Send { from_alice: b },
        Deliver {
            from_alice: b,
            pick: 0,
        },
        Send { from_alice: a },
        Send { from_alice: a },
        Deliver {
            from_alice: a,
            pick: 1,
        },
        Deliver {
            from_alice: a,
            pick: 0,
        },
        Send { from_alice: b },
        Deliver {
            from_alice: b,
            pick: 0,
        },
    ];
    seeds.write("conversation", "made-ping-pong", &program(&ping_pong))?;
    let adversarial = [
        Send { from_alice: a },
        Send { from_alice: a },
        Send { from_alice: a },
        Tamper {
            from_alice: a,
            pick: 1,
            byte: 40,
            bit: 3,
        },
        Deliver {
            from_alice: a,
            pick: 2,
        },
        Duplicate {
            from_alice: a,
            pick: 1,
        },
        Reload { alice: false },
        Drop {
            from_alice: a,
            pick: 1,
        },
        Deliver {
            from_alice: a,
            pick: 0,
        },
        Send { from_alice: b },
        Send { from_alice: b },
        Deliver {
            from_alice: b,
            pick: 1,
        },
        Reload { alice: true },
        Tamper {
            from_alice: b,
            pick: 0,
            byte: 90,
            bit: 0,
        },
        Deliver {
            from_alice: b,
            pick: 0,
        },
        Duplicate {
            from_alice: b,
            pick: 0,
        },
        Send { from_alice: a },
        Deliver {
            from_alice: a,
            pick: 0,
        },
    ];
    seeds.write("conversation", "made-adversarial", &program(&adversarial))?;
    // A gap in each of seven of Alice's chains: more than Bob keeps, so keys are discarded.
    let mut many_chains = Vec::new();
    for round in 0..7 {
        many_chains.extend([
            Send { from_alice: a },
            Send { from_alice: a },
            // The newest: each earlier round left one message in flight.
            Deliver {
                from_alice: a,
                pick: round + 1,
            },
            Send { from_alice: b },
            Deliver {
                from_alice: b,
                pick: 0,
            },
        ]);
    }
    many_chains.extend([
        Deliver {
            from_alice: a,
            pick: 0,
        },
        Deliver {
            from_alice: a,
            pick: 0,
        },
        Deliver {
            from_alice: a,
            pick: 0,
        },
    ]);
    seeds.write(
        "conversation",
        "made-gaps-in-many-chains",
        &program(&many_chains),
    )?;
    // A long program of random steps: libFuzzer grows inputs only slowly from its longest
    // seed, and a stateful target needs long programs to get deep.
    let mut random = [0u8; 512];
    ChaCha20Rng::from_seed([0x13; 32]).fill_bytes(&mut random);
    seeds.write("conversation", "made-random-steps", &random)
}

/// Programs for the several-member conversation: the ordinary life of a support chat (every
/// member sends, every copy arrives), membership churn with a device that learns it late, the
/// adversarial network steps, forged messages from a supervisor and a removed agent, and a long
/// random program (libFuzzer lengthens inputs slowly; a stateful target needs long ones).
fn conversation_members(seeds: &mut Seeds) -> Result<()> {
    use hushwire_fuzz_checks::members::Step::{self, *};
    let t = "conversation_members";
    let program = |steps: &[Step]| {
        let mut out = Vec::new();
        for s in steps {
            s.encode(&mut out);
        }
        out
    };
    // A signer byte of 6 or more: the device a client would sign with.
    const AUTO: u8 = 0xff;
    let mut chat = Vec::new();
    for device in [0, 2, 1, 2] {
        chat.push(Send { device });
        // Two other member devices: each copy delivered, the newest first.
        chat.extend([Deliver { pick: 1 }, Deliver { pick: 0 }]);
    }
    seeds.write(t, "made-chat", &program(&chat))?;
    let churn = [
        Change {
            add: true,
            device: 4,
            signer: AUTO,
        },
        Change {
            add: true,
            device: 3,
            signer: AUTO,
        },
        Send { device: 4 },
        Lag { device: 1 },
        Change {
            add: false,
            device: 4,
            signer: AUTO,
        },
        Change {
            add: true,
            device: 5,
            signer: AUTO,
        },
        // Device 1 sends at a stale epoch: the copy for Ben is dropped, not sent.
        Send { device: 1 },
        Send { device: 5 },
        Deliver { pick: 0 },
        Deliver { pick: 4 },
        Deliver { pick: 2 },
        Sync { device: 1 },
        Send { device: 3 },
        Deliver { pick: 1 },
        Change {
            add: false,
            device: 5,
            signer: AUTO,
        },
        // Ben, removed, tries to remove Ada: refused (§4.3 rule 9, `SignerRemoved`).
        Change {
            add: false,
            device: 2,
            signer: 4,
        },
        Change {
            add: false,
            device: 1,
            signer: AUTO,
        },
        Send { device: 0 },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
    ];
    seeds.write(t, "made-membership-churn", &program(&churn))?;
    let adversarial = [
        Send { device: 0 },
        Send { device: 2 },
        Send { device: 0 },
        Tamper {
            pick: 1,
            byte: 40,
            bit: 3,
        },
        Deliver { pick: 4 },
        Duplicate { pick: 0 },
        Reload { device: 1 },
        Drop { pick: 1 },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
        Change {
            add: true,
            device: 5,
            signer: AUTO,
        },
        Forge {
            sender: 5,
            recipient: 0,
            epoch: 4,
        },
        Forge {
            sender: 4,
            recipient: 2,
            epoch: 4,
        },
        Forge {
            sender: 1,
            recipient: 2,
            epoch: 5,
        },
        Forge {
            sender: 1,
            recipient: 2,
            epoch: 0,
        },
        Deliver { pick: 1 },
        Deliver { pick: 1 },
        Deliver { pick: 1 },
        Deliver { pick: 1 },
        Deliver { pick: 1 },
        Duplicate { pick: 2 },
        Reload { device: 2 },
        Deliver { pick: 0 },
    ];
    seeds.write(t, "made-adversarial", &program(&adversarial))?;
    let mut random = [0u8; 700];
    ChaCha20Rng::from_seed([0x14; 32]).fill_bytes(&mut random);
    seeds.write(t, "made-random-steps", &random)
}

/// `name` as a file name: lower case, runs of anything but letters and digits made one `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn client_payload(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "client_payload";
    // Every published payload, valid and invalid: each kind, each reset reason, and each way
    // of being refused that the spec lists.
    for (list, valid) in [("valid", true), ("invalid", false)] {
        for i in 0..array_len(&v.payloads, &format!("/{list}"))? {
            let bytes = hex_at(&v.payloads, &format!("/{list}/{i}/encoded"))?;
            if Payload::decode(&bytes).is_ok() != valid {
                return Err(format!("payloads.json {list}/{i} changed validity").into());
            }
            let name = v
                .payloads
                .pointer(&format!("/{list}/{i}/name"))
                .and_then(Value::as_str)
                .ok_or("payload vector name")?;
            seeds.write(t, &format!("vector-{list}-{}", slug(name)), &bytes)?;
        }
    }
    // What the vectors do not show: a content type other than text, empty content, and a
    // receipt of more than two ids.
    let made = [
        (
            "made-message-other-type-empty",
            Payload::Message {
                id: MessageId([0x3c; 16]),
                sent_at_ms: u64::MAX,
                content_type: hushwire::transcript::ContentType::Other(0x2a),
                content: Default::default(),
            },
        ),
        (
            "made-message-binary",
            Payload::Message {
                id: MessageId([0x3d; 16]),
                sent_at_ms: 0,
                content_type: hushwire::transcript::ContentType::Binary,
                content: vec![0, 0xff, 0x80, 0x7f].into(),
            },
        ),
        (
            "made-receipt-five",
            Payload::Receipt((1..=5).map(|n| MessageId([n; 16])).collect()),
        ),
    ];
    for (name, payload) in made {
        let bytes = payload.encode();
        if Payload::decode(&bytes).ok().as_ref() != Some(&payload) {
            return Err(format!("{name} does not round-trip").into());
        }
        seeds.write(t, name, &bytes)?;
    }
    Ok(())
}

/// Every clinic structure of `clinic.json`, valid and invalid, and the link's text form.
fn clinic_structures(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    let t = "clinic_structures";
    for (name, pointer) in [
        ("link", "/link"),
        ("agent-certificate", "/agent_certificate"),
        ("admin-certificate", "/admin_certificate"),
        ("revocation-list", "/revocation_list/bytes"),
        ("device-list", "/device_list/bytes"),
        ("wipe-command", "/wipe_command/bytes"),
    ] {
        seeds.write(t, &format!("vector-{name}"), &hex_at(&v.clinic, pointer)?)?;
    }
    let text = v.clinic["link_text"].as_str().ok_or("no link_text")?;
    seeds.write(t, "vector-link-text", text.as_bytes())?;
    let invalid = v.clinic["invalid"].as_array().ok_or("no invalid cases")?;
    for (i, _) in invalid.iter().enumerate() {
        seeds.write(
            t,
            &format!("vector-invalid-{i}"),
            &hex_at(&v.clinic, &format!("/invalid/{i}/bytes"))?,
        )?;
    }
    Ok(())
}

/// `conversation_membership.json`'s changes one by one, its whole history back to back, its
/// refused changes, and queue frames and an archive envelope built from them.
fn conversation_structures(seeds: &mut Seeds, v: &Vectors) -> Result<()> {
    use hushwire::proto::X25519PublicKey;
    use hushwire::proto::conversation::queue::{
        ArchiveItem, NoteEnvelope, QueueEntry, QueueFrame, QueueState,
    };
    use hushwire::proto::conversation::{ArchiveEnvelope, MembershipChange};

    let t = "conversation_structures";
    let m = &v.membership;
    let history: Vec<MembershipChange> = decode_each(m, "/history", "/bytes")?;
    let mut all = Vec::new();
    for (k, change) in history.iter().enumerate() {
        seeds.write(t, &format!("vector-change-{k}"), &change.to_bytes())?;
        all.extend_from_slice(&change.to_bytes());
    }
    seeds.write_sized(t, "vector-history", &all, 16 * 1024)?;
    for i in 0..array_len(m, "/invalid")? {
        seeds.write(
            t,
            &format!("vector-invalid-{i}"),
            &hex_at(m, &format!("/invalid/{i}/change"))?,
        )?;
    }
    seeds.write(
        t,
        "vector-archive-policy",
        &hex_at(m, "/archive_policy/bytes")?,
    )?;
    seeds.write(
        t,
        "vector-archive-envelope",
        &hex_at(m, "/archive_seal/envelope")?,
    )?;
    for i in 0..array_len(m, "/queue_frames")? {
        seeds.write(
            t,
            &format!("vector-queue-frame-{i}"),
            &hex_at(m, &format!("/queue_frames/{i}/bytes"))?,
        )?;
    }
    let change = |k: usize| -> Result<Box<MembershipChange>> {
        Ok(Box::new(history.get(k).ok_or("short history")?.clone()))
    };
    let entry = QueueEntry {
        conversation: history.first().ok_or("empty history")?.conversation(),
        state: QueueState::New,
        opened_at: 1_710_000_000,
        waiting_since: 1_710_000_000,
        epoch: 1,
    };
    let mut nine = [0u8; 32];
    nine[0] = 9;
    let envelope = ArchiveEnvelope {
        conversation: entry.conversation,
        policy_sequence: 1,
        ephemeral: X25519PublicKey::from_array(nine, "ephemeral key")?,
        ciphertext: vec![0x5a; 16 + 256],
    };
    seeds.write(t, "made-archive-envelope", &envelope.to_bytes())?;
    let frames = [
        ("open", QueueFrame::OpenConversation(change(0)?)),
        ("on-duty", QueueFrame::SetOnDuty(true)),
        ("fetch-queue", QueueFrame::FetchQueue),
        ("claim", QueueFrame::Claim(change(1)?)),
        (
            "hand-off",
            QueueFrame::HandOff {
                changes: vec![*change(3)?, *change(4)?],
                notes: vec![NoteEnvelope {
                    recipient: DeviceAddress {
                        fingerprint: [0x42; 32],
                        device_id: 1,
                    },
                    payload: vec![0x6e; 300],
                }],
            },
        ),
        ("publish-change", QueueFrame::PublishChange(change(5)?)),
        (
            "fetch-membership",
            QueueFrame::FetchMembership {
                conversation: entry.conversation,
                from_epoch: 0,
            },
        ),
        ("queue", QueueFrame::Queue(vec![entry, entry])),
        (
            "claimed",
            QueueFrame::Claimed {
                conversation: entry.conversation,
                epoch: 1,
            },
        ),
        (
            "already-claimed",
            QueueFrame::AlreadyClaimed {
                conversation: entry.conversation,
                epoch: 2,
            },
        ),
        (
            "membership",
            QueueFrame::Membership(vec![*change(0)?, *change(1)?]),
        ),
        (
            "membership-changed",
            QueueFrame::MembershipChanged(change(2)?),
        ),
        ("queue-changed", QueueFrame::QueueChanged(entry)),
        (
            "put-archive",
            QueueFrame::PutArchive(Box::new(envelope.clone())),
        ),
        (
            "archive-items",
            QueueFrame::ArchiveItems {
                next_index: 1,
                items: vec![ArchiveItem {
                    filer: DeviceAddress {
                        fingerprint: [0x42; 32],
                        device_id: 1,
                    },
                    filed_at_ms: 1_710_000_000_000,
                    envelope,
                }],
            },
        ),
        ("archive-policy-none", QueueFrame::ArchivePolicy(None)),
        ("fetch-on-duty", QueueFrame::FetchOnDuty),
        (
            "on-duty-devices",
            QueueFrame::OnDuty(vec![DeviceAddress {
                fingerprint: [0x42; 32],
                device_id: 1,
            }]),
        ),
    ];
    for (name, frame) in frames {
        seeds.write(t, &format!("made-queue-{name}"), &frame.to_frame(7))?;
    }
    Ok(())
}
