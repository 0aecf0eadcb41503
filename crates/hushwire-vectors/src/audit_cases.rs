//! Tampered audit chains and the verifier's verdicts, for `audit.json` (docs/audit.md §8).
//!
//! Each case is a log built from the published chain (records and checkpoints named by index)
//! and, where the tampering needs them, other bytes. The verdict is what `audit::verify` says;
//! each case also states the verdict docs/audit.md §8 predicts, and generation fails if the two
//! ever differ, so the published file, the code and the spec move together.

use hushwire::proto::Codec;
use hushwire::proto::audit::{
    self, AuditChain, AuditCheckpoint, AuditEvent, AuditFault, AuditRecord, AuditReport,
    AuditVerifier, TranscriptId,
};
use serde_json::{Value, json};

use crate::Error;

/// A record or checkpoint of a case: one of the published ones by index, or another one.
enum Item<T> {
    Published(usize),
    Other(T),
    /// Bytes that are not a valid encoding (records only).
    Undecodable(Vec<u8>),
}

struct Case {
    name: &'static str,
    records: Vec<Item<AuditRecord>>,
    checkpoints: Vec<Item<AuditCheckpoint>>,
    /// The verdict docs/audit.md §8 predicts.
    expected: Result<(), AuditFault>,
}

fn published<T>(indices: &[usize]) -> Vec<Item<T>> {
    indices.iter().map(|&i| Item::Published(i)).collect()
}

fn fault_json(fault: AuditFault) -> Value {
    match fault {
        AuditFault::Malformed { position, .. } => {
            json!({ "fault": "Malformed", "position": position })
        }
        AuditFault::Modified { sequence } => json!({ "fault": "Modified", "sequence": sequence }),
        AuditFault::Removed { sequence } => json!({ "fault": "Removed", "sequence": sequence }),
        AuditFault::Inserted { sequence } => json!({ "fault": "Inserted", "sequence": sequence }),
        AuditFault::Duplicated { sequence } => {
            json!({ "fault": "Duplicated", "sequence": sequence })
        }
        AuditFault::Reordered { sequence } => json!({ "fault": "Reordered", "sequence": sequence }),
        AuditFault::Truncated {
            checkpoint_count,
            records,
        } => {
            json!({ "fault": "Truncated", "checkpoint_count": checkpoint_count, "records": records })
        }
        AuditFault::BadCheckpointSignature { count } => {
            json!({ "fault": "BadCheckpointSignature", "count": count })
        }
        AuditFault::CheckpointMismatch { count } => {
            json!({ "fault": "CheckpointMismatch", "count": count })
        }
        AuditFault::CheckpointOutOfOrder { count } => {
            json!({ "fault": "CheckpointOutOfOrder", "count": count })
        }
        AuditFault::WrongChain => json!({ "fault": "WrongChain" }),
    }
}

fn report_json(report: &AuditReport) -> Value {
    json!({ "ok": {
        "records": report.records,
        "checkpoints": report.checkpoints,
        "unsigned_tail": report.unsigned_tail,
        "head_hash": hex::encode(report.head_hash),
    }})
}

/// What `audit::verify` does, for records given as bytes: each checkpoint pushed right after the
/// record at its count's position, records pushed with `push_encoded_record`, so that an
/// undecodable record is `Malformed` at its position.
fn verify_encoded(
    chain_id: [u8; 16],
    public: ed25519_dalek::VerifyingKey,
    log: &[Vec<u8>],
    checkpoints: &[AuditCheckpoint],
) -> Result<AuditReport, AuditFault> {
    let mut due: Vec<&AuditCheckpoint> = checkpoints.iter().collect();
    due.sort_by_key(|c| c.count);
    let mut due = due.into_iter().peekable();
    let mut verifier = AuditVerifier::new(chain_id, public);
    for (pushed, bytes) in (0u64..).zip(log) {
        while let Some(checkpoint) = due.next_if(|c| c.count <= pushed) {
            verifier.push_checkpoint(checkpoint)?;
        }
        verifier.push_encoded_record(bytes)?;
    }
    for checkpoint in due {
        verifier.push_checkpoint(checkpoint)?;
    }
    verifier.finish()
}

