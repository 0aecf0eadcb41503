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
    out.extend(writer.finish());
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
        r.finish()
    };
    // Announces 5 records, holds 4.
    let mut rng = ChaCha20Rng::from_seed([62; 32]);
    let (mut w, mut out) = ExportWriter::new(&[*auditor.public()], &mut rng).unwrap();
    out.extend(w.begin_transcript(&manifest(5), &[]));
    for r in &f.records {
        out.extend(w.record(r));
    }
    out.extend(w.end_transcript());
    out.extend(w.finish());
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
    out.extend(w.finish());
    assert_eq!(read_all(&out).unwrap_err(), ExportError::UnexpectedItem);
}
