//! Sealed transcripts: every tampering is detected and located; exports open only for their
//! recipients and verify end to end.

// Test helpers outside #[test] fns may unwrap: a failure is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hushwire::proto::{Codec, Fingerprint, Signer as _};
use hushwire::transcript::{
    AuditorKey, ContentType, Direction, ExportError, ExportItem, ExportReader, ExportWriter,
    SealedRecord, TranscriptCheckpoint, TranscriptFault, TranscriptManifest, TranscriptRecord,
    TranscriptVerifier, TranscriptWriter,
};
use hushwire::{IdentityKeyPair, StorageKey};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

struct Fixture {
    device: IdentityKeyPair,
    writer: TranscriptWriter,
    records: Vec<SealedRecord>,
    checkpoints: Vec<TranscriptCheckpoint>,
    plaintexts: Vec<TranscriptRecord>,
}

fn record(i: u64) -> TranscriptRecord {
    TranscriptRecord {
        direction: if i.is_multiple_of(3) {
            Direction::Received
        } else {
            Direction::Sent
        },
        sender: Fingerprint([i as u8; 32]),
        message_id: [(i % 251) as u8; 16],
        sent_at_ms: 1_700_000_000_000 + i,
        received_at_ms: 1_700_000_000_100 + i,
        content_type: ContentType::Text,
        content: format!("message {i}: patient reports mild symptoms").into_bytes(),
    }
}

/// A closed transcript of `n` records with a checkpoint every `interval`.
fn fixture(n: u64, interval: u64) -> Fixture {
    let mut rng = ChaCha20Rng::from_seed([11; 32]);
    let device = IdentityKeyPair::generate(&mut rng);
    let mut writer = TranscriptWriter::new(interval, &mut rng);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut plaintexts = Vec::new();
    for i in 0..n {
        let r = record(i);
        let appended = writer.append(&r, &device, 1000 + i, &mut rng).unwrap();
        records.push(appended.record);
        checkpoints.extend(appended.checkpoint);
        plaintexts.push(r);
    }
    checkpoints.push(writer.close(&device, 9999));
    Fixture {
        device,
        writer,
        records,
        checkpoints,
        plaintexts,
    }
}

fn verify(
    f: &Fixture,
    records: &[SealedRecord],
) -> Result<hushwire::transcript::TranscriptReport, TranscriptFault> {
    let mut v = TranscriptVerifier::new(
        f.writer.id(),
        f.writer.key().clone(),
        f.device.verifying_key(),
        f.checkpoints.clone(),
    );
    for r in records {
        v.push(r);
    }
    v.finish()
}

#[test]
fn untouched_transcript_verifies_and_opens() {
    let f = fixture(25, 10);
    let report = verify(&f, &f.records).unwrap();
    assert_eq!(report.records, 25);
    assert!(report.closed);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.checkpoints, 3);
    for (sealed, plain) in f.records.iter().zip(&f.plaintexts) {
        assert_eq!(&sealed.open(&f.writer.id(), f.writer.key()).unwrap(), plain);
    }
    assert!(
        f.writer
            .clone()
            .append(
                &record(0),
                &f.device,
                0,
                &mut ChaCha20Rng::from_seed([0; 32])
            )
            .is_err()
    );
}

#[test]
fn ten_thousand_records_verify() {
    let f = fixture(10_000, 100);
    let report = verify(&f, &f.records).unwrap();
    assert_eq!(report.records, 10_000);
    // 100 interval checkpoints; the closing one covers the same count as the last.
    assert_eq!(report.checkpoints, 100);
    assert!(report.closed);
}

#[test]
fn unsigned_tail_is_reported() {
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let device = IdentityKeyPair::generate(&mut rng);
    let mut writer = TranscriptWriter::new(4, &mut rng);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 0..6 {
        let a = writer.append(&record(i), &device, 0, &mut rng).unwrap();
        records.push(a.record);
        checkpoints.extend(a.checkpoint);
    }
    let mut v = TranscriptVerifier::new(
        writer.id(),
        writer.key().clone(),
        device.verifying_key(),
        checkpoints,
    );
    for r in &records {
        v.push(r);
    }
    let report = v.finish().unwrap();
    assert_eq!(
        (report.records, report.unsigned_tail, report.closed),
        (6, 2, false)
    );
}

