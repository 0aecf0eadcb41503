//! Audit chains (`docs/audit.md`): the records and checkpoints the relay and clients log, and
//! the streaming verifier an auditor runs over a log it was handed.

use hushwire::proto::audit::{AuditCheckpoint, AuditRecord, AuditVerifier, CHECKPOINT_TYPE};
use hushwire::proto::{Codec, Reader, Signer as _};

use crate::fixtures::{AUDIT_CHAIN_ID, audit_signer};

/// The bytes as one audit record and as one checkpoint: decoding never panics and is
/// canonical. Then the bytes as a whole log (records and checkpoints back to back, a checkpoint
/// told apart by its type byte) pushed through an [`AuditVerifier`] for [`AUDIT_CHAIN_ID`]:
/// no push and no verdict panics, and a log it accepts has every record it was given.
pub fn audit_record(data: &[u8]) {
    let key = audit_signer().verifying_key();
    if let Ok(record) = AuditRecord::from_bytes(data) {
        assert_eq!(
            record.to_bytes(),
            data,
            "non-canonical audit record accepted"
        );
        let _ = record.hash();
    }
    if let Ok(checkpoint) = AuditCheckpoint::from_bytes(data) {
        assert_eq!(
            checkpoint.to_bytes(),
            data,
            "non-canonical audit checkpoint accepted"
        );
        let _ = checkpoint.verify(&key);
    }

    let mut verifier = AuditVerifier::new(AUDIT_CHAIN_ID, key);
    let mut records = 0u64;
    let mut rest = data;
    while !rest.is_empty() {
        let mut r = Reader::new(rest);
        if rest.get(1) == Some(&CHECKPOINT_TYPE) {
            let Ok(checkpoint) = AuditCheckpoint::read(&mut r) else {
                // Undecodable bytes in a log: what an auditor's log reader hands on as a record.
                let _ = verifier.push_encoded_record(rest);
                records += 1;
                break;
            };
            let used = rest.len() - r.left();
            assert_eq!(
                checkpoint.to_bytes(),
                rest[..used],
                "non-canonical checkpoint"
            );
            let _ = verifier.push_checkpoint(&checkpoint);
            rest = &rest[used..];
        } else {
            // Audit records delimit themselves (each event tag fixes its length): the next
            // record is exactly what one read consumes, or the rest if it does not decode.
            let used = match AuditRecord::read(&mut r) {
                Ok(record) => {
                    let used = rest.len() - r.left();
                    assert_eq!(record.to_bytes(), rest[..used], "non-canonical record");
                    used
                }
                Err(_) => rest.len(),
            };
            let _ = verifier.push_encoded_record(&rest[..used]);
            records += 1;
            rest = &rest[used..];
        }
    }
    if let Ok(report) = verifier.finish() {
        assert_eq!(
            report.records, records,
            "the verifier accepted a log but counted {} of its {records} records",
            report.records
        );
        assert!(report.unsigned_tail <= report.records);
    }
}
