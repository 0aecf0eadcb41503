//! The audit verifier: checks a log as a stream in bounded memory and names the first fault.

use core::borrow::Borrow;
use core::fmt;
use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use super::{
    AuditCheckpoint, AuditRecord, DUPLICATE_WINDOW, MAX_PENDING_CHECKPOINTS, genesis_hash,
};
use crate::codec::{Codec, DecodeError};

/// What a successful verification established.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AuditReport {
    /// Records verified, all in order and linked.
    pub records: u64,
    /// Checkpoints whose signature verified and whose head matched the log.
    pub checkpoints: u64,
    /// Hash of the last record (the genesis hash for an empty log).
    pub head_hash: [u8; 32],
    /// Records after the last checkpoint. Nothing signed covers them: if records were cut off
    /// the end of the log, or the last of them was altered, no verifier can tell.
    pub unsigned_tail: u64,
}

/// The first problem found in a log, located. Sequence numbers are those the records should
/// carry (their position in an untampered chain). `docs/audit.md` gives the decision rules.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditFault {
    /// The record at stream `position` (counting from 0) could not be decoded.
    Malformed {
        /// How many records were pushed before it.
        position: u64,
        /// Why it could not be decoded.
        error: DecodeError,
    },
    /// The record at `sequence` is not the one that was logged: its hash disagrees with what
    /// the next record or a checkpoint says, or its own link or sequence field was changed.
    Modified {
        /// The altered record.
        sequence: u64,
    },
    /// No record with `sequence` appears (the first missing one, when several are).
    Removed {
        /// The first missing sequence number.
        sequence: u64,
    },
    /// A record that is not part of the chain claims `sequence` (which another record also
    /// claims, or which no place in the chain has room for).
    Inserted {
        /// The sequence number the extra record claims.
        sequence: u64,
    },
    /// A byte-identical second copy of record `sequence` appears.
    Duplicated {
        /// The repeated record.
        sequence: u64,
    },
    /// Every record is present but not in order: `sequence` is the first whose place holds
    /// another record; it appears later (or the record in its place belongs later).
    Reordered {
        /// The first sequence number out of place.
        sequence: u64,
    },
    /// A checkpoint covers `checkpoint_count` records but the log ends after `records`: the
    /// end of the log was cut off.
    Truncated {
        /// The largest count a checkpoint names.
        checkpoint_count: u64,
        /// Records the log holds.
        records: u64,
    },
    /// A checkpoint's signature does not verify under the expected key: forged, altered, or
    /// signed by someone else.
    BadCheckpointSignature {
        /// The count the checkpoint claims.
        count: u64,
    },
    /// A validly signed checkpoint names a head the log does not have although the log links
    /// consistently around it (history was rewritten and re-linked), or two validly signed
    /// checkpoints name different heads for the same count (the writer forked its chain).
    CheckpointMismatch {
        /// The checkpoint's count.
        count: u64,
    },
    /// A checkpoint was pushed when it could no longer be checked: after records past its
    /// count were consumed, or while [`MAX_PENDING_CHECKPOINTS`] others were waiting. A use
    /// error, not evidence of tampering: push each checkpoint right after the record it covers
    /// (as [`verify`] does) or before it.
    CheckpointOutOfOrder {
        /// The checkpoint's count.
        count: u64,
    },
    /// The log or a checkpoint belongs to another chain: record 0 does not link to this chain's
    /// genesis hash although it is intact, or a checkpoint names another chain id.
    WrongChain,
}

impl fmt::Display for AuditFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { position, error } => {
                write!(f, "record at position {position} is malformed: {error}")
            }
            Self::Modified { sequence } => write!(f, "record {sequence} was modified"),
            Self::Removed { sequence } => write!(f, "record {sequence} was removed"),
            Self::Inserted { sequence } => {
                write!(f, "a record claiming sequence {sequence} was inserted")
            }
            Self::Duplicated { sequence } => write!(f, "record {sequence} appears twice"),
            Self::Reordered { sequence } => write!(f, "records are out of order at {sequence}"),
            Self::Truncated {
                checkpoint_count,
                records,
            } => write!(
                f,
                "log truncated: a checkpoint covers {checkpoint_count} records, the log holds {records}"
            ),
            Self::BadCheckpointSignature { count } => {
                write!(f, "checkpoint at count {count} has an invalid signature")
            }
            Self::CheckpointMismatch { count } => write!(
                f,
                "checkpoint at count {count} names a head the log does not have"
            ),
            Self::CheckpointOutOfOrder { count } => write!(
                f,
                "checkpoint at count {count} was pushed too late or too early to be checked"
            ),
            Self::WrongChain => f.write_str("the log belongs to another audit chain"),
        }
    }
}