#[test]
fn wrong_signer_is_reported() {
    let f = fixture(5, 2);
    let other = IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([99; 32]));
    let mut v = TranscriptVerifier::new(
        f.writer.id(),
        f.writer.key().clone(),
        other.verifying_key(),
        f.checkpoints.clone(),
    );
    for r in &f.records {
        v.push(r);
    }
    assert_eq!(
        v.finish().unwrap_err(),
        TranscriptFault::BadCheckpointSignature { count: 2 }
    );
}

/// Two versions of one transcript that diverge at record 1: the device re-sealed record 0 and
/// went on from the new version (a retried write whose first attempt also reached storage).
fn forked() -> (
    IdentityKeyPair,
    TranscriptWriter,
    Vec<SealedRecord>,
    Vec<SealedRecord>,
) {
    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    let device = IdentityKeyPair::generate(&mut rng);
    let mut a = TranscriptWriter::new(100, &mut rng);
    let mut b = a.clone();
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    for i in 0..4 {
        ra.push(a.append(&record(i), &device, 0, &mut rng).unwrap().record);
        rb.push(b.append(&record(i), &device, 0, &mut rng).unwrap().record);
    }
    (device, a, ra, rb)
}

#[test]
fn another_version_of_a_record_is_detected() {
    let (device, mut a, ra, rb) = forked();
    let close = a.close(&device, 1);
    let check = |records: &[&SealedRecord]| {
        let mut v = TranscriptVerifier::new(
            a.id(),
            a.key().clone(),
            device.verifying_key(),
            [close.clone()],
        );
        for r in records {
            v.push(r);
        }
        v.finish()
    };
    assert_eq!(check(&[&ra[0], &ra[1], &ra[2], &ra[3]]).unwrap().records, 4);
    // Each b record authenticates on its own (same key, id and sequence) but belongs to the
    // other history: its links, not its AEAD, give it away.
    assert_eq!(
        check(&[&ra[0], &rb[1], &ra[2], &ra[3]]).unwrap_err(),
        TranscriptFault::Modified { sequence: 1 }
    );
    assert_eq!(
        check(&[&rb[0], &ra[1], &ra[2], &ra[3]]).unwrap_err(),
        TranscriptFault::Modified { sequence: 0 }
    );
    assert_eq!(
        check(&[&ra[0], &ra[1], &ra[2], &rb[3]]).unwrap_err(),
        TranscriptFault::Modified { sequence: 3 }
    );
}

/// One way to tamper with the stored records, and the fault it must produce.
#[derive(Clone, Debug)]
enum Tamper {
    FlipByte { record: usize, byte: usize, bit: u8 },
    Drop { record: usize },
    Duplicate { record: usize },
    Swap { a: usize, b: usize },
    InsertForged { at: usize },
    Truncate { keep: usize },
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(record, byte, bit)| Tamper::FlipByte {
            record,
            byte,
            bit
        }),
        any::<usize>().prop_map(|record| Tamper::Drop { record }),
        any::<usize>().prop_map(|record| Tamper::Duplicate { record }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Swap { a, b }),
        any::<usize>().prop_map(|at| Tamper::InsertForged { at }),
        any::<usize>().prop_map(|keep| Tamper::Truncate { keep }),
    ]
}

