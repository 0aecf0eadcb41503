//! Sealed transcripts as the app and the auditor use them: list, verify and open the local
//! ones; export them re-sealed to auditor keys; read and verify an export with an auditor key.
//! Formats and guarantees: `docs/transcripts.md`.

use std::io::{Read, Write};

use hushwire::proto::audit::{self, AuditEvent};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::{Fingerprint, X25519PublicKey};
use hushwire::transcript::{
    AuditorKey, ExportItem, ExportReader, ExportWriter, SealedRecord, TranscriptCheckpoint,
    TranscriptManifest, TranscriptRecord, TranscriptReport, TranscriptVerifier, TranscriptWriter,
};
use sqlx::SqliteConnection;

use super::Client;
use crate::contact::ContactId;
use crate::error::{ClientError, Result};
use crate::os::{now_ms, rng};
use crate::store;

/// Records read from the store per query.
const PAGE: i64 = 512;

/// One local transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptInfo {
    /// Whose conversation.
    pub contact: ContactId,
    /// The contact's name.
    pub contact_name: String,
    /// The transcript id (hex).
    pub id: String,
    /// Records stored.
    pub records: u64,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Transcripts exported.
    pub transcripts: u64,
    /// Records exported.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// An export, read and verified: who signed it and its transcripts.
#[derive(Clone, Debug)]
pub struct AuditedExport {
    /// Fingerprint of the identity that signed the export (hex): the exporting device. Its
    /// signature covers every transcript's final state (`docs/transcripts.md` §6.6). When no
    /// expected exporter was given, the auditor must compare it with the device's.
    pub exporter: String,
    /// True if the caller gave the expected exporter and the export is signed by it.
    pub exporter_checked: bool,
    /// The transcripts, in the export's order.
    pub transcripts: Vec<AuditedTranscript>,
}

/// One transcript of an export, verified.
#[derive(Clone, Debug)]
pub struct AuditedTranscript {
    /// The transcript id (hex).
    pub id: String,
    /// Fingerprint of the identity that signed its checkpoints (hex).
    pub signer: String,
    /// What verification established.
    pub report: TranscriptReport,
}

fn fault(context: &str, e: impl core::fmt::Display) -> ClientError {
    ClientError::Transcript(format!("{context}: {e}"))
}

impl Client {
    async fn writer(
        &self,
        c: &mut SqliteConnection,
        contact: ContactId,
    ) -> Result<TranscriptWriter> {
        let sealed = store::transcript_writer(c, contact.0)
            .await?
            .ok_or_else(|| ClientError::Transcript("no messages with this contact yet".into()))?;
        TranscriptWriter::unseal(&sealed, self.storage_key())
            .map_err(|_| ClientError::CorruptStore("transcript writer"))
    }

    async fn checkpoints(
        &self,
        c: &mut SqliteConnection,
        contact: ContactId,
    ) -> Result<Vec<TranscriptCheckpoint>> {
        store::transcript_checkpoints(c, contact.0)
            .await?
            .iter()
            .map(|b| {
                TranscriptCheckpoint::from_bytes(b).map_err(|e| fault("a stored checkpoint", e))
            })
            .collect()
    }

    /// Every local transcript.
    pub async fn transcripts(&self) -> Result<Vec<TranscriptInfo>> {
        // Removed contacts keep their transcripts, under the name they had (§5.15).
        let contacts = self.contacts_including_removed().await?;
        let mut c = self.db().acquire().await?;
        let mut out = Vec::new();
        for contact_id in store::transcript_contacts(&mut c).await? {
            let contact = ContactId(contact_id);
            let writer = self.writer(&mut c, contact).await?;
            out.push(TranscriptInfo {
                contact,
                contact_name: contacts
                    .iter()
                    .find(|k| k.id == contact)
                    .map(|k| k.name.clone())
                    .unwrap_or_default(),
                id: hex::encode(writer.id().0),
                records: store::transcript_record_count(&mut c, contact_id).await?,
            });
        }
        Ok(out)
    }

