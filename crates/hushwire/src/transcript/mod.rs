//! Sealed transcripts: the record a clinic must keep, kept without breaking end-to-end
//! encryption (`docs/transcripts.md`).
//!
//! A transcript belongs to one conversation on one device. Each [`TranscriptRecord`] is sealed
//! under the transcript's key and chained to the previous one by hash; the device signs a
//! [`TranscriptCheckpoint`] every N records and when it closes the transcript. A
//! [`TranscriptVerifier`] (the device itself, or an auditor) says exactly which record was
//! modified, removed, inserted or reordered, or whether records were cut off behind a
//! checkpoint. [`ExportWriter`] re-seals transcripts to auditors' keys as one streamed file that
//! keeps the signatures and adds the exporting device's own over every transcript's final
//! state, so the auditor trusts nobody who stored or received it.
//!
//! Everything here is sans-IO: the caller stores records and writes export bytes.

mod export;
mod record;
mod retention;
mod sealed;
mod verify;
mod writer;

pub use export::{
    AuditorKey, CHUNK_LEN, EXPORT_SIGNED_MESSAGE_LEN, EXPORT_VERSION, ExportError, ExportItem,
    ExportReader, ExportWriter, MAX_RECIPIENTS, TranscriptManifest,
};
pub use record::{ContentType, Direction, MAX_CONTENT_LEN, TranscriptRecord};
pub use retention::{RetentionPolicy, TranscriptActivity};
pub use sealed::{SealedRecord, TranscriptCheckpoint, TranscriptId, TranscriptKey, genesis_hash};
pub use verify::{TranscriptFault, TranscriptReport, TranscriptVerifier};
pub use writer::{AppendError, Appended, TranscriptWriter};