const N: usize = 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_tampering_is_detected_and_located(t in tamper()) {
        let f = FIXTURE.with(|f| f.clone_parts());
        let mut records = f.records.clone();
        let expected = match t {
            Tamper::FlipByte { record, byte, bit } => {
                let i = record % N;
                let mut bytes = records[i].to_bytes();
                let at = byte % bytes.len();
                bytes[at] ^= 1 << bit;
                match SealedRecord::from_bytes(&bytes) {
                    // A change the decoder refuses never reaches the verifier.
                    Err(_) => return Ok(()),
                    Ok(r) => records[i] = r,
                }
                TranscriptFault::Modified { sequence: i as u64 }
            }
            Tamper::Drop { record } => {
                let i = record % N;
                records.remove(i);
                if i == N - 1 {
                    TranscriptFault::Truncated { checkpoint_count: N as u64, records: N as u64 - 1 }
                } else {
                    TranscriptFault::Removed { sequence: i as u64 }
                }
            }
            Tamper::Duplicate { record } => {
                let i = record % N;
                let copy = records[i].clone();
                records.insert(i + 1, copy);
                TranscriptFault::Duplicated { sequence: i as u64 }
            }
            Tamper::Swap { a, b } => {
                let (a, b) = (a % N, b % N);
                if a == b { return Ok(()); }
                records.swap(a, b);
                TranscriptFault::Reordered { sequence: a.min(b) as u64 }
            }
            Tamper::InsertForged { at } => {
                let i = at % N;
                let mut forged = records[i].clone();
                forged.nonce[0] ^= 0xff;
                records.insert(i, forged);
                TranscriptFault::Inserted { position: i as u64 }
            }
            Tamper::Truncate { keep } => {
                let keep = keep % N;
                records.truncate(keep);
                TranscriptFault::Truncated { checkpoint_count: N as u64, records: keep as u64 }
            }
        };
        prop_assert_eq!(verify(&f, &records).unwrap_err(), expected);
    }
}

impl Fixture {
    fn clone_parts(&self) -> Fixture {
        Fixture {
            device: self.device.clone(),
            writer: self.writer.clone(),
            records: self.records.clone(),
            checkpoints: self.checkpoints.clone(),
            plaintexts: self.plaintexts.clone(),
        }
    }
}

thread_local! {
    static FIXTURE: Fixture = fixture(N as u64, 5);
}

/// Writes an export of the fixture to `recipients`, as one byte vector.
fn export(f: &Fixture, recipients: &[&AuditorKey]) -> Vec<u8> {
    let mut rng = ChaCha20Rng::from_seed([21; 32]);
    let keys: Vec<_> = recipients.iter().map(|k| *k.public()).collect();
    let (mut writer, mut out) = ExportWriter::new(&keys, &mut rng).unwrap();
    let manifest = TranscriptManifest {
        id: f.writer.id(),
        signer: f.device.public().clone(),
        key: f.writer.key().clone(),
        record_count: f.records.len() as u64,
    };
    out.extend(writer.begin_transcript(&manifest, &f.checkpoints));
    for r in &f.records {
        out.extend(writer.record(r));
    }
    out.extend(writer.end_transcript());
    out.extend(writer.finish(&f.device));
    out
}

/// Reads an export fed in `step`-byte pieces; verifies each transcript; returns the plaintexts.
fn open_export(
    bytes: &[u8],
    key: &AuditorKey,
    step: usize,
) -> Result<Vec<TranscriptRecord>, String> {
    let mut reader = ExportReader::new(key);
    let mut verifier = None;
    let mut opened = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        for item in reader.feed(piece).map_err(|e| e.to_string())? {
            match item {
                ExportItem::TranscriptStart(m) => {
                    verifier = Some((m, Vec::new(), None::<TranscriptVerifier>));
                }
                ExportItem::Checkpoint(c) => verifier.as_mut().unwrap().1.push(c),
                ExportItem::Record(r) => {
                    let (m, checkpoints, v) = verifier.as_mut().unwrap();
                    let v = v.get_or_insert_with(|| {
                        TranscriptVerifier::new(
                            m.id,
                            m.key.clone(),
                            *m.signer.signing_key(),
                            checkpoints.clone(),
                        )
                    });
                    opened.extend(v.push(&r));
                }
                ExportItem::TranscriptEnd => {
                    let (_, _, v) = verifier.take().unwrap();
                    v.unwrap().finish().map_err(|e| e.to_string())?;
                }
            }
        }
    }
    reader.finish().map_err(|e| e.to_string())?;
    Ok(opened)
}