/// The `verification` object of `audit.json`: tampered variants of the published chain
/// (`records`, with checkpoints `checkpoints` signed by `signer`) and their verdicts.
pub(crate) fn verification(
    chain_id: [u8; 16],
    signer: &ed25519_dalek::SigningKey,
    records: &[AuditRecord],
    checkpoints: &[AuditCheckpoint],
) -> Result<Value, Error> {
    let [_, r1, _, r3, r4, r5] = records else {
        return Err("the audit chain must hold six records".into());
    };
    let [cp3, cp6] = checkpoints else {
        return Err("the audit chain must hold checkpoints at 3 and 6".into());
    };
    let n = records.len() as u64;
    let other_event = AuditEvent::TranscriptShredded {
        transcript: TranscriptId([0xf0; 16]),
    };
    // Re-encoded from changed bytes, so that each change is one the codec accepts.
    let with_byte = |record: &AuditRecord, at: usize, xor: u8| -> Result<AuditRecord, Error> {
        let mut bytes = record.to_bytes();
        let byte = bytes.get_mut(at).ok_or("byte offset past the record")?;
        *byte ^= xor;
        Ok(AuditRecord::from_bytes(&bytes)?)
    };
    let forged = |sequence: u64, previous_hash: [u8; 32]| AuditRecord {
        sequence,
        time_ms: r5.time_ms + 7,
        event: other_event,
        previous_hash,
    };
    // History rewritten from `from` on and re-linked, as a writer without the key could.
    let rewritten = |from: usize| -> Vec<Item<AuditRecord>> {
        let mut items: Vec<Item<AuditRecord>> = published(&(0..from).collect::<Vec<_>>());
        let mut chain = match from.checked_sub(1).and_then(|last| records.get(last)) {
            None => AuditChain::new(chain_id),
            Some(last) => AuditChain::resume(chain_id, from as u64, last.hash()),
        };
        for (i, r) in records.iter().enumerate().skip(from) {
            let time_ms = if i == from { r.time_ms + 1 } else { r.time_ms };
            items.push(Item::Other(chain.append(time_ms, r.event)));
        }
        items
    };
    let mut bad_signature = *cp3;
    bad_signature.signature[0] ^= 0x01;
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[0x45; 32]);
    let other_signer = AuditCheckpoint::sign(&other_key, chain_id, 6, cp6.head_hash, cp6.time_ms);
    let fork = AuditCheckpoint::sign(signer, chain_id, 3, r3.hash(), cp3.time_ms + 1);
    let mut other_chain_id = chain_id;
    other_chain_id[0] ^= 0x01;
    let other_chain = AuditChain::resume(other_chain_id, 6, cp6.head_hash).checkpoint(signer, 1);
    let all = || published::<AuditRecord>(&[0, 1, 2, 3, 4, 5]);
    let both = || published::<AuditCheckpoint>(&[0, 1]);
    let extension = forged(n, r5.hash());

    let cases = vec![
        Case {
            name: "as stored",
            records: all(),
            checkpoints: both(),
            expected: Ok(()),
        },
        Case {
            name: "record 1's time_ms changed (byte 17 xor 0x01)",
            records: vec![
                Item::Published(0),
                Item::Other(with_byte(r1, 17, 0x01)?),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Modified { sequence: 1 }),
        },
        Case {
            name: "record 4's previous_hash changed (byte 18 xor 0x01)",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Published(2),
                Item::Published(3),
                Item::Other(with_byte(r4, 18, 0x01)?),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Modified { sequence: 4 }),
        },
        Case {
            name: "record 3's sequence field changed to 7 (byte 9 xor 0x04)",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Published(2),
                Item::Other(with_byte(r3, 9, 0x04)?),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Modified { sequence: 3 }),
        },
        Case {
            name: "record 3's event tag changed to 0x7f, which no event has (byte 50)",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Published(2),
                Item::Undecodable({
                    let mut bytes = r3.to_bytes();
                    if let Some(tag) = bytes.get_mut(50) {
                        *tag = 0x7f;
                    }
                    bytes
                }),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Malformed {
                position: 3,
                error: hushwire::proto::DecodeError::UnknownType {
                    structure: "audit event",
                    tag: 0x7f,
                },
            }),
        },
        Case {
            name: "record 2 removed",
            records: published(&[0, 1, 3, 4, 5]),
            checkpoints: both(),
            expected: Err(AuditFault::Removed { sequence: 2 }),
        },
        Case {
            name: "a forged record claiming sequence 2, linked to record 1, inserted before record 2",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Other(forged(2, r1.hash())),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Inserted { sequence: 2 }),
        },
        Case {
            name: "a byte-identical copy of record 2 added after record 4",
            records: published(&[0, 1, 2, 3, 4, 2, 5]),
            checkpoints: both(),
            expected: Err(AuditFault::Duplicated { sequence: 2 }),
        },
        Case {
            name: "records 1 and 3 swapped",
            records: published(&[0, 3, 2, 1, 4, 5]),
            checkpoints: both(),
            expected: Err(AuditFault::Reordered { sequence: 1 }),
        },
        Case {
            name: "record 1 moved after record 3",
            records: published(&[0, 2, 3, 1, 4, 5]),
            checkpoints: both(),
            expected: Err(AuditFault::Reordered { sequence: 1 }),
        },
        Case {
            name: "a forged record that validly extends the chain (sequence 6, linked to record 5), placed before record 2",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Other(extension),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            // The same log as record 6 of a longer chain moved to position 2 (§8).
            expected: Err(AuditFault::Reordered { sequence: 2 }),
        },
        Case {
            name: "the same forged extension appended at the end (undetectable: one more unsigned record)",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
                Item::Other(extension),
            ],
            checkpoints: both(),
            expected: Ok(()),
        },
        Case {
            name: "a forged record claiming sequence 9, placed before record 2 (a stray that never finds its place)",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Other(forged(9, [0x99; 32])),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Inserted { sequence: 9 }),
        },
        Case {
            name: "a forged record claiming sequence 9 appended at the end",
            records: vec![
                Item::Published(0),
                Item::Published(1),
                Item::Published(2),
                Item::Published(3),
                Item::Published(4),
                Item::Published(5),
                Item::Other(forged(9, [0x99; 32])),
            ],
            checkpoints: both(),
            expected: Err(AuditFault::Removed { sequence: 6 }),
        },
        Case {
            name: "records 4 and 5 cut off the end, the checkpoint at 6 kept",
            records: published(&[0, 1, 2, 3]),
            checkpoints: both(),
            expected: Err(AuditFault::Truncated {
                checkpoint_count: 6,
                records: 4,
            }),
        },
        Case {
            name: "records 4 and 5 and the checkpoint at 6 all removed (undetectable: record 3 is unsigned)",
            records: published(&[0, 1, 2, 3]),
            checkpoints: published(&[0]),
            expected: Ok(()),
        },
        Case {
            name: "the checkpoint at 3 with a signature bit flipped (byte 66 xor 0x01)",
            records: all(),
            checkpoints: vec![Item::Other(bad_signature), Item::Published(1)],
            expected: Err(AuditFault::BadCheckpointSignature { count: 3 }),
        },
        Case {
            name: "the checkpoint at 6 signed by another key (secret 45×32)",
            records: all(),
            checkpoints: vec![Item::Published(0), Item::Other(other_signer)],
            expected: Err(AuditFault::BadCheckpointSignature { count: 6 }),
        },
        Case {
            name: "history from record 1 on rewritten and re-linked (record 1's time_ms + 1), checkpoints kept",
            records: rewritten(1),
            checkpoints: both(),
            expected: Err(AuditFault::CheckpointMismatch { count: 3 }),
        },
        Case {
            name: "history from record 4 on rewritten and re-linked (record 4's time_ms + 1), checkpoints kept",
            records: rewritten(4),
            checkpoints: both(),
            // Nothing after the checkpoint at 6: the evidence of one changed record.
            expected: Err(AuditFault::Modified { sequence: 5 }),
        },
        Case {
            name: "a second validly signed checkpoint at 3 naming record 3's hash (a fork)",
            records: all(),
            checkpoints: vec![Item::Published(0), Item::Other(fork), Item::Published(1)],
            expected: Err(AuditFault::CheckpointMismatch { count: 3 }),
        },
        Case {
            name: "a checkpoint of another chain (chain_id byte 0 xor 0x01)",
            records: all(),
            checkpoints: vec![Item::Published(0), Item::Other(other_chain)],
            expected: Err(AuditFault::WrongChain),
        },
    ];

    let public = signer.verifying_key();
    let mut out = Vec::new();
    for case in cases {
        let log: Vec<Vec<u8>> = case
            .records
            .iter()
            .map(|item| match item {
                Item::Published(i) => records
                    .get(*i)
                    .map(|r| r.to_bytes())
                    .ok_or("no such record"),
                Item::Other(r) => Ok(r.to_bytes()),
                Item::Undecodable(bytes) => Ok(bytes.clone()),
            })
            .collect::<Result<_, _>>()?;
        let given: Vec<AuditCheckpoint> = case
            .checkpoints
            .iter()
            .map(|item| match item {
                Item::Published(i) => checkpoints.get(*i).copied().ok_or("no such checkpoint"),
                Item::Other(c) => Ok(*c),
                Item::Undecodable(_) => Err("checkpoints are given decoded"),
            })
            .collect::<Result<_, _>>()?;
        let verdict = verify_encoded(chain_id, public, &log, &given);
        if verdict.map(|_| ()) != case.expected {
            return Err(format!(
                "audit case `{}`: the verifier says {verdict:?}, docs/audit.md §8 says {:?}",
                case.name, case.expected
            )
            .into());
        }
        // Where every record decodes, audit::verify itself says the same.
        let decoded: Result<Vec<AuditRecord>, _> = log
            .iter()
            .map(|bytes| AuditRecord::from_bytes(bytes))
            .collect();
        if let Ok(decoded) = decoded
            && audit::verify(chain_id, &public, &decoded, &given) != verdict
        {
            return Err(format!("audit case `{}`: audit::verify disagrees", case.name).into());
        }
        out.push(json!({
            "name": case.name,
            "records": case.records.iter().map(|item| match item {
                Item::Published(i) => json!(i),
                Item::Other(r) => json!({ "encoded": hex::encode(r.to_bytes()) }),
                Item::Undecodable(bytes) => json!({ "encoded": hex::encode(bytes) }),
            }).collect::<Vec<_>>(),
            "checkpoints": case.checkpoints.iter().map(|item| match item {
                Item::Published(i) => json!(i),
                Item::Other(c) => json!({ "encoded": hex::encode(c.to_bytes()) }),
                Item::Undecodable(bytes) => json!({ "encoded": hex::encode(bytes) }),
            }).collect::<Vec<_>>(),
            "verdict": match verdict {
                Ok(report) => report_json(&report),
                Err(fault) => json!({ "fault": fault_json(fault) }),
            },
        }));
    }
    Ok(json!({
        "description": "Tampered variants of this chain and what audit::verify reports (docs/audit.md §8). In `records` and `checkpoints` a number names a published record or checkpoint of this file by index; an object gives other bytes. The verifier is given the records in this order (as bytes: one that does not decode is Malformed at its position) and the checkpoints sorted by count, each pushed right after the record at its count's position (docs/audit.md §7). `verdict` is the report or the first fault.",
        "cases": out,
    }))
}