    /// Verifies a contact's transcript as stored (every record authentic, chained, in order,
    /// none missing up to the last checkpoint) and returns its records. `progress` is called
    /// with (records read, records stored).
    pub async fn open_transcript(
        &self,
        contact: ContactId,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(TranscriptReport, Vec<TranscriptRecord>)> {
        // Lock order everywhere is state, then database connection: take what needs the state
        // before holding a connection. The read transaction is one snapshot: a message stored
        // meanwhile is not half in it.
        let signer = *self.identity_key().await.signing_key();
        let mut c = self.db().begin().await?;
        let writer = self.writer(&mut c, contact).await?;
        let total = store::transcript_record_count(&mut c, contact.0).await?;
        let checkpoints = self.checkpoints(&mut c, contact).await?;
        let mut verifier =
            TranscriptVerifier::new(writer.id(), writer.key().clone(), signer, checkpoints);
        let mut records = Vec::new();
        let mut pages = RecordPages::new(contact);
        let mut done = 0;
        while let Some(page) = pages.next(&mut c).await? {
            for sealed in &page {
                if let Some(record) = verifier.push(sealed) {
                    records.push(record);
                }
                done += 1;
            }
            progress(done, total);
        }
        let report = verifier
            .finish()
            .map_err(|e| fault("the local transcript", e))?;
        drop(c);
        let by = self.own_device_ref().await;
        self.audit_now(AuditEvent::TranscriptOpened {
            transcript: audit::TranscriptId(writer.id().0),
            by,
        })
        .await?;
        Ok((report, records))
    }

    /// Exports the transcripts of `contacts` (all if empty), sealed to `recipients` (1 to 16
    /// auditor public keys), into `out`. Memory stays bounded by one page of records and one
    /// 64 KiB chunk, whatever the transcripts' size. `progress` gets (records done, total).
    pub async fn export_transcripts(
        &self,
        contacts: &[ContactId],
        recipients: &[X25519PublicKey],
        out: &mut (dyn Write + Send),
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<ExportSummary> {
        // The identity signs the export at its end (`docs/transcripts.md` §6.6). Cloned now:
        // the lock order is state, then database connection, and the connection is held
        // until the end.
        let exporter = self.inner.state.lock().await.account.identity().clone();
        let identity = exporter.public().clone();
        // One snapshot for the whole export (WAL readers do not block the writer): each
        // transcript's announced record count matches the records that follow it.
        let mut c = self.db().begin().await?;
        let chosen: Vec<ContactId> = if contacts.is_empty() {
            store::transcript_contacts(&mut c)
                .await?
                .into_iter()
                .map(ContactId)
                .collect()
        } else {
            contacts.to_vec()
        };
        let mut total = 0;
        for contact in &chosen {
            total += store::transcript_record_count(&mut c, contact.0).await?;
        }
        let (mut export, header) = ExportWriter::new(recipients, &mut rng()).ok_or_else(|| {
            ClientError::Transcript(format!(
                "an export needs 1 to {} auditor keys",
                hushwire::transcript::MAX_RECIPIENTS
            ))
        })?;
        let mut summary = ExportSummary {
            transcripts: 0,
            records: 0,
            bytes: 0,
        };
        let mut write = |bytes: &[u8], summary: &mut ExportSummary| -> Result<()> {
            out.write_all(bytes)?;
            summary.bytes += bytes.len() as u64;
            Ok(())
        };
        write(&header, &mut summary)?;
        let mut exported = Vec::new();
        for contact in chosen {
            let writer = self.writer(&mut c, contact).await?;
            let count = store::transcript_record_count(&mut c, contact.0).await?;
            let checkpoints = self.checkpoints(&mut c, contact).await?;
            let manifest = TranscriptManifest {
                id: writer.id(),
                signer: identity.clone(),
                key: writer.key().clone(),
                record_count: count,
            };
            write(
                &export.begin_transcript(&manifest, &checkpoints),
                &mut summary,
            )?;
            let mut pages = RecordPages::new(contact);
            while let Some(page) = pages.next(&mut c).await? {
                for sealed in &page {
                    write(&export.record(sealed), &mut summary)?;
                    summary.records += 1;
                }
                progress(summary.records, total);
            }
            write(&export.end_transcript(), &mut summary)?;
            summary.transcripts += 1;
            exported.push(AuditEvent::TranscriptExported {
                transcript: audit::TranscriptId(writer.id().0),
                records: count,
                recipients: u8::try_from(recipients.len()).unwrap_or(u8::MAX),
            });
        }
        write(&export.finish(&exporter), &mut summary)?;
        out.flush()?;
        drop(c);
        for event in exported {
            self.audit_now(event).await?;
        }
        Ok(summary)
    }
}

impl Client {
    /// Writes an archive export now if archiving is configured and the last archive is older
    /// than its interval. The file appears under its final name only once complete (written
    /// as `.partial`, synced, renamed). Returns the path written, if any.
    pub async fn archive_if_due(&self) -> Result<Option<std::path::PathBuf>> {
        let Some(settings) = self.options().archive.clone() else {
            return Ok(None);
        };
        let now = now_ms();
        let last = {
            let mut c = self.db().acquire().await?;
            store::get_meta(&mut c, "last_archive_ms")
                .await?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map_or(0, u64::from_be_bytes)
        };
        let every = u64::try_from(settings.every.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < every {
            return Ok(None);
        }
        self.checkpoint_transcripts().await?;
        std::fs::create_dir_all(&settings.directory)?;
        let path = settings
            .directory
            .join(format!("hushwire-archive-{now}.hwx"));
        let partial = path.with_extension("hwx.partial");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        self.export_transcripts(&[], &settings.recipients, &mut file, &mut |_, _| {})
            .await?;
        let file = file
            .into_inner()
            .map_err(|e| ClientError::Io(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&partial, &path)?;
        let mut c = self.db().acquire().await?;
        store::put_meta(&mut c, "last_archive_ms", &now.to_be_bytes()).await?;
        tracing::info!("archive export written");
        Ok(Some(path))
    }
}

/// Reads a contact's stored records a page at a time, in stored order, so memory stays bounded
/// by one page whatever the transcript's size.
struct RecordPages {
    contact: ContactId,
    after_rowid: i64,
}

impl RecordPages {
    fn new(contact: ContactId) -> Self {
        Self {
            contact,
            after_rowid: -1,
        }
    }

    /// The next page, or `None` after the last record.
    async fn next(&mut self, c: &mut SqliteConnection) -> Result<Option<Vec<SealedRecord>>> {
        let page =
            store::transcript_records_page(c, self.contact.0, self.after_rowid, PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        self.after_rowid = *last;
        page.iter()
            .map(|(_, bytes)| {
                SealedRecord::from_bytes(bytes).map_err(|e| fault("a stored record", e))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// A transcript being read from an export: its manifest and checkpoints arrive before its
/// records.
struct Reading {
    manifest: TranscriptManifest,
    checkpoints: Vec<TranscriptCheckpoint>,
    verifier: Option<TranscriptVerifier>,
    records: Vec<TranscriptRecord>,
}

impl Reading {
    fn verifier(&mut self) -> &mut TranscriptVerifier {
        let manifest = &self.manifest;
        let checkpoints = &mut self.checkpoints;
        self.verifier.get_or_insert_with(|| {
            TranscriptVerifier::new(
                manifest.id,
                manifest.key.clone(),
                *manifest.signer.signing_key(),
                std::mem::take(checkpoints),
            )
        })
    }
}

/// Reads an export with an auditor key, verifies every transcript in it and the exporter's
/// signature over their final states, and only then hands each transcript's records to
/// `on_transcript`. If `exporter` is given, the export must be signed by that identity (else
/// an error naming the identity that did sign it); if not, [`AuditedExport::exporter`] says
/// who signed, for the auditor to compare. Any change to the file — one flipped byte, a cut,
/// an extension, a record forged by a recipient after the last checkpoint — is an error.
/// `progress` gets the bytes read so far.
///
/// The records of every transcript are held in memory until the signature at the end of the
/// export verifies (`docs/transcripts.md` §6.7).
pub fn read_export(
    input: &mut dyn Read,
    key: &AuditorKey,
    exporter: Option<&Fingerprint>,
    on_transcript: &mut dyn FnMut(&AuditedTranscript, Vec<TranscriptRecord>),
    progress: &mut dyn FnMut(u64),
) -> Result<AuditedExport> {
    let mut reader = match exporter {
        Some(fingerprint) => ExportReader::with_exporter(key, *fingerprint),
        None => ExportReader::new(key),
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut current: Option<Reading> = None;
    let mut verified: Vec<(AuditedTranscript, Vec<TranscriptRecord>)> = Vec::new();
    let mut read = 0u64;
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        let items = reader
            .feed(buffer.get(..n).unwrap_or_default())
            .map_err(|e| fault("the export", e))?;
        for item in items {
            match item {
                ExportItem::TranscriptStart(manifest) => {
                    current = Some(Reading {
                        manifest: *manifest,
                        checkpoints: Vec::new(),
                        verifier: None,
                        records: Vec::new(),
                    });
                }
                ExportItem::Checkpoint(c) => {
                    if let Some(r) = current.as_mut() {
                        r.checkpoints.push(c);
                    }
                }
                ExportItem::Record(sealed) => {
                    if let Some(r) = current.as_mut()
                        && let Some(record) = r.verifier().push(&sealed)
                    {
                        r.records.push(record);
                    }
                }
                ExportItem::TranscriptEnd => {
                    if let Some(mut r) = current.take() {
                        let id = hex::encode(r.manifest.id.0);
                        let signer = r.manifest.signer.fingerprint().to_string();
                        let verifier = r.verifier.take().unwrap_or_else(|| {
                            TranscriptVerifier::new(
                                r.manifest.id,
                                r.manifest.key.clone(),
                                *r.manifest.signer.signing_key(),
                                std::mem::take(&mut r.checkpoints),
                            )
                        });
                        let report = verifier
                            .finish()
                            .map_err(|e| fault(&format!("transcript {id}"), e))?;
                        verified.push((AuditedTranscript { id, signer, report }, r.records));
                    }
                }
            }
        }
        progress(read);
    }
    let found = reader
        .finish()
        .map_err(|e| fault("the export", e))?
        .fingerprint();
    let mut transcripts = Vec::with_capacity(verified.len());
    for (done, records) in verified {
        on_transcript(&done, records);
        transcripts.push(done);
    }
    Ok(AuditedExport {
        exporter: found.to_string(),
        exporter_checked: exporter.is_some(),
        transcripts,
    })
}