#[test]
fn export_opens_only_for_its_recipients_and_verifies() {
    let f = fixture(300, 50);
    let mut rng = ChaCha20Rng::from_seed([31; 32]);
    let auditor_a = AuditorKey::generate(&mut rng);
    let archive = AuditorKey::generate(&mut rng);
    let auditor_b = AuditorKey::generate(&mut rng);
    let bytes = export(&f, &[&auditor_a, &archive]);
    for step in [1, 7, 4096, bytes.len()] {
        assert_eq!(
            open_export(&bytes, &auditor_a, step).unwrap(),
            f.plaintexts,
            "step {step}"
        );
    }
    assert_eq!(open_export(&bytes, &archive, 1000).unwrap(), f.plaintexts);
    let mut reader = ExportReader::new(&auditor_b);
    assert_eq!(reader.feed(&bytes).unwrap_err(), ExportError::NotARecipient);
}

#[test]
fn altered_or_truncated_export_is_refused() {
    let f = fixture(200, 50);
    let auditor = AuditorKey::generate(&mut ChaCha20Rng::from_seed([41; 32]));
    let bytes = export(&f, &[&auditor]);
    // Any single flipped byte, sampled across header and body.
    for i in (0..bytes.len())
        .step_by(97)
        .chain([0, 2, 50, 115, bytes.len() - 1])
    {
        let mut t = bytes.clone();
        t[i] ^= 0x10;
        assert!(
            open_export(&t, &auditor, 5000).is_err(),
            "flip at {i} accepted"
        );
    }
    // Cut anywhere: refused (never silently shorter).
    for cut in [200, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            open_export(&bytes[..cut], &auditor, 5000).is_err(),
            "cut at {cut} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(open_export(&longer, &auditor, 5000).is_err());
}

#[test]
fn shredded_key_cannot_open_records() {
    let f = fixture(3, 10);
    let other = hushwire::transcript::TranscriptKey::generate(&mut ChaCha20Rng::from_seed([3; 32]));
    assert!(f.records[0].open(&f.writer.id(), &other).is_none());
    f.writer.key().clone().shred();
}

#[test]
fn writer_state_survives_sealing() {
    let mut rng = ChaCha20Rng::from_seed([51; 32]);
    let device = IdentityKeyPair::generate(&mut rng);
    let mut writer = TranscriptWriter::new(3, &mut rng);
    let first = writer
        .append(&record(0), &device, 0, &mut rng)
        .unwrap()
        .record;
    let key = StorageKey::from_bytes([8; 32]);
    let mut restored = TranscriptWriter::unseal(&writer.seal(&key, &mut rng), &key).unwrap();
    let second = restored
        .append(&record(1), &device, 0, &mut rng)
        .unwrap()
        .record;
    let close = restored.close(&device, 5);
    let mut v = TranscriptVerifier::new(
        restored.id(),
        restored.key().clone(),
        device.verifying_key(),
        [close],
    );
    v.push(&first);
    v.push(&second);
    assert_eq!(v.finish().unwrap().records, 2);
}

#[test]
fn tail_faults_blame_the_right_record() {
    // A forged record after the closing checkpoint is an insertion, not a modification.
    let f = fixture(6, 2);
    let mut records = f.records.clone();
    let mut forged = records[5].clone();
    forged.sequence = 6;
    forged.nonce[0] ^= 1;
    records.push(forged);
    assert_eq!(
        verify(&f, &records).unwrap_err(),
        TranscriptFault::Inserted { position: 6 }
    );

    // The last record of an unsigned tail replaced by another version of itself: the checkpoint
    // at count 3 proves record 2 genuine, so record 3 is the odd one.
    let (device, a, ra, rb) = forked();
    let checkpoint_at_3 = {
        // A checkpoint over ra[0..3], signed as the writer would have signed it.
        let mut v = TranscriptVerifier::new(a.id(), a.key().clone(), device.verifying_key(), []);
        for r in &ra[..3] {
            v.push(r);
        }
        let head = v.finish().unwrap().head_hash;
        let message = TranscriptCheckpoint::signed_message(&a.id(), 3, &head, 7, false);
        TranscriptCheckpoint {
            transcript: a.id(),
            count: 3,
            head_hash: head,
            time_ms: 7,
            closed: false,
            signature: device.sign(hushwire::proto::labels::SIG_TRANSCRIPT_CHECKPOINT, &message),
        }
    };
    let mut v = TranscriptVerifier::new(
        a.id(),
        a.key().clone(),
        device.verifying_key(),
        [checkpoint_at_3],
    );
    for r in [&ra[0], &ra[1], &ra[2], &rb[3]] {
        v.push(r);
    }
    // rb[3] chains to rb[2], not ra[2].
    assert_eq!(
        v.finish().unwrap_err(),
        TranscriptFault::Modified { sequence: 3 }
    );
}

#[test]
fn export_reader_enforces_item_order_and_counts() {
    let f = fixture(4, 2);
    let auditor = AuditorKey::generate(&mut ChaCha20Rng::from_seed([61; 32]));
    let manifest = |count: u64| TranscriptManifest {
        id: f.writer.id(),
        signer: f.device.public().clone(),
        key: f.writer.key().clone(),
        record_count: count,
    };
    let read_all = |bytes: &[u8]| -> Result<(), ExportError> {
        let mut r = ExportReader::new(&auditor);
        r.feed(bytes)?;
        r.finish().map(|_| ())
    };
    // Announces 5 records, holds 4.
    let mut rng = ChaCha20Rng::from_seed([62; 32]);
    let (mut w, mut out) = ExportWriter::new(&[*auditor.public()], &mut rng).unwrap();
    out.extend(w.begin_transcript(&manifest(5), &[]));
    for r in &f.records {
        out.extend(w.record(r));
    }
    out.extend(w.end_transcript());
    out.extend(w.finish(&f.device));
    assert_eq!(
        read_all(&out).unwrap_err(),
        ExportError::RecordCountMismatch {
            announced: 5,
            found: 4
        }
    );
    // A transcript started inside another (the writer's API cannot put a checkpoint after a
    // record, so this is the ordering fault a hand-made export can still contain).
    let (mut w, mut out) = ExportWriter::new(&[*auditor.public()], &mut rng).unwrap();
    out.extend(w.begin_transcript(&manifest(4), &[]));
    out.extend(w.record(&f.records[0]));
    out.extend(w.begin_transcript(&manifest(4), &f.checkpoints));
    out.extend(w.finish(&f.device));
    assert_eq!(read_all(&out).unwrap_err(), ExportError::UnexpectedItem);
}

// ---------------------------------------------------------------------------------------------
// Signed exports (docs/transcripts.md §6.2, §6.6, §6.10): what a recipient, who holds the file
// key and the transcript key, can still not do.

/// The file key an [`ExportWriter`] seeded with `seed` draws first (§1.2: file key, then one
/// ephemeral secret per recipient).
fn file_key_of(seed: [u8; 32]) -> [u8; 32] {
    use rand_core::Rng as _;
    let mut key = [0u8; 32];
    ChaCha20Rng::from_seed(seed).fill_bytes(&mut key);
    key
}

/// The payload key of §6.3, as a recipient computes it.
fn payload_key(header: &[u8], file_key: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest as _;
    let salt: [u8; 32] = sha2::Sha256::digest(header).into();
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), file_key)
        .expand(hushwire::proto::labels::KDF_EXPORT_PAYLOAD, &mut key)
        .unwrap();
    key
}

fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// What a recipient sees: the decrypted item stream of an export whose header is
/// `header_len` bytes, as framed items `(tag, body)`.
fn items_of(bytes: &[u8], header_len: usize, file_key: &[u8; 32]) -> Vec<(u8, Vec<u8>)> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _};
    let key = payload_key(&bytes[..header_len], file_key);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    let mut rest = &bytes[header_len..];
    let mut stream = Vec::new();
    let mut index = 0;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let sealed = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let nonce = chunk_nonce(index, rest.is_empty());
        stream.extend(cipher.decrypt(&nonce.into(), sealed).unwrap());
        index += 1;
    }
    let mut items = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = u32::from_be_bytes(stream[at + 1..at + 5].try_into().unwrap()) as usize;
        items.push((stream[at], stream[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    items
}

/// What a recipient can write: `items` re-sealed under the same header and file key.
fn reseal(header: &[u8], file_key: &[u8; 32], items: &[(u8, Vec<u8>)]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _};
    let key = payload_key(header, file_key);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    let mut stream = Vec::new();
    for (tag, body) in items {
        stream.push(*tag);
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(body);
    }
    let mut out = header.to_vec();
    let pieces: Vec<&[u8]> = stream.chunks(hushwire::transcript::CHUNK_LEN).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let sealed = cipher
            .encrypt(&chunk_nonce(i as u64, i + 1 == pieces.len()).into(), *piece)
            .unwrap();
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
    }
    out
}

