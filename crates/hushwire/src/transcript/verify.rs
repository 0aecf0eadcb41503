//! Verifying a transcript in one streaming pass (`docs/transcripts.md` §5).
//!
//! The verifier holds the transcript key, so every record is authenticated on its own; the hash
//! links and signed checkpoints then prove that no record was removed, reordered, replaced by an
//! older version or cut off behind a checkpoint. Memory is O(checkpoints) plus 16 bytes per
//! record (its sequence number and whether it authenticated), so a 200 MB transcript of 1 KB
//! messages needs about 3 MB.

use core::fmt;
use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use super::record::TranscriptRecord;
use super::sealed::{
    SealedRecord, TranscriptCheckpoint, TranscriptId, TranscriptKey, genesis_hash,
};

/// The first problem found, located as precisely as the evidence allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranscriptFault {
    /// A checkpoint's signature does not verify under the expected signer (forged, or signed by
    /// someone else).
    BadCheckpointSignature {
        /// The checkpoint's record count.
        count: u64,
    },
    /// A checkpoint names another transcript.
    WrongTranscript,
    /// The record with this sequence number was altered: it fails authentication, or it is not
    /// the version of the record that its successor was chained to.
    Modified {
        /// Sequence number of the altered record.
        sequence: u64,
    },
    /// A record that does not authenticate was inserted before the genuine record at this
    /// position.
    Inserted {
        /// Position (0-based) of the inserted record.
        position: u64,
    },
    /// A genuine record appears a second time.
    Duplicated {
        /// Its sequence number.
        sequence: u64,
    },
    /// The record with this sequence number is missing.
    Removed {
        /// The missing sequence number.
        sequence: u64,
    },
    /// The record with this sequence number is present but not in its place.
    Reordered {
        /// Sequence number of the first record out of place.
        sequence: u64,
    },
    /// A checkpoint covers more records than are present: records were cut off.
    Truncated {
        /// Records the checkpoint covers.
        checkpoint_count: u64,
        /// Records present.
        records: u64,
    },
    /// Records follow a checkpoint that closed the transcript.
    RecordsAfterClose {
        /// Records the closing checkpoint covers.
        closed_at: u64,
    },
    /// The records are individually intact and in order, but do not hash to what a checkpoint
    /// signed (a different history than the one signed).
    CheckpointMismatch {
        /// The checkpoint's record count.
        count: u64,
    },
}

impl fmt::Display for TranscriptFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCheckpointSignature { count } => {
                write!(
                    f,
                    "checkpoint at {count} records is not signed by the expected identity"
                )
            }
            Self::WrongTranscript => f.write_str("a checkpoint belongs to another transcript"),
            Self::Modified { sequence } => write!(f, "record {sequence} was modified"),
            Self::Inserted { position } => {
                write!(f, "a forged record was inserted at position {position}")
            }
            Self::Duplicated { sequence } => write!(f, "record {sequence} appears twice"),
            Self::Removed { sequence } => write!(f, "record {sequence} was removed"),
            Self::Reordered { sequence } => write!(f, "record {sequence} is out of order"),
            Self::Truncated {
                checkpoint_count,
                records,
            } => write!(
                f,
                "transcript truncated: a checkpoint covers {checkpoint_count} records, {records} present"
            ),
            Self::RecordsAfterClose { closed_at } => {
                write!(
                    f,
                    "records follow the closing checkpoint at {closed_at} records"
                )
            }
            Self::CheckpointMismatch { count } => {
                write!(f, "records do not match the checkpoint at {count} records")
            }
        }
    }
}

impl std::error::Error for TranscriptFault {}

/// What a successful verification established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscriptReport {
    /// Records present, all authentic and in order.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Records after the last checkpoint: their presence is proven, but removal of such trailing
    /// records could not have been detected.
    pub unsigned_tail: u64,
    /// A closing checkpoint covers every record.
    pub closed: bool,
    /// Hash of the last record.
    pub head_hash: [u8; 32],
}

#[derive(Clone, Copy)]
struct Seen {
    sequence: u64,
    authentic: bool,
}

/// Streaming verifier: push every record in stored order, then [`TranscriptVerifier::finish`].
pub struct TranscriptVerifier {
    id: TranscriptId,
    key: TranscriptKey,
    checkpoints: BTreeMap<u64, TranscriptCheckpoint>,
    /// Checkpoints whose own checks failed, found on construction.
    checkpoint_fault: Option<TranscriptFault>,
    seen: Vec<Seen>,
    head: [u8; 32],
    /// Positions whose `previous_hash` is not the hash of the record stored before them.
    link_breaks: Vec<u64>,
    checkpoint_mismatch: Option<u64>,
}

impl TranscriptVerifier {
    /// Starts verifying transcript `id`, sealed under `key`, whose checkpoints `signer` must have
    /// signed.
    pub fn new(
        id: TranscriptId,
        key: TranscriptKey,
        signer: VerifyingKey,
        checkpoints: impl IntoIterator<Item = TranscriptCheckpoint>,
    ) -> Self {
        let mut checkpoint_fault = None;
        let mut by_count = BTreeMap::new();
        for c in checkpoints {
            let fault = if c.transcript != id {
                Some(TranscriptFault::WrongTranscript)
            } else if !c.verify(&signer) {
                Some(TranscriptFault::BadCheckpointSignature { count: c.count })
            } else {
                None
            };
            if fault.is_some() {
                checkpoint_fault = checkpoint_fault.or(fault);
                continue;
            }
            // Two valid checkpoints for one count (a later closing one) must agree on the head;
            // keep the closing one, which says more.
            match by_count.get(&c.count) {
                Some(TranscriptCheckpoint { head_hash, .. }) if *head_hash != c.head_hash => {
                    checkpoint_fault = checkpoint_fault
                        .or(Some(TranscriptFault::CheckpointMismatch { count: c.count }));
                }
                Some(existing) if existing.closed => {}
                _ => {
                    by_count.insert(c.count, c);
                }
            }
        }
        Self {
            head: genesis_hash(&id),
            id,
            key,
            checkpoints: by_count,
            checkpoint_fault,
            seen: Vec::new(),
            link_breaks: Vec::new(),
            checkpoint_mismatch: None,
        }
    }