impl std::error::Error for AuditFault {}

/// A record seen but not (yet) placed in the chain.
#[derive(Clone, Copy, Debug)]
struct Loose {
    sequence: u64,
    hash: [u8; 32],
    previous_hash: [u8; 32],
}

impl Loose {
    fn of(record: &AuditRecord, hash: [u8; 32]) -> Self {
        Self {
            sequence: record.sequence,
            hash,
            previous_hash: record.previous_hash,
        }
    }
}

/// Where the verifier is. Every mode but `InOrder` follows an anomaly whose classification
/// needs records that have not arrived yet.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// No anomaly so far.
    InOrder,
    /// The last record linked to the head but carried the wrong sequence number. Its sequence
    /// field was changed (Modified), unless the next record is the real successor (Inserted).
    Renumbered(Loose),
    /// The last record skipped ahead and did not link to the head. If the next record is the
    /// expected one and links to the head, the skipped record is a stray; otherwise records are
    /// missing here (Removed, or Reordered if the first missing one turns up later).
    SkippedAhead(Loose),
    /// A stray record was set aside and the chain went on around it. When the chain reaches the
    /// stray's sequence it is resolved: Reordered if it fits there exactly, Duplicated or
    /// Inserted if its sequence turns up a second time, Inserted otherwise.
    Stray {
        stray: Loose,
        /// The sequence expected where the stray appeared.
        missing: u64,
    },
    /// Records are missing from `missing` on. Only sequence numbers are watched now: Reordered
    /// if `missing` turns up, Removed at the end otherwise.
    Gap { missing: u64 },
}

/// What is known about the newest record placed in the chain (the tip). Its verdict waits for
/// the evidence that follows it: the next record's link and any checkpoint at its count.
#[derive(Clone, Copy, Debug)]
struct Tip {
    /// Whether its `previous_hash` matched the record before (or the genesis hash).
    in_link_ok: bool,
    /// Whether a checkpoint confirmed the record before it (or the genesis hash).
    predecessor_signed: bool,
    /// The head hash a checkpoint at its count signed, if one arrived.
    signed_head: Option<[u8; 32]>,
}

/// Verifies an audit log as a stream: push records in log order and checkpoints as they come,
/// then [`finish`](AuditVerifier::finish). Memory is bounded: the head, the last
/// [`DUPLICATE_WINDOW`] record hashes, and checkpoints waiting for their records.
///
/// Push each checkpoint before the record after the last one it covers (right after that
/// record, or any time earlier); [`verify`] does this for logs in memory. The first fault is
/// kept: later pushes return it again. Some faults can only be settled by later records (a
/// missing record is Removed only if it never turns up), so `push_*` may return `Ok` for a log
/// that `finish` rejects.
#[derive(Debug)]
pub struct AuditVerifier {
    chain_id: [u8; 16],
    key: VerifyingKey,
    genesis: [u8; 32],
    genesis_signed: bool,
    /// Records pushed, in stream order.
    position: u64,
    /// Records placed in the chain: sequences `0..accepted` arrived in order.
    accepted: u64,
    /// Hash of record `accepted - 1`, or the genesis hash.
    head: [u8; 32],
    tip: Option<Tip>,
    mode: Mode,
    /// Checkpoints whose count is ahead of `accepted`: count → signed head.
    pending: BTreeMap<u64, [u8; 32]>,
    /// `(sequence, hash)` of recent records, at index `sequence % DUPLICATE_WINDOW`.
    recent: Vec<(u64, [u8; 32])>,
    checkpoints: u64,
    signed_count: u64,
    fault: Option<AuditFault>,
}

impl AuditVerifier {
    /// A verifier for the chain `chain_id`, whose checkpoints `signer_public` signs.
    pub fn new(chain_id: [u8; 16], signer_public: VerifyingKey) -> Self {
        let genesis = genesis_hash(&chain_id);
        Self {
            chain_id,
            key: signer_public,
            genesis,
            genesis_signed: false,
            position: 0,
            accepted: 0,
            head: genesis,
            tip: None,
            mode: Mode::InOrder,
            pending: BTreeMap::new(),
            recent: Vec::new(),
            checkpoints: 0,
            signed_count: 0,
            fault: None,
        }
    }