/// An open transcript of 7 records, checkpointed at 5 (records 5 and 6 are the unsigned tail),
/// its writer, and its export (seed [71; 32]) to `auditor`, signed by the device.
struct Tail {
    f: Fixture,
    auditor: AuditorKey,
    header_len: usize,
    file_key: [u8; 32],
    bytes: Vec<u8>,
}

fn tail_export() -> Tail {
    let mut rng = ChaCha20Rng::from_seed([70; 32]);
    let device = IdentityKeyPair::generate(&mut rng);
    let mut writer = TranscriptWriter::new(5, &mut rng);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut plaintexts = Vec::new();
    for i in 0..7 {
        let appended = writer
            .append(&record(i), &device, 1000 + i, &mut rng)
            .unwrap();
        records.push(appended.record);
        checkpoints.extend(appended.checkpoint);
        plaintexts.push(record(i));
    }
    let f = Fixture {
        device,
        writer,
        records,
        checkpoints,
        plaintexts,
    };
    let auditor = AuditorKey::generate(&mut rng);
    let seed = [71; 32];
    let (mut w, mut bytes) =
        ExportWriter::new(&[*auditor.public()], &mut ChaCha20Rng::from_seed(seed)).unwrap();
    let header_len = bytes.len();
    let manifest = TranscriptManifest {
        id: f.writer.id(),
        signer: f.device.public().clone(),
        key: f.writer.key().clone(),
        record_count: 7,
    };
    bytes.extend(w.begin_transcript(&manifest, &f.checkpoints));
    for r in &f.records {
        bytes.extend(w.record(r));
    }
    bytes.extend(w.end_transcript());
    bytes.extend(w.finish(&f.device));
    Tail {
        f,
        auditor,
        header_len,
        file_key: file_key_of(seed),
        bytes,
    }
}

impl Tail {
    fn items(&self) -> Vec<(u8, Vec<u8>)> {
        items_of(&self.bytes, self.header_len, &self.file_key)
    }

    fn reseal(&self, items: &[(u8, Vec<u8>)]) -> Vec<u8> {
        reseal(&self.bytes[..self.header_len], &self.file_key, items)
    }

    /// A record a recipient forges with the transcript key: sealed as record `keep`, chained
    /// to record `keep - 1`, so it authenticates and chains. Replaying the device's draws
    /// rebuilds its writer (same id, key and records) up to `keep`: a stand-in for a forger's
    /// own sealing code, which needs only the transcript key and the head.
    fn forged_after(&self, keep: usize, text: &str) -> SealedRecord {
        let mut rng = ChaCha20Rng::from_seed([70; 32]);
        let _device = IdentityKeyPair::generate(&mut rng);
        let stranger = IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([72; 32]));
        let mut writer = TranscriptWriter::new(5, &mut rng);
        for i in 0..keep {
            let appended = writer
                .append(&record(i as u64), &stranger, 0, &mut rng)
                .unwrap();
            assert_eq!(appended.record, self.f.records[i]);
        }
        let mut forged = record(keep as u64);
        forged.content = text.as_bytes().to_vec();
        writer
            .append(&forged, &stranger, 0, &mut ChaCha20Rng::from_seed([72; 32]))
            .unwrap()
            .record
    }

    fn read(
        &self,
        bytes: &[u8],
        exporter: Option<Fingerprint>,
    ) -> Result<Fingerprint, ExportError> {
        let mut reader = match exporter {
            Some(fp) => ExportReader::with_exporter(&self.auditor, fp),
            None => ExportReader::new(&self.auditor),
        };
        reader.feed(bytes)?;
        reader.finish().map(|id| id.fingerprint())
    }
}

/// Sets the record count a transcript-start item announces.
fn announce(item: &mut (u8, Vec<u8>), count: u64) {
    assert_eq!(item.0, 0x01);
    let at = item.1.len() - 8;
    item.1[at..].copy_from_slice(&count.to_be_bytes());
}

