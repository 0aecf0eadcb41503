//! Hushwire beside vodozemac (Olm, `SessionConfig::version_1()`) and beside the primitives it is
//! built from, in one binary, so every ratio comes from one run on one machine.
//!
//! `cargo bench -p hushwire-bench`, then `python3 benches/summary.py` for the ratio table.
//! Method and latest figures: `docs/performance.md`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hushwire::archive::{ArchiveSecretKey, ArchivedMessage};
use hushwire::payload::{ConversationMessage, MessageId, Payload, pad};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{ArchiveEnvelope, ArchivePolicy, ConversationId};
use hushwire::proto::relay::{
    Delivery, DeviceAddress, Frame, FrameBody, MAX_ENVELOPES_PER_FRAME, OutgoingEnvelope,
};
use hushwire::proto::{Fingerprint, Signer as _};
use hushwire::transcript::{
    AuditorKey, ContentType, Direction, ExportWriter, TranscriptManifest, TranscriptRecord,
    TranscriptVerifier, TranscriptWriter,
};
use hushwire::{Account, IdentityKeyPair, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use vodozemac::olm::{Account as OlmAccount, OlmMessage, Session as OlmSession, SessionConfig};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([42; 32])
}

/// Two established Hushwire sessions (one reply exchanged, so neither sends prekey messages).
fn hushwire_pair() -> (Session, Session, ChaCha20Rng) {
    let mut rng = rng();
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(2, 0, &mut rng);
    bob.generate_one_time_prekeys(1, &mut rng);
    let mut a =
        Session::initiate(alice.identity(), &bob.prekey_bundle().unwrap(), &mut rng).unwrap();
    let first = a.encrypt(b"hi").unwrap();
    let mut b = bob.accept(&first, &mut rng).unwrap().session;
    let reply = b.encrypt(b"hello").unwrap();
    a.decrypt(&reply, &mut rng).unwrap();
    (a, b, rng)
}