    /// Pushes the next record of the log.
    pub fn push_record(&mut self, record: &AuditRecord) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let result = self.step(record);
        self.position = self.position.saturating_add(1);
        self.keep(result)
    }

    /// Decodes and pushes the next record of the log; undecodable bytes are
    /// [`AuditFault::Malformed`] at this position.
    pub fn push_encoded_record(&mut self, bytes: &[u8]) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        match AuditRecord::from_bytes(bytes) {
            Ok(record) => self.push_record(&record),
            Err(error) => self.keep(Err(AuditFault::Malformed {
                position: self.position,
                error,
            })),
        }
    }

    /// Pushes a checkpoint: its chain id and signature are checked at once, its head when the
    /// record it covers is in.
    pub fn push_checkpoint(&mut self, checkpoint: &AuditCheckpoint) -> Result<(), AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let result = self.witness(checkpoint);
        self.keep(result)
    }

    /// Ends the log: settles what was waiting for more records and reports.
    pub fn finish(self) -> Result<AuditReport, AuditFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        match self.mode {
            Mode::Gap { missing } => return Err(AuditFault::Removed { sequence: missing }),
            Mode::Renumbered(_) => {
                return Err(AuditFault::Modified {
                    sequence: self.accepted,
                });
            }
            Mode::SkippedAhead(_) => {
                self.settle_tip(None)?;
                return Err(AuditFault::Removed {
                    sequence: self.accepted,
                });
            }
            Mode::Stray { stray, missing } => {
                let fits = self.settle_tip(None).is_ok()
                    && self.accepted == stray.sequence
                    && stray.previous_hash == self.head;
                return Err(if fits {
                    AuditFault::Reordered { sequence: missing }
                } else {
                    AuditFault::Inserted {
                        sequence: stray.sequence,
                    }
                });
            }
            Mode::InOrder => self.settle_tip(None)?,
        }
        if let Some((&checkpoint_count, _)) = self.pending.last_key_value() {
            return Err(AuditFault::Truncated {
                checkpoint_count,
                records: self.accepted,
            });
        }
        Ok(AuditReport {
            records: self.accepted,
            checkpoints: self.checkpoints,
            head_hash: self.head,
            unsigned_tail: self.accepted.saturating_sub(self.signed_count),
        })
    }

    fn keep(&mut self, result: Result<(), AuditFault>) -> Result<(), AuditFault> {
        if let Err(fault) = result {
            self.fault = Some(fault);
        }
        result
    }

    fn step(&mut self, record: &AuditRecord) -> Result<(), AuditFault> {
        let hash = record.hash();
        let expected = self.accepted;
        match self.mode {
            Mode::InOrder => self.in_order(record, hash),
            Mode::Gap { missing } => {
                if record.sequence == missing {
                    Err(AuditFault::Reordered { sequence: missing })
                } else {
                    Ok(())
                }
            }
            Mode::Renumbered(loose) => {
                if record.sequence == expected && record.previous_hash == self.head {
                    // The chain goes on from the head without it: it was slipped in.
                    Err(AuditFault::Inserted {
                        sequence: loose.sequence,
                    })
                } else {
                    Err(AuditFault::Modified { sequence: expected })
                }
            }
            Mode::SkippedAhead(loose) => {
                if record.sequence == expected && record.previous_hash == self.head {
                    self.mode = Mode::Stray {
                        stray: loose,
                        missing: expected,
                    };
                    self.in_order(record, hash)
                } else {
                    self.settle_tip(None)?;
                    self.mode = Mode::Gap { missing: expected };
                    if record.sequence == expected {
                        Err(AuditFault::Reordered { sequence: expected })
                    } else {
                        Ok(())
                    }
                }
            }
            Mode::Stray { stray, missing } => {
                if record.sequence == stray.sequence {
                    return Err(if hash == stray.hash {
                        AuditFault::Duplicated {
                            sequence: stray.sequence,
                        }
                    } else {
                        AuditFault::Inserted {
                            sequence: stray.sequence,
                        }
                    });
                }
                let inserted = AuditFault::Inserted {
                    sequence: stray.sequence,
                };
                if expected == stray.sequence {
                    // The stray's own place: it belongs here if it links to the head and the
                    // next record links to it.
                    return Err(
                        if stray.previous_hash == self.head && record.previous_hash == stray.hash {
                            AuditFault::Reordered { sequence: missing }
                        } else {
                            inserted
                        },
                    );
                }
                if record.sequence == expected && record.previous_hash == self.head {
                    // A second fault before the stray is placed: the stray is the first, and
                    // it cannot be a moved record any more.
                    self.in_order(record, hash).map_err(|_| inserted)
                } else {
                    Err(inserted)
                }
            }
        }
    }

    /// Handles a record while everything before it is in order.
    fn in_order(&mut self, record: &AuditRecord, hash: [u8; 32]) -> Result<(), AuditFault> {
        let expected = self.accepted;
        let links = record.previous_hash == self.head;
        if record.sequence == expected {
            self.settle_tip(Some(links))?;
            self.accept(record.sequence, hash, links);
            Ok(())
        } else if links {
            self.settle_tip(Some(true))?;
            self.mode = Mode::Renumbered(Loose::of(record, hash));
            Ok(())
        } else if record.sequence < expected {
            // A sequence number seen before. A repeat of the tip's explains a broken link into
            // the tip (the tip was the extra record), so the tip is not judged first then.
            if record.sequence.saturating_add(1) != expected {
                self.settle_tip(None)?;
            }
            Err(self.repeated(record.sequence, hash))
        } else {
            self.mode = Mode::SkippedAhead(Loose::of(record, hash));
            Ok(())
        }
    }

    /// Classifies a second record with `sequence`.
    fn repeated(&self, sequence: u64, hash: [u8; 32]) -> AuditFault {
        let slot = usize::try_from(sequence % DUPLICATE_WINDOW).unwrap_or(0);
        match self.recent.get(slot) {
            Some(&(seen, seen_hash)) if seen == sequence && seen_hash == hash => {
                AuditFault::Duplicated { sequence }
            }
            // Different content, or too far back to compare: reported as the more serious.
            _ => AuditFault::Inserted { sequence },
        }
    }

    /// Places a record at the end of the chain.
    fn accept(&mut self, sequence: u64, hash: [u8; 32], in_link_ok: bool) {
        let predecessor_signed = match &self.tip {
            Some(tip) => tip.signed_head == Some(self.head),
            None => self.genesis_signed,
        };
        self.head = hash;
        self.accepted = self.accepted.saturating_add(1);
        let slot = usize::try_from(sequence % DUPLICATE_WINDOW).unwrap_or(0);
        match self.recent.get_mut(slot) {
            Some(entry) => *entry = (sequence, hash),
            None => self.recent.push((sequence, hash)),
        }
        self.tip = Some(Tip {
            in_link_ok,
            predecessor_signed,
            signed_head: self.pending.remove(&self.accepted),
        });
    }

    /// Judges the tip once the evidence after it is in. `successor_links` is whether the next
    /// record links to it (`None`: there is no next record to ask).
    ///
    /// With its own link intact, the tip is wrong only if a checkpoint disagrees with it. With
    /// its link broken, either it (its `previous_hash`) or its predecessor (any other byte) was
    /// changed: a checkpoint on the predecessor, then a checkpoint on the tip, then the next
    /// record's link decide which; with no evidence the earlier record is named.
    fn settle_tip(&self, successor_links: Option<bool>) -> Result<(), AuditFault> {
        let Some(tip) = &self.tip else {
            return Ok(());
        };
        let sequence = self.accepted.saturating_sub(1);
        let signed = tip.signed_head.map(|head| head == self.head);
        if tip.in_link_ok {
            return match signed {
                // The next record vouches for the tip as it is, the signature does not: the
                // log was re-linked after the fact.
                Some(false) if successor_links == Some(true) => {
                    Err(AuditFault::CheckpointMismatch {
                        count: self.accepted,
                    })
                }
                Some(false) => Err(AuditFault::Modified { sequence }),
                _ => Ok(()),
            };
        }
        if tip.predecessor_signed {
            return Err(AuditFault::Modified { sequence });
        }
        let tip_intact = signed.or(successor_links).unwrap_or(true);
        Err(match (tip_intact, sequence.checked_sub(1)) {
            (false, _) => AuditFault::Modified { sequence },
            (true, Some(predecessor)) => AuditFault::Modified {
                sequence: predecessor,
            },
            // Record 0 is intact but does not link to this chain's genesis.
            (true, None) => AuditFault::WrongChain,
        })
    }

    fn witness(&mut self, checkpoint: &AuditCheckpoint) -> Result<(), AuditFault> {
        let count = checkpoint.count;
        if checkpoint.chain_id != self.chain_id {
            return Err(AuditFault::WrongChain);
        }
        if !checkpoint.verify(&self.key) {
            return Err(AuditFault::BadCheckpointSignature { count });
        }
        self.checkpoints = self.checkpoints.saturating_add(1);
        self.signed_count = self.signed_count.max(count);
        if matches!(self.mode, Mode::Gap { .. }) {
            // The log is already known to be broken; only sequence numbers matter now.
            return Ok(());
        }
        let head = checkpoint.head_hash;
        if count < self.accepted {
            return Err(AuditFault::CheckpointOutOfOrder { count });
        }
        if count == self.accepted {
            match &mut self.tip {
                None if head == self.genesis => self.genesis_signed = true,
                None => return Err(AuditFault::CheckpointMismatch { count }),
                Some(tip) => match tip.signed_head {
                    Some(earlier) if earlier != head => {
                        return Err(AuditFault::CheckpointMismatch { count });
                    }
                    _ => tip.signed_head = Some(head),
                },
            }
            return Ok(());
        }
        match self.pending.get(&count) {
            Some(earlier) if *earlier != head => Err(AuditFault::CheckpointMismatch { count }),
            Some(_) => Ok(()),
            None if self.pending.len() >= MAX_PENDING_CHECKPOINTS => {
                Err(AuditFault::CheckpointOutOfOrder { count })
            }
            None => {
                self.pending.insert(count, head);
                Ok(())
            }
        }
    }
}