#[test]
fn signed_export_names_its_exporter_and_checks_the_expected_one() {
    let t = tail_export();
    let device = t.f.device.public().fingerprint();
    assert_eq!(t.read(&t.bytes, None).unwrap(), device);
    assert_eq!(t.read(&t.bytes, Some(device)).unwrap(), device);
    // The verified transcript still reports its unsigned tail: the export signature, not a
    // checkpoint, is what pins records 5 and 6 now.
    assert_eq!(
        open_export(&t.bytes, &t.auditor, 4096).unwrap(),
        t.f.plaintexts
    );
    // The items decrypt as the spec frames them: start, 1 checkpoint, 7 records, end, export end.
    let tags: Vec<u8> = t.items().iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, [1, 2, 3, 3, 3, 3, 3, 3, 3, 4, 0xff]);
}

#[test]
fn forged_record_after_the_last_checkpoint_is_refused() {
    let t = tail_export();
    let forged = t.forged_after(7, "the patient consented to everything");
    // The forged record is a valid continuation: it authenticates under the transcript key and
    // chains to record 6, so the transcript verifier alone (unsigned tail) would accept it.
    assert!(forged.open(&t.f.writer.id(), t.f.writer.key()).is_some());
    assert_eq!(forged.previous_hash, t.f.records[6].hash(&t.f.writer.id()));
    let mut items = t.items();
    announce(&mut items[0], 8);
    items.insert(9, (3, forged.to_bytes()));
    let bytes = t.reseal(&items);
    assert!(open_export(&bytes, &t.auditor, 4096).is_err());
    assert_eq!(
        t.read(&bytes, None).unwrap_err(),
        ExportError::RecordsAppended {
            transcript: t.f.writer.id(),
            signed: 7,
            found: 8
        }
    );
}

#[test]
fn altered_or_removed_tail_record_is_refused() {
    let t = tail_export();
    // Record 6 replaced by another version of itself, chained to record 5.
    let other = t.forged_after(6, "no symptoms reported");
    assert!(other.open(&t.f.writer.id(), t.f.writer.key()).is_some());
    let mut items = t.items();
    items[8] = (3, other.to_bytes());
    assert_eq!(
        t.read(&t.reseal(&items), None).unwrap_err(),
        ExportError::RecordsAltered {
            transcript: t.f.writer.id(),
            records: 7
        }
    );
    // Record 6 removed (and the announced count lowered to match).
    let mut items = t.items();
    announce(&mut items[0], 6);
    items.remove(8);
    assert_eq!(
        t.read(&t.reseal(&items), None).unwrap_err(),
        ExportError::RecordsRemoved {
            transcript: t.f.writer.id(),
            signed: 7,
            found: 6
        }
    );
    // The forger also rewrites the stated final state: the signature no longer verifies.
    let mut items = t.items();
    announce(&mut items[0], 6);
    items.remove(8);
    let end = items.iter().position(|(tag, _)| *tag == 4).unwrap();
    let mut state = 6u64.to_be_bytes().to_vec();
    state.extend_from_slice(&t.f.records[5].hash(&t.f.writer.id()));
    items[end].1 = state;
    assert_eq!(
        t.read(&t.reseal(&items), None).unwrap_err(),
        ExportError::BadExportSignature
    );
}

#[test]
fn export_signed_by_another_identity_is_refused_or_named() {
    let t = tail_export();
    let stranger = IdentityKeyPair::generate(&mut ChaCha20Rng::from_seed([73; 32]));
    let device = t.f.device.public().fingerprint();
    // A recipient re-signs the export (say, with a forged tail) with an identity of its own.
    let (mut w, mut bytes) = ExportWriter::new(
        &[*t.auditor.public()],
        &mut ChaCha20Rng::from_seed([74; 32]),
    )
    .unwrap();
    let manifest = TranscriptManifest {
        id: t.f.writer.id(),
        signer: t.f.device.public().clone(),
        key: t.f.writer.key().clone(),
        record_count: 7,
    };
    bytes.extend(w.begin_transcript(&manifest, &t.f.checkpoints));
    for r in &t.f.records {
        bytes.extend(w.record(r));
    }
    bytes.extend(w.end_transcript());
    bytes.extend(w.finish(&stranger));
    let found = stranger.public().fingerprint();
    assert_eq!(
        t.read(&bytes, Some(device)).unwrap_err(),
        ExportError::WrongExporter { found }
    );
    // Without an expected exporter the reader names who signed, for the auditor to compare.
    assert_eq!(t.read(&bytes, None).unwrap(), found);
    // The device's identity with another identity's signature does not verify.
    let mut items = items_of(
        &bytes,
        bytes.len() - t.bytes.len() + t.header_len,
        &file_key_of([74; 32]),
    );
    let last = items.len() - 1;
    let signature = items[last].1[128..].to_vec();
    let mut body = t.f.device.public().to_bytes();
    body.extend_from_slice(&signature);
    items[last].1 = body;
    let resealed = reseal(&bytes[..t.header_len], &file_key_of([74; 32]), &items);
    assert_eq!(
        t.read(&resealed, None).unwrap_err(),
        ExportError::BadExportSignature
    );
}

