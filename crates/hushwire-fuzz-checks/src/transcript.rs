//! Sealed transcripts and their exports (`docs/transcripts.md`): what a clinic stores, and the
//! stream an auditor is handed by whoever stored it.

use hushwire::proto::{Codec, Fingerprint};
use hushwire::transcript::{
    ExportError, ExportItem, ExportReader, SealedRecord, TranscriptCheckpoint, TranscriptId,
    TranscriptManifest, TranscriptRecord, TranscriptVerifier,
};

use crate::fixtures::{audit_signer, auditor_key};

/// The bytes as a sealed record, a transcript checkpoint and a record's plaintext encoding:
/// decoding never panics, and whatever decodes re-encodes to the same bytes (records are
/// chained by the hash of their encoding).
pub fn transcript_record(data: &[u8]) {
    if let Ok(record) = SealedRecord::from_bytes(data) {
        assert_eq!(
            record.to_bytes(),
            data,
            "non-canonical sealed record accepted"
        );
        let _ = record.hash(&TranscriptId([0; 16]));
    }
    if let Ok(checkpoint) = TranscriptCheckpoint::from_bytes(data) {
        assert_eq!(
            checkpoint.to_bytes(),
            data,
            "non-canonical transcript checkpoint accepted"
        );
    }
    if let Ok(record) = TranscriptRecord::from_bytes(data) {
        assert_eq!(
            record.to_bytes(),
            data,
            "non-canonical transcript record accepted"
        );
    }
}

/// An export read with the fixed [`auditor_key`]. The input is `split[2, big-endian] ‖ export`:
/// the export is fed in two pieces cut at `split` (modulo its length + 1), then finished. No
/// call panics; the outcome (items read and the exporter, or the first error) is the same as
/// feeding it whole, since the reader promises any split; reading it with the fixtures'
/// exporter expected ([`audit_signer`], who signs the seeds) agrees with reading it without:
/// the same result if that is who signed, `WrongExporter` naming the signer otherwise; and
/// every transcript read is put through a [`TranscriptVerifier`], as an auditor would.
pub fn export_reader(data: &[u8]) {
    let Some((split, export)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_be_bytes(*split)) % (export.len() + 1);
    let (head, tail) = export.split_at(at);

    let whole = read_export(&[export], None);
    let pieces = read_export(&[head, tail], None);
    let outcome = |r: &Result<(Vec<ExportItem>, Fingerprint), ExportError>| {
        r.as_ref()
            .map(|(items, exporter)| (items.len(), *exporter))
            .map_err(|e| *e)
    };
    assert_eq!(
        outcome(&whole),
        outcome(&pieces),
        "reading the export whole and split at {at} disagree"
    );
    let expected = audit_signer().public().fingerprint();
    let checked = read_export(&[export], Some(expected));
    match &whole {
        Ok((_, exporter)) if *exporter == expected => assert_eq!(
            outcome(&checked),
            outcome(&whole),
            "the expected exporter changed the outcome"
        ),
        Ok((_, exporter)) => assert_eq!(
            outcome(&checked),
            Err(ExportError::WrongExporter { found: *exporter }),
            "an export signed by someone else was accepted"
        ),
        Err(e) => assert_eq!(
            outcome(&checked),
            Err(*e),
            "the expected exporter changed the error"
        ),
    }
    if let Ok((items, _)) = whole {
        verify_transcripts(items);
    }
}

/// Feeds `parts` in order, then finishes: every item and the exporter's fingerprint, or the
/// first error.
fn read_export(
    parts: &[&[u8]],
    exporter: Option<Fingerprint>,
) -> Result<(Vec<ExportItem>, Fingerprint), ExportError> {
    let mut reader = match exporter {
        Some(fingerprint) => ExportReader::with_exporter(auditor_key(), fingerprint),
        None => ExportReader::new(auditor_key()),
    };
    let mut items = Vec::new();
    for part in parts {
        match reader.feed(part) {
            Ok(more) => items.extend(more),
            Err(e) => {
                // A caller may still finish a reader that failed; that must not panic either.
                let _ = reader.finish();
                return Err(e);
            }
        }
    }
    // A reader that finished returns the identity whose signature it verified.
    reader
        .finish()
        .map(|identity| (items, identity.fingerprint()))
}

/// Verifies each transcript of an export that was read to its end.
fn verify_transcripts(items: Vec<ExportItem>) {
    let mut current: Option<(
        Box<TranscriptManifest>,
        Vec<TranscriptCheckpoint>,
        Vec<SealedRecord>,
    )> = None;
    for item in items {
        match item {
            ExportItem::TranscriptStart(manifest) => {
                assert!(current.is_none(), "a transcript started inside another");
                current = Some((manifest, Vec::new(), Vec::new()));
            }
            ExportItem::Checkpoint(c) => {
                let (_, checkpoints, records) =
                    current.as_mut().expect("checkpoint outside a transcript");
                assert!(records.is_empty(), "a checkpoint after a record");
                checkpoints.push(c);
            }
            ExportItem::Record(r) => {
                current
                    .as_mut()
                    .expect("record outside a transcript")
                    .2
                    .push(r);
            }
            ExportItem::TranscriptEnd => {
                let (manifest, checkpoints, records) =
                    current.take().expect("transcript end outside a transcript");
                assert_eq!(
                    records.len() as u64,
                    manifest.record_count,
                    "the reader let a transcript end with other than its announced records"
                );
                let manifest = *manifest;
                let signer = *manifest.signer.signing_key();
                let mut verifier =
                    TranscriptVerifier::new(manifest.id, manifest.key, signer, checkpoints);
                for record in &records {
                    let _ = verifier.push(record);
                }
                if let Ok(report) = verifier.finish() {
                    assert_eq!(report.records, records.len() as u64);
                }
            }
        }
    }
    assert!(current.is_none(), "an export ended inside a transcript");
}