    /// Checks the next stored record and returns its plaintext if it authenticates. Trust what
    /// it returns only once [`TranscriptVerifier::finish`] succeeds.
    pub fn push(&mut self, record: &SealedRecord) -> Option<TranscriptRecord> {
        let position = self.seen.len() as u64;
        let opened = record.open(&self.id, &self.key);
        if record.previous_hash != self.head {
            self.link_breaks.push(position);
        }
        self.head = record.hash(&self.id);
        if let Some(c) = self.checkpoints.get(&(position + 1))
            && c.head_hash != self.head
            && self.checkpoint_mismatch.is_none()
        {
            self.checkpoint_mismatch = Some(position + 1);
        }
        self.seen.push(Seen {
            sequence: record.sequence,
            authentic: opened.is_some(),
        });
        opened
    }

    /// The verdict.
    pub fn finish(self) -> Result<TranscriptReport, TranscriptFault> {
        if let Some(fault) = self.checkpoint_fault {
            return Err(fault);
        }
        if let Some(fault) = self.first_record_fault() {
            return Err(fault);
        }
        let records = self.seen.len() as u64;
        if self
            .checkpoints
            .get(&0)
            .is_some_and(|c| c.head_hash != genesis_hash(&self.id))
        {
            return Err(TranscriptFault::CheckpointMismatch { count: 0 });
        }
        if let Some(count) = self.checkpoint_mismatch {
            return Err(TranscriptFault::CheckpointMismatch { count });
        }
        let last = self.checkpoints.values().next_back();
        if let Some(c) = last
            && c.count > records
        {
            return Err(TranscriptFault::Truncated {
                checkpoint_count: c.count,
                records,
            });
        }
        if let Some(c) = self.checkpoints.values().find(|c| c.closed)
            && c.count < records
        {
            return Err(TranscriptFault::RecordsAfterClose { closed_at: c.count });
        }
        let covered = last.map_or(0, |c| c.count);
        Ok(TranscriptReport {
            records,
            checkpoints: self.checkpoints.len() as u64,
            unsigned_tail: records - covered,
            closed: last.is_some_and(|c| c.closed && c.count == records),
            head_hash: self.head,
        })
    }

    /// The fault at the first position where the stored records stop being the genuine
    /// sequence 0, 1, 2, … Rules, in order, for position `p`:
    /// 1. the record does not authenticate: if the next record is the genuine record `p`, or a
    ///    closing checkpoint already covers everything before it, a forged record was inserted;
    ///    otherwise record `p` was modified;
    /// 2. it claims a sequence number already seen: a duplicate;
    /// 3. it claims a later number: record `p` is later in the file (reordered) or nowhere
    ///    (removed);
    /// 4. it is record `p` but was chained to something other than the record before it: one of
    ///    the two is another version of itself. If record `p`'s own successor link is broken too
    ///    (or, for the last record, the checkpoint disagrees, or a checkpoint at count `p`
    ///    proves record `p - 1` genuine), record `p` is the odd one; otherwise record `p - 1` is.
    fn first_record_fault(&self) -> Option<TranscriptFault> {
        for (p, seen) in self.seen.iter().enumerate() {
            let p64 = p as u64;
            if !seen.authentic {
                let next = self.seen.get(p + 1);
                let closed_before = self
                    .checkpoints
                    .values()
                    .any(|c| c.closed && c.count <= p64);
                return Some(match next {
                    Some(n) if n.authentic && n.sequence == p64 => {
                        TranscriptFault::Inserted { position: p64 }
                    }
                    // Nothing genuine can follow a closing checkpoint: this record was added.
                    _ if closed_before => TranscriptFault::Inserted { position: p64 },
                    _ => TranscriptFault::Modified { sequence: p64 },
                });
            }
            if seen.sequence < p64 {
                return Some(TranscriptFault::Duplicated {
                    sequence: seen.sequence,
                });
            }
            if seen.sequence > p64 {
                let later = self
                    .seen
                    .iter()
                    .skip(p + 1)
                    .any(|s| s.authentic && s.sequence == p64);
                return Some(if later {
                    TranscriptFault::Reordered { sequence: p64 }
                } else {
                    TranscriptFault::Removed { sequence: p64 }
                });
            }
            if self.link_breaks.binary_search(&p64).is_ok() {
                // Records p-1 and p both authenticate but do not link: one of them is another
                // version of itself. The one whose *outgoing* link is also broken is the odd one
                // out (for the last record, the checkpoint plays the successor's part).
                // A checkpoint covering exactly records 0..p that matched proves record p-1
                // genuine.
                let predecessor_signed =
                    self.checkpoints.contains_key(&p64) && self.checkpoint_mismatch != Some(p64);
                let next_broken = self.link_breaks.binary_search(&(p64 + 1)).is_ok()
                    || (p + 1 == self.seen.len() && self.checkpoint_mismatch == Some(p64 + 1))
                    || predecessor_signed;
                let sequence = if next_broken || p == 0 { p64 } else { p64 - 1 };
                return Some(TranscriptFault::Modified { sequence });
            }
        }
        None
    }
}