/// Two established vodozemac sessions, likewise.
fn olm_pair() -> (OlmSession, OlmSession) {
    let alice = OlmAccount::new();
    let mut bob = OlmAccount::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(first) = a.encrypt("hi").unwrap() else {
        panic!("not a prekey message")
    };
    let mut b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .unwrap()
        .session;
    let reply = b.encrypt("hello").unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    let mut rng = rng();
    let alice = Account::new(1, 0, &mut rng);
    let bob = Account::new(2, 0, &mut rng);
    let bundle = bob.prekey_bundle().unwrap();
    g.bench_function("hushwire/initiate", |b| {
        b.iter(|| Session::initiate(alice.identity(), black_box(&bundle), &mut rng).unwrap())
    });
    // The responder: a prekey message against the last-resort keys (nothing consumed, so the
    // same account can accept it every iteration).
    let mut s = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
    let first = s.encrypt(b"hi").unwrap();
    g.bench_function("hushwire/respond", |b| {
        b.iter_batched(
            || bob.clone(),
            |mut bob| bob.accept(black_box(&first), &mut rng).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let olm_alice = OlmAccount::new();
    let mut olm_bob = OlmAccount::new();
    olm_bob.generate_one_time_keys(1);
    let otk = *olm_bob.one_time_keys().values().next().unwrap();
    g.bench_function("vodozemac/initiate", |b| {
        b.iter(|| {
            olm_alice
                .create_outbound_session(
                    SessionConfig::version_1(),
                    black_box(olm_bob.curve25519_key()),
                    otk,
                )
                .unwrap()
        })
    });
    g.bench_function("vodozemac/respond", |b| {
        b.iter_batched(
            || {
                let mut bob = OlmAccount::new();
                bob.generate_one_time_keys(1);
                let otk = *bob.one_time_keys().values().next().unwrap();
                let mut s = olm_alice
                    .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                    .unwrap();
                let OlmMessage::PreKey(m) = s.encrypt("hi").unwrap() else {
                    panic!("not a prekey message")
                };
                (bob, m)
            },
            |(mut bob, m)| {
                bob.create_inbound_session(
                    SessionConfig::version_1(),
                    olm_alice.curve25519_key(),
                    &m,
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn steady_chain(c: &mut Criterion) {
    for (size, name) in SIZES {
        let mut g = c.benchmark_group(format!("encrypt_{name}"));
        g.throughput(Throughput::Bytes(size as u64));
        let plaintext = vec![7u8; size];
        let (mut a, _, _) = hushwire_pair();
        g.bench_function("hushwire", |b| {
            b.iter(|| a.encrypt(black_box(&plaintext)).unwrap())
        });
        let (mut oa, _) = olm_pair();
        g.bench_function("vodozemac", |b| {
            b.iter(|| oa.encrypt(black_box(&plaintext)).unwrap())
        });
        g.finish();

        let mut g = c.benchmark_group(format!("decrypt_{name}"));
        g.throughput(Throughput::Bytes(size as u64));
        let (mut a, mut bs, mut rng) = hushwire_pair();
        g.bench_function("hushwire", |b| {
            b.iter_batched(
                || a.encrypt(&plaintext).unwrap(),
                |m| bs.decrypt(black_box(&m), &mut rng).unwrap(),
                BatchSize::SmallInput,
            )
        });
        let (mut oa, mut ob) = olm_pair();
        g.bench_function("vodozemac", |b| {
            b.iter_batched(
                || oa.encrypt(&plaintext).unwrap(),
                |m| ob.decrypt(black_box(&m)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn ratchet(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratchet_turn");
    let (mut a, mut b, mut rng) = hushwire_pair();
    g.bench_function("hushwire", |bench| {
        bench.iter(|| {
            let m = a.encrypt(b"ping").unwrap();
            b.decrypt(&m, &mut rng).unwrap();
            let r = b.encrypt(b"pong").unwrap();
            a.decrypt(&r, &mut rng).unwrap()
        })
    });
    let (mut oa, mut ob) = olm_pair();
    g.bench_function("vodozemac", |bench| {
        bench.iter(|| {
            let m = oa.encrypt("ping").unwrap();
            ob.decrypt(&m).unwrap();
            let r = ob.encrypt("pong").unwrap();
            oa.decrypt(&r).unwrap()
        })
    });
    g.finish();

    // A message that arrives after a later one: decrypted with a stored skipped key. Each
    // iteration works on a copy of the receiver that has just received the later message.
    let mut g = c.benchmark_group("out_of_order_decrypt");
    let (mut a, mut b, mut rng) = hushwire_pair();
    let mut setup_rng = ChaCha20Rng::from_seed([1; 32]);
    g.bench_function("hushwire", |bench| {
        bench.iter_batched(
            || {
                let early = a.encrypt(b"early").unwrap();
                let late = a.encrypt(b"late").unwrap();
                b.decrypt(&late, &mut setup_rng).unwrap();
                let receiver = b.clone();
                // Keep the long-lived receiver caught up, so its skipped-key store stays small.
                b.decrypt(&early, &mut setup_rng).unwrap();
                (receiver, early)
            },
            |(mut receiver, early)| receiver.decrypt(black_box(&early), &mut rng).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let (mut oa, mut ob) = olm_pair();
    g.bench_function("vodozemac", |bench| {
        bench.iter_batched(
            || {
                let early = oa.encrypt("early").unwrap();
                let late = oa.encrypt("late").unwrap();
                ob.decrypt(&late).unwrap();
                let receiver = OlmSession::from_pickle(ob.pickle());
                ob.decrypt(&early).unwrap();
                (receiver, early)
            },
            |(mut receiver, early)| receiver.decrypt(black_box(&early)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn persistence(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_save_load");
    let (a, _, mut rng) = hushwire_pair();
    let key = StorageKey::from_bytes([9; 32]);
    g.bench_function("hushwire/seal", |b| b.iter(|| a.seal(&key, &mut rng)));
    let sealed = a.seal(&key, &mut rng);
    g.bench_function("hushwire/unseal", |b| {
        b.iter(|| Session::unseal(black_box(&sealed), &key).unwrap())
    });
    let (oa, _) = olm_pair();
    g.bench_function("vodozemac/pickle", |b| {
        b.iter(|| oa.pickle().encrypt(&[9; 32]))
    });
    let pickled = oa.pickle().encrypt(&[9; 32]);
    g.bench_function("vodozemac/unpickle", |b| {
        b.iter(|| {
            OlmSession::from_pickle(
                vodozemac::olm::SessionPickle::from_encrypted(black_box(&pickled), &[9; 32])
                    .unwrap(),
            )
        })
    });
    g.finish();
}

fn transcript(c: &mut Criterion) {
    let mut rng = rng();
    let device = IdentityKeyPair::generate(&mut rng);
    let record = TranscriptRecord {
        direction: Direction::Sent,
        sender: Fingerprint([1; 32]),
        message_id: [2; 16],
        sent_at_ms: 1,
        received_at_ms: 2,
        content_type: ContentType::Text,
        content: vec![b'x'; 1024],
    };
    let mut g = c.benchmark_group("transcript_1KiB_records");
    g.throughput(Throughput::Bytes(1024));
    let mut writer = TranscriptWriter::new(1000, &mut rng);
    g.bench_function("append", |b| {
        b.iter(|| {
            writer
                .append(black_box(&record), &device, 0, &mut rng)
                .unwrap()
        })
    });

    let mut writer = TranscriptWriter::new(1000, &mut rng);
    let records: Vec<_> = (0..1000)
        .map(|_| writer.append(&record, &device, 0, &mut rng).unwrap().record)
        .collect();
    let close = writer.close(&device, 1);
    g.throughput(Throughput::Bytes(1024 * 1000));
    g.bench_function("verify_1000", |b| {
        b.iter(|| {
            let mut v = TranscriptVerifier::new(
                writer.id(),
                writer.key().clone(),
                device.verifying_key(),
                [close.clone()],
            );
            for r in &records {
                v.push(r);
            }
            v.finish().unwrap()
        })
    });
    let auditor = AuditorKey::generate(&mut rng);
    let manifest = TranscriptManifest {
        id: writer.id(),
        signer: device.public().clone(),
        key: writer.key().clone(),
        record_count: 1000,
    };
    g.bench_function("export_1000", |b| {
        b.iter(|| {
            let (mut w, mut out) = ExportWriter::new(&[*auditor.public()], &mut rng).unwrap();
            out.extend(w.begin_transcript(&manifest, std::slice::from_ref(&close)));
            for r in &records {
                out.extend(w.record(r));
            }
            out.extend(w.end_transcript());
            out.extend(w.finish(&device));
            out
        })
    });
    g.finish();
}

fn primitives(c: &mut Criterion) {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _};
    use hmac::Mac as _;
    use ml_kem::kem::{Decapsulate as _, Encapsulate as _};

    let mut g = c.benchmark_group("primitive");
    let mut rng = rng();
    let secret = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng));
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| {
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng))
        })
    });
    g.bench_function("x25519_dh", |b| {
        b.iter(|| secret.diffie_hellman(black_box(&public)))
    });
    let signing = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let signature = ed25519_dalek::Signer::sign(&signing, b"message");
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| ed25519_dalek::Signer::sign(&signing, black_box(b"message")))
    });
    let verifying = signing.verifying_key();
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(b"message"), &signature)
                .unwrap()
        })
    });
    let dk = ml_kem::DecapsulationKey::<ml_kem::MlKem1024>::from_seed([5u8; 64].into());
    let ek = dk.encapsulation_key().clone();
    let (ct, _) = ek.encapsulate_with_rng(&mut rng);
    g.bench_function("mlkem1024_encaps", |b| {
        b.iter(|| ek.encapsulate_with_rng(&mut rng))
    });
    g.bench_function("mlkem1024_decaps", |b| {
        b.iter(|| dk.decapsulate(black_box(&ct)))
    });
    let aead = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
    let kib = vec![0u8; 1024];
    g.bench_function("chacha20poly1305_1KiB", |b| {
        b.iter(|| {
            aead.encrypt(&[0u8; 12].into(), black_box(kib.as_slice()))
                .unwrap()
        })
    });
    g.bench_function("hkdf_sha256_64B", |b| {
        b.iter(|| {
            let mut okm = [0u8; 64];
            hkdf::Hkdf::<sha2::Sha256>::new(Some(&[1; 32]), black_box(&[2; 32]))
                .expand(b"info", &mut okm)
                .unwrap();
            okm
        })
    });
    g.bench_function("hmac_sha256_1B", |b| {
        b.iter(|| {
            let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&[1; 32]).unwrap();
            mac.update(black_box(&[1]));
            mac.finalize().into_bytes()
        })
    });
    g.finish();
}

/// Member devices of the conversations measured: a two-party chat, a support chat with a few
/// devices, and the largest pairwise fan-out allowed (`docs/conversations.md` §2).
const FANOUT_MEMBERS: [usize; 4] = [2, 5, 10, 32];
/// Content lengths and what they pad to (`client.md` §4.5): a one-line message (80 bytes of text,
/// 135 bytes of payload, padded to 256) and one whose payload pads to exactly 4 KiB.
const FANOUT_SIZES: [(usize, usize, &str); 2] = [(80, 256, "256B"), (4096 - 55, 4096, "4KiB")];

/// One sender's side of a clinic conversation: an established Double Ratchet session with every
/// other member device (real handshake, one reply each, so none sends a prekey message) and the
/// clinic's archive policy.
struct FanoutConversation {
    sender: Fingerprint,
    id: ConversationId,
    epoch: u64,
    sessions: Vec<(DeviceAddress, Session)>,
    policy: ArchivePolicy,
}

impl FanoutConversation {
    fn new(members: usize, rng: &mut ChaCha20Rng) -> Self {
        let sender = Account::new(1, 0, rng);
        let sessions = (1..members)
            .map(|i| {
                let mut peer = Account::new(u32::try_from(i).unwrap() + 1, 0, rng);
                peer.generate_one_time_prekeys(1, rng);
                let mut ours =
                    Session::initiate(sender.identity(), &peer.prekey_bundle().unwrap(), rng)
                        .unwrap();
                let first = ours.encrypt(b"hi").unwrap();
                let mut theirs = peer.accept(&first, rng).unwrap().session;
                ours.decrypt(&theirs.encrypt(b"hello").unwrap(), rng)
                    .unwrap();
                let address = DeviceAddress {
                    fingerprint: peer.identity().public().fingerprint().0,
                    device_id: peer.device_id(),
                };
                (address, ours)
            })
            .collect();
        let org = IdentityKeyPair::generate(rng);
        let archive = ArchiveSecretKey::generate(rng);
        Self {
            sender: sender.identity().public().fingerprint(),
            id: ConversationId([0xc0; 16]),
            epoch: 3,
            sessions,
            policy: ArchivePolicy::issue(&org, 1, *archive.public(), 2190).unwrap(),
        }
    }

    /// One conversation message as §2 sends it: the payload encoded and padded once, encrypted
    /// over every member session, and (with `archive`) sealed once to the archive key (§7.3).
    fn send(
        &mut self,
        content: &[u8],
        archive: bool,
        rng: &mut ChaCha20Rng,
    ) -> (Vec<OutgoingEnvelope>, Option<ArchiveEnvelope>) {
        let payload = Payload::ConversationMessage(ConversationMessage {
            conversation: self.id,
            epoch: self.epoch,
            id: MessageId([5; 16]),
            sent_at_ms: 1_764_547_200_000,
            content_type: ContentType::Text,
            content: content.to_vec().into(),
        })
        .encode();
        let padded = pad(&payload);
        let envelopes = self
            .sessions
            .iter_mut()
            .map(|(recipient, session)| OutgoingEnvelope {
                recipient: *recipient,
                payload: session.encrypt(&padded).unwrap(),
            })
            .collect();
        let sealed = archive.then(|| {
            let message = ArchivedMessage {
                sender: self.sender,
                sender_device: 1,
                epoch: self.epoch,
                payload: padded.to_vec(),
            };
            hushwire::archive::seal(&self.policy, self.id, &message, rng).unwrap()
        });
        (envelopes, sealed)
    }
}

/// Bytes of one conversation message on the wire, counted from real frames around the real
/// ciphertexts: what the sender uploads (`ConversationSend` frames of at most 16 envelopes and one
/// `PutArchive`, `conversations.md` §5.2) and what the recipients download (one `Deliver` frame
/// each, `relay-protocol.md` §2). WebSocket and TLS framing are not counted.
fn wire_bytes(
    conversation: ConversationId,
    epoch: u64,
    envelopes: &[OutgoingEnvelope],
    archive: Option<&ArchiveEnvelope>,
) -> (usize, usize) {
    let frame = |body| Frame {
        request_id: 7,
        body,
    };
    let queue = |q| frame(FrameBody::Queue(Box::new(q))).to_bytes().len();
    let upload: usize = envelopes
        .chunks(MAX_ENVELOPES_PER_FRAME)
        .map(|chunk| {
            queue(QueueFrame::ConversationSend {
                conversation,
                epoch,
                envelopes: chunk.to_vec(),
            })
        })
        .sum::<usize>()
        + archive.map_or(0, |a| queue(QueueFrame::PutArchive(Box::new(a.clone()))));
    let download = envelopes
        .iter()
        .map(|e| {
            frame(FrameBody::Deliver(Delivery {
                server_id: [1; 16],
                sender: DeviceAddress {
                    fingerprint: [2; 32],
                    device_id: 1,
                },
                server_time_ms: 1,
                payload: e.payload.clone(),
            }))
            .to_bytes()
            .len()
        })
        .sum();
    (upload, download)
}

/// A message to a conversation of n member devices by pairwise fan-out (`conversations.md` §2):
/// n − 1 session encryptions, alone (`nN/fanout`) and with the archive seal
/// (`nN/fanout+archive`), plus the seal alone. Throughput is in receiving devices, so
/// criterion's elements/s is devices reached per second; `python3 benches/summary.py` prints the
/// per-device ratios against n = 2. Every encryption is a sending-chain step: Hushwire takes its
/// X25519 ratchet step when it decrypts a reply (`ratchet::DoubleRatchet::decrypt`), so a change
/// of direction costs the receiving side, not this. The wire bytes of each case, counted from the
/// frames, are printed and written to `<target>/criterion/fanout_bytes.json`.
fn fanout(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([15; 32]);
    let mut conversations: Vec<(usize, FanoutConversation)> = FANOUT_MEMBERS
        .iter()
        .map(|&n| (n, FanoutConversation::new(n, &mut rng)))
        .collect();
    let mut bytes = Vec::new();
    for (content_len, padded, name) in FANOUT_SIZES {
        let content = vec![b'a'; content_len];
        let mut g = c.benchmark_group(format!("fanout_{name}"));
        for (n, conversation) in &mut conversations {
            let (envelopes, sealed) = conversation.send(&content, true, &mut rng);
            assert_eq!(sealed.as_ref().unwrap().ciphertext.len(), 44 + padded + 16);
            let (upload, download) = wire_bytes(
                conversation.id,
                conversation.epoch,
                &envelopes,
                sealed.as_ref(),
            );
            let (upload_plain, _) =
                wire_bytes(conversation.id, conversation.epoch, &envelopes, None);
            let ciphertext = envelopes.first().unwrap().payload.len();
            println!(
                "fanout bytes: padded {padded} B, {n} member devices: session message {ciphertext} B, upload {upload} B ({upload_plain} B without the archive), download {download} B, total {} B",
                upload + download
            );
            bytes.push(format!(
                "{{\"padded\": {padded}, \"members\": {n}, \"session_message\": {ciphertext}, \"upload\": {upload}, \"upload_without_archive\": {upload_plain}, \"download\": {download}}}"
            ));
            g.throughput(Throughput::Elements(*n as u64 - 1));
            g.bench_function(format!("n{n}/fanout"), |b| {
                b.iter(|| conversation.send(black_box(&content), false, &mut rng))
            });
            g.bench_function(format!("n{n}/fanout+archive"), |b| {
                b.iter(|| conversation.send(black_box(&content), true, &mut rng))
            });
        }
        let (_, conversation) = conversations.first().unwrap();
        let message = ArchivedMessage {
            sender: conversation.sender,
            sender_device: 1,
            epoch: conversation.epoch,
            payload: vec![0; padded],
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function("archive_seal", |b| {
            b.iter(|| {
                hushwire::archive::seal(
                    &conversation.policy,
                    conversation.id,
                    black_box(&message),
                    &mut rng,
                )
                .unwrap()
            })
        });
        g.finish();
    }
    // Beside criterion's own output, for benches/summary.py.
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        && target.is_dir()
    {
        let json = format!("[\n  {}\n]\n", bytes.join(",\n  "));
        std::fs::write(target.join("fanout_bytes.json"), json).unwrap();
    }
}

criterion_group!(
    benches,
    fanout,
    handshake,
    steady_chain,
    ratchet,
    persistence,
    transcript,
    primitives
);
criterion_main!(benches);
