//! Appending to a transcript: seal each record into the hash chain, sign a checkpoint every
//! `checkpoint_interval` records and when the transcript is closed.

use core::fmt;

use hushwire_proto::Signer;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::record::{MAX_CONTENT_LEN, TranscriptRecord};
use super::sealed::{
    SealedRecord, TranscriptCheckpoint, TranscriptId, TranscriptKey, genesis_hash,
};
use crate::error::UnsealError;
use crate::seal::{self, StorageKey};

/// Kind byte of a sealed [`TranscriptWriter`] state.
pub const KIND_TRANSCRIPT_WRITER: u8 = 0x32;

/// Why a record could not be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The transcript was closed by a final checkpoint.
    Closed,
    /// The content exceeds [`MAX_CONTENT_LEN`].
    ContentTooLong {
        /// The content's length.
        len: usize,
    },
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("transcript is closed"),
            Self::ContentTooLong { len } => {
                write!(
                    f,
                    "record content of {len} bytes exceeds the limit of {MAX_CONTENT_LEN}"
                )
            }
        }
    }
}

impl std::error::Error for AppendError {}

/// What one append produced, for the caller to store (in one local transaction).
#[derive(Clone, Debug)]
pub struct Appended {
    /// The sealed record.
    pub record: SealedRecord,
    /// A checkpoint, if this record completed a checkpoint interval.
    pub checkpoint: Option<TranscriptCheckpoint>,
}

/// The writing end of one transcript. Persist it with [`TranscriptWriter::seal`] after every
/// append (in the same transaction as the sealed record).
#[derive(Clone)]
pub struct TranscriptWriter {
    id: TranscriptId,
    key: TranscriptKey,
    count: u64,
    head: [u8; 32],
    checkpoint_interval: u64,
    closed: bool,
}

impl TranscriptWriter {
    /// Starts a transcript: a fresh id (16 bytes from `rng`) and key (32 more). A checkpoint is
    /// signed after every `checkpoint_interval` records (at least 1).
    pub fn new<R: CryptoRng + ?Sized>(checkpoint_interval: u64, rng: &mut R) -> Self {
        let id = TranscriptId::generate(rng);
        let key = TranscriptKey::generate(rng);
        Self {
            head: genesis_hash(&id),
            id,
            key,
            count: 0,
            checkpoint_interval: checkpoint_interval.max(1),
            closed: false,
        }
    }

    /// The transcript's id.
    pub fn id(&self) -> TranscriptId {
        self.id
    }

    /// The transcript's key (for exports and for crypto-shredding bookkeeping).
    pub fn key(&self) -> &TranscriptKey {
        &self.key
    }

    /// Records appended so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True if nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hash of the last record (the genesis hash when empty).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// True once [`TranscriptWriter::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Seals `record` as the next entry (24-byte nonce from `rng`); signs a checkpoint with
    /// `signer` at `time_ms` if the interval is complete. On error nothing changes.
    pub fn append<R: CryptoRng + ?Sized>(
        &mut self,
        record: &TranscriptRecord,
        signer: &impl Signer,
        time_ms: u64,
        rng: &mut R,
    ) -> Result<Appended, AppendError> {
        if self.closed {
            return Err(AppendError::Closed);
        }
        if record.content.len() > MAX_CONTENT_LEN {
            return Err(AppendError::ContentTooLong {
                len: record.content.len(),
            });
        }
        let sealed = SealedRecord::seal(&self.id, &self.key, self.count, self.head, record, rng);
        self.head = sealed.hash(&self.id);
        self.count += 1;
        let checkpoint = self
            .count
            .is_multiple_of(self.checkpoint_interval)
            .then(|| self.checkpoint(signer, time_ms));
        Ok(Appended {
            record: sealed,
            checkpoint,
        })
    }

    /// Signs a checkpoint of the transcript as it stands.
    pub fn checkpoint(&self, signer: &impl Signer, time_ms: u64) -> TranscriptCheckpoint {
        TranscriptCheckpoint::sign(signer, self.id, self.count, self.head, time_ms, self.closed)
    }

    /// Closes the transcript: signs a final checkpoint; later appends fail.
    pub fn close(&mut self, signer: &impl Signer, time_ms: u64) -> TranscriptCheckpoint {
        self.closed = true;
        self.checkpoint(signer, time_ms)
    }

    /// Seals the writer's state under `key` (24-byte nonce from `rng`).
    pub fn seal<R: CryptoRng + ?Sized>(&self, key: &StorageKey, rng: &mut R) -> Vec<u8> {
        let pickle = VersionedWriterPickle::V1(WriterPickleV1 {
            id: self.id.0,
            key: self.key.to_bytes(),
            count: self.count,
            head: self.head,
            checkpoint_interval: self.checkpoint_interval,
            closed: self.closed,
        });
        let contents = Zeroizing::new(postcard::to_allocvec(&pickle).unwrap_or_default());
        seal::seal(KIND_TRANSCRIPT_WRITER, &contents, key, rng)
    }

    /// Opens a writer sealed by [`TranscriptWriter::seal`].
    pub fn unseal(sealed: &[u8], key: &StorageKey) -> Result<Self, UnsealError> {
        let contents = seal::unseal(KIND_TRANSCRIPT_WRITER, sealed, key)?;
        let pickle: VersionedWriterPickle =
            postcard::from_bytes(&contents).map_err(|_| UnsealError::InvalidContents)?;
        let VersionedWriterPickle::V1(p) = pickle;
        Ok(Self {
            id: TranscriptId(p.id),
            key: TranscriptKey::from_bytes(*p.key),
            count: p.count,
            head: p.head,
            checkpoint_interval: p.checkpoint_interval.max(1),
            closed: p.closed,
        })
    }
}

impl fmt::Debug for TranscriptWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranscriptWriter")
            .field("id", &self.id)
            .field("count", &self.count)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
enum VersionedWriterPickle {
    V1(WriterPickleV1),
}

#[derive(Serialize, Deserialize)]
struct WriterPickleV1 {
    id: [u8; 16],
    key: Zeroizing<[u8; 32]>,
    count: u64,
    head: [u8; 32],
    checkpoint_interval: u64,
    closed: bool,
}