#[test]
fn altered_header_fails_the_key_wrap() {
    let f = fixture(3, 2);
    let mut rng = ChaCha20Rng::from_seed([81; 32]);
    let auditor = AuditorKey::generate(&mut rng);
    let archive = AuditorKey::generate(&mut rng);
    let third = AuditorKey::generate(&mut rng);
    let bytes = export(&f, &[&auditor, &archive]);
    let read = |bytes: &[u8]| {
        let mut reader = ExportReader::new(&auditor);
        reader.feed(bytes).map(|_| ())
    };
    assert_eq!(read(&bytes), Ok(()));
    // The other entry's recipient key replaced (the archive swapped for another auditor): the
    // first entry's wrap binds every entry's keys, so it no longer unwraps.
    let mut swapped = bytes.clone();
    swapped[3 + 112..3 + 112 + 32].copy_from_slice(third.public().as_bytes());
    assert_eq!(read(&swapped), Err(ExportError::KeyUnwrapFailed));
    // The other entry dropped (recipient count 1): refused at the wrap too.
    let mut dropped = bytes[..3 + 112].to_vec();
    dropped[2] = 1;
    dropped.extend_from_slice(&bytes[3 + 224..]);
    assert_eq!(read(&dropped), Err(ExportError::KeyUnwrapFailed));
    // The other entry's wrapped key altered: not in the wrap's AD, but in the payload key.
    let mut wrapped = bytes.clone();
    wrapped[3 + 112 + 64] ^= 1;
    assert_eq!(
        read(&wrapped),
        Err(ExportError::ChunkAuthenticationFailed { chunk: 0 })
    );
}

#[test]
fn version_1_exports_are_refused_with_a_clear_error() {
    let f = fixture(3, 2);
    let auditor = AuditorKey::generate(&mut ChaCha20Rng::from_seed([91; 32]));
    let mut bytes = export(&f, &[&auditor]);
    assert_eq!(bytes[0], hushwire::transcript::EXPORT_VERSION);
    bytes[0] = 1;
    let mut reader = ExportReader::new(&auditor);
    let err = reader.feed(&bytes).unwrap_err();
    assert_eq!(err, ExportError::UnsignedVersion1);
    assert!(err.to_string().contains("version-1"), "{err}");
    bytes[0] = 3;
    let mut reader = ExportReader::new(&auditor);
    assert_eq!(
        reader.feed(&bytes).unwrap_err(),
        ExportError::Malformed(hushwire::proto::codec::DecodeError::UnsupportedVersion {
            version: 3
        })
    );
}

#[test]
fn chunk_shorter_than_its_tag_is_an_invalid_value() {
    let f = fixture(1, 1);
    let auditor = AuditorKey::generate(&mut ChaCha20Rng::from_seed([92; 32]));
    let bytes = export(&f, &[&auditor]);
    let mut short = bytes[..115].to_vec();
    short.extend_from_slice(&15u32.to_be_bytes());
    short.extend_from_slice(&[0; 15]);
    let mut reader = ExportReader::new(&auditor);
    assert_eq!(
        reader.feed(&short).unwrap_err(),
        ExportError::Malformed(hushwire::proto::codec::DecodeError::InvalidValue {
            field: "chunk length"
        })
    );
}