/// Verifies a log held in memory: `records` in log order, `checkpoints` in any order. Each
/// checkpoint is pushed right after the record at its count's position in `records`.
pub fn verify<I>(
    chain_id: [u8; 16],
    signer: &VerifyingKey,
    records: I,
    checkpoints: &[AuditCheckpoint],
) -> Result<AuditReport, AuditFault>
where
    I: IntoIterator,
    I::Item: Borrow<AuditRecord>,
{
    let mut due: Vec<&AuditCheckpoint> = checkpoints.iter().collect();
    due.sort_by_key(|c| c.count);
    let mut due = due.into_iter().peekable();
    let mut verifier = AuditVerifier::new(chain_id, *signer);
    let mut pushed = 0u64;
    for record in records {
        while let Some(checkpoint) = due.next_if(|c| c.count <= pushed) {
            verifier.push_checkpoint(checkpoint)?;
        }
        verifier.push_record(record.borrow())?;
        pushed = pushed.saturating_add(1);
    }
    for checkpoint in due {
        verifier.push_checkpoint(checkpoint)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::test_support::*;
    use crate::audit::{AuditChain, AuditEvent, TranscriptId};
    use crate::codec::Codec;

    // ---- verification: untouched logs ----

    #[test]
    fn ten_thousand_untouched_records_verify() {
        let at: Vec<u64> = (0..=10).map(|k| k * 1000).collect();
        let (records, checkpoints) = chain_with(10_000, &at);
        let report = check(&records, &checkpoints).unwrap();
        assert_eq!(
            report,
            AuditReport {
                records: 10_000,
                checkpoints: 11,
                head_hash: records[9_999].hash(),
                unsigned_tail: 0,
            }
        );

        // The same log as a stream of encoded records, every checkpoint pushed up front.
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        for c in checkpoints.iter().rev() {
            v.push_checkpoint(c).unwrap();
        }
        for r in &records {
            v.push_encoded_record(&r.to_bytes()).unwrap();
        }
        assert_eq!(v.finish(), Ok(report));
    }

    #[test]
    fn empty_and_unsigned_logs_verify_and_report_their_unsigned_tail() {
        assert_eq!(
            check(&[], &[]),
            Ok(AuditReport {
                records: 0,
                checkpoints: 0,
                head_hash: genesis_hash(&CHAIN),
                unsigned_tail: 0
            })
        );
        let (records, checkpoints) = chain_with(30, &[0, 10, 20]);
        let report = check(&records, &checkpoints).unwrap();
        assert_eq!(
            (report.records, report.checkpoints, report.unsigned_tail),
            (30, 3, 10)
        );
        let report = check(&records, &[]).unwrap();
        assert_eq!(report.unsigned_tail, 30);
    }

    #[test]
    fn checkpoints_may_come_in_any_order_and_more_than_once() {
        let (records, mut checkpoints) = chain_with(40, &[5, 17, 40]);
        checkpoints.reverse();
        checkpoints.push(checkpoints[1]);
        assert_eq!(check(&records, &checkpoints).unwrap().checkpoints, 4);
    }

    // ---- verification: checkpoint faults ----

    #[test]
    fn a_checkpoint_signed_by_another_key_fails() {
        let (records, _) = chain_with(10, &[]);
        let mut chain = AuditChain::resume(CHAIN, 10, records[9].hash());
        let forged = chain.checkpoint(&key(2), 5);
        assert_eq!(
            check(&records, &[forged]),
            Err(AuditFault::BadCheckpointSignature { count: 10 })
        );
        // The whole log re-signed under another key does not pass either.
        chain.append(
            6,
            AuditEvent::TranscriptShredded {
                transcript: TranscriptId([0; 16]),
            },
        );
        assert_eq!(
            verify(
                CHAIN,
                &key(2).verifying_key(),
                &records,
                &[chain.checkpoint(&key(1), 7)]
            ),
            Err(AuditFault::BadCheckpointSignature { count: 11 })
        );
    }

    #[test]
    fn another_chains_log_or_checkpoint_is_the_wrong_chain() {
        let (records, checkpoints) = chain_with(10, &[10]);
        let other = [0xa5; 16];
        let public = key(1).verifying_key();
        assert_eq!(
            verify(other, &public, &records, &[]),
            Err(AuditFault::WrongChain)
        );
        assert_eq!(
            verify(other, &public, &records[..0], &checkpoints),
            Err(AuditFault::WrongChain)
        );
        // A single foreign record with nothing after it is still attributed to the chain.
        assert_eq!(
            verify(other, &public, &records[..1], &[]),
            Err(AuditFault::WrongChain)
        );
    }

    #[test]
    fn a_consistently_rewritten_history_contradicts_its_checkpoint() {
        let (records, checkpoints) = chain_with(20, &[10]);
        // A writer re-creates the log from record 4 on with different events.
        let mut forger = AuditChain::resume(CHAIN, 4, records[3].hash());
        let mut rewritten = records[..4].to_vec();
        for r in &records[4..] {
            rewritten.push(forger.append(r.time_ms + 1, r.event));
        }
        assert_eq!(
            check(&rewritten, &checkpoints),
            Err(AuditFault::CheckpointMismatch { count: 10 })
        );
        // With nothing after the checkpoint's head, the rewrite looks like one changed record.
        assert_eq!(
            check(&rewritten[..10], &checkpoints),
            Err(AuditFault::Modified { sequence: 9 })
        );
    }

    #[test]
    fn two_signed_heads_for_one_count_are_a_fork() {
        let (records, checkpoints) = chain_with(10, &[5]);
        let fork = AuditCheckpoint::sign(&key(1), CHAIN, 5, [9; 32], 0);
        assert_eq!(
            check(&records, &[checkpoints[0], fork]),
            Err(AuditFault::CheckpointMismatch { count: 5 })
        );
        assert_eq!(
            check(&records, &[fork, checkpoints[0]]),
            Err(AuditFault::CheckpointMismatch { count: 5 })
        );
        let bad_genesis = AuditCheckpoint::sign(&key(1), CHAIN, 0, [9; 32], 0);
        assert_eq!(
            check(&records, &[bad_genesis]),
            Err(AuditFault::CheckpointMismatch { count: 0 })
        );
    }

    #[test]
    fn a_late_checkpoint_is_a_use_error_and_faults_stick() {
        let (records, checkpoints) = chain_with(10, &[3]);
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        for r in &records[..5] {
            v.push_record(r).unwrap();
        }
        let late = AuditFault::CheckpointOutOfOrder { count: 3 };
        assert_eq!(v.push_checkpoint(&checkpoints[0]), Err(late));
        assert_eq!(v.push_record(&records[5]), Err(late));
        assert_eq!(v.push_encoded_record(&[]), Err(late));
        assert_eq!(v.finish(), Err(late));
    }

    #[test]
    fn an_undecodable_record_is_located_by_position() {
        let (records, _) = chain_with(5, &[]);
        let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
        v.push_encoded_record(&records[0].to_bytes()).unwrap();
        v.push_encoded_record(&records[1].to_bytes()).unwrap();
        let mut broken = records[2].to_bytes();
        broken.pop();
        assert!(matches!(
            v.push_encoded_record(&broken),
            Err(AuditFault::Malformed { position: 2, .. })
        ));
    }

    // ---- verification: located tampering, by hand ----

    #[test]
    fn each_kind_of_tampering_is_named_where_it_happened() {
        let (records, checkpoints) = chain_with(12, &[6, 12]);
        let run = |f: &dyn Fn(&mut Vec<AuditRecord>)| {
            let mut log = records.clone();
            f(&mut log);
            check(&log, &checkpoints)
        };
        assert_eq!(
            run(&|log| log[4].time_ms += 1),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[4].previous_hash[31] ^= 1),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[4].sequence = 9),
            Err(AuditFault::Modified { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log[11].event = AuditEvent::RateLimited { device: device(9) }),
            Err(AuditFault::Modified { sequence: 11 })
        );
        assert_eq!(
            run(&|log| {
                log.remove(4);
            }),
            Err(AuditFault::Removed { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.insert(8, log[3])),
            Err(AuditFault::Duplicated { sequence: 3 })
        );
        assert_eq!(
            run(&|log| log.swap(4, 5)),
            Err(AuditFault::Reordered { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.swap(2, 9)),
            Err(AuditFault::Reordered { sequence: 2 })
        );
        assert_eq!(
            run(&|log| {
                let mut forged = log[4];
                forged.event = AuditEvent::RateLimited { device: device(9) };
                log.insert(5, forged);
            }),
            Err(AuditFault::Inserted { sequence: 4 })
        );
        assert_eq!(
            run(&|log| log.truncate(9)),
            Err(AuditFault::Truncated {
                checkpoint_count: 12,
                records: 9
            })
        );
    }

    /// docs/audit.md §8: a forged record that validly extends the chain is indistinguishable
    /// from the chain's true next record moved earlier, so placed earlier it is a move; strays
    /// that never find their place are Inserted under their own number, or, at the very end,
    /// records missing from the end of the chain.
    #[test]
    fn forged_records_beyond_the_end_are_judged_as_the_section_says() {
        let (records, checkpoints) = chain_with(12, &[6, 12]);
        let n = records.len() as u64;
        let forged = |sequence: u64, previous_hash: [u8; 32]| AuditRecord {
            sequence,
            time_ms: 7,
            event: AuditEvent::RateLimited { device: device(9) },
            previous_hash,
        };
        let extension = forged(n, records[11].hash());
        let with = |at: usize, r: AuditRecord| {
            let mut log = records.clone();
            log.insert(at, r);
            check(&log, &checkpoints)
        };
        assert_eq!(
            with(3, extension),
            Err(AuditFault::Reordered { sequence: 3 })
        );
        let report = with(12, extension).unwrap();
        assert_eq!((report.records, report.unsigned_tail), (13, 1));
        assert_eq!(
            with(3, forged(n + 3, [7; 32])),
            Err(AuditFault::Inserted { sequence: n + 3 })
        );
        assert_eq!(
            with(12, forged(n + 3, [7; 32])),
            Err(AuditFault::Removed { sequence: n })
        );
        assert_eq!(
            with(12, forged(n, [7; 32])),
            Err(AuditFault::Modified { sequence: n })
        );
        // Without the checkpoint at 12 nothing confirms record 11: the earlier record is named.
        let mut log = records.clone();
        log.push(forged(n, [7; 32]));
        assert_eq!(
            check(&log, &checkpoints[..1]),
            Err(AuditFault::Modified { sequence: n - 1 })
        );
    }

    proptest! {
        /// Any one byte of any record changed: located at that record.
        #[test]
        fn a_changed_byte_is_located((records, checkpoints, signed_end) in arb_log(),
                                     which in any::<prop::sample::Index>(),
                                     at in any::<prop::sample::Index>(),
                                     xor in 1u8..) {
            // The last record's content is unprotected when nothing signs it (documented).
            let n = records.len() - usize::from(!signed_end);
            if n == 0 {
                return Ok(());
            }
            let k = which.index(n);
            let mut v = AuditVerifier::new(CHAIN, key(1).verifying_key());
            let mut due: Vec<_> = checkpoints.clone();
            due.sort_by_key(|c| c.count);
            let mut due = due.into_iter().peekable();
            let mut result = Ok(());
            for (i, r) in records.iter().enumerate() {
                while let Some(c) = due.next_if(|c| c.count <= i as u64) {
                    result = result.and(v.push_checkpoint(&c));
                }
                let mut bytes = r.to_bytes();
                if i == k {
                    let j = at.index(bytes.len());
                    bytes[j] ^= xor;
                }
                result = result.and(v.push_encoded_record(&bytes));
            }
            for c in due {
                result = result.and(v.push_checkpoint(&c));
            }
            let outcome = result.and_then(|()| v.finish().map(|_| ()));
            let mut bytes = records[k].to_bytes();
            let j = at.index(bytes.len());
            bytes[j] ^= xor;
            match AuditRecord::from_bytes(&bytes) {
                Err(error) => prop_assert_eq!(
                    outcome,
                    Err(AuditFault::Malformed { position: k as u64, error })
                ),
                Ok(_) => prop_assert_eq!(outcome, Err(AuditFault::Modified { sequence: k as u64 })),
            }
        }

        #[test]
        fn a_dropped_record_is_located((records, checkpoints, signed_end) in arb_log(),
                                       which in any::<prop::sample::Index>()) {
            let n = records.len() as u64;
            let i = which.index(records.len());
            let mut log = records.clone();
            log.remove(i);
            let outcome = check(&log, &checkpoints);
            if i as u64 == n - 1 {
                // Dropping the last record is truncation: seen only if a checkpoint covers it.
                if signed_end {
                    let truncated = AuditFault::Truncated { checkpoint_count: n, records: n - 1 };
                    prop_assert_eq!(outcome, Err(truncated));
                } else {
                    prop_assert_eq!(outcome.map(|r| r.records), Ok(n - 1));
                }
            } else {
                prop_assert_eq!(outcome, Err(AuditFault::Removed { sequence: i as u64 }));
            }
        }

        #[test]
        fn a_duplicated_record_is_located((records, checkpoints, _) in arb_log(),
                                          which in any::<prop::sample::Index>(),
                                          to in any::<prop::sample::Index>()) {
            let i = which.index(records.len());
            let p = to.index(records.len() + 1);
            let mut log = records.clone();
            log.insert(p, records[i]);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Duplicated { sequence: i as u64 })
            );
        }

        #[test]
        fn swapped_records_are_located((records, checkpoints, _) in arb_log(),
                                       a in any::<prop::sample::Index>(),
                                       b in any::<prop::sample::Index>()) {
            let n = records.len();
            if n < 2 {
                return Ok(());
            }
            let i = a.index(n);
            let j = (i + 1 + b.index(n - 1)) % n;
            let mut log = records.clone();
            log.swap(i, j);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Reordered { sequence: i.min(j) as u64 })
            );
        }

        #[test]
        fn a_moved_record_is_located((records, checkpoints, _) in arb_log(),
                                     from in any::<prop::sample::Index>(),
                                     to in any::<prop::sample::Index>()) {
            let n = records.len();
            if n < 2 {
                return Ok(());
            }
            let i = from.index(n);
            let p = (i + 1 + to.index(n - 1)) % n;
            let mut log = records.clone();
            let moved = log.remove(i);
            log.insert(p, moved);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Reordered { sequence: i.min(p) as u64 })
            );
        }

        /// A forged record, claiming any sequence number and linking either where it stands or
        /// nowhere, inserted anywhere but after the last record (where it is an unsigned
        /// append, or a Modified record when a checkpoint covers its predecessor).
        #[test]
        fn an_inserted_record_is_located((records, checkpoints, _) in arb_log(),
                                         to in any::<prop::sample::Index>(),
                                         claim in 0u64..48,
                                         links in any::<bool>(),
                                         junk in any::<[u8; 32]>(),
                                         time_ms in any::<u64>(),
                                         event in arb_event()) {
            let p = to.index(records.len());
            let previous_hash = if links {
                if p == 0 { genesis_hash(&CHAIN) } else { records[p - 1].hash() }
            } else {
                junk
            };
            let forged = AuditRecord { sequence: claim, time_ms, event, previous_hash };
            prop_assume!(records.get(claim as usize) != Some(&forged));
            let mut log = records.clone();
            log.insert(p, forged);
            prop_assert_eq!(
                check(&log, &checkpoints),
                Err(AuditFault::Inserted { sequence: claim })
            );
        }

        /// Truncation is detected exactly when it cuts behind a checkpoint.
        #[test]
        fn truncation_behind_a_checkpoint_is_detected((records, checkpoints, _) in arb_log(),
                                                      keep in any::<prop::sample::Index>()) {
            let m = keep.index(records.len()) as u64;
            let signed = signed_count(&checkpoints);
            let outcome = check(&records[..m as usize], &checkpoints);
            if m < signed {
                let truncated = AuditFault::Truncated { checkpoint_count: signed, records: m };
                prop_assert_eq!(outcome, Err(truncated));
            } else {
                // Cut inside the unsigned tail: undetectable, and the report says how much of
                // what is left nothing signs.
                prop_assert_eq!(outcome.map(|r| r.unsigned_tail), Ok(m - signed));
            }
        }

        #[test]
        fn untouched_logs_verify((records, checkpoints, signed_end) in arb_log()) {
            let report = check(&records, &checkpoints).unwrap();
            let n = records.len() as u64;
            prop_assert_eq!(report.records, n);
            prop_assert_eq!(report.checkpoints, checkpoints.len() as u64);
            prop_assert_eq!(report.unsigned_tail, n - signed_count(&checkpoints));
            prop_assert_eq!(signed_end, report.unsigned_tail == 0);
        }
    }
}
