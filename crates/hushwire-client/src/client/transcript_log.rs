//! Appending to the sealed transcripts and signing their checkpoints, inside the caller's
//! transaction (`docs/client.md` §7).

use hushwire::Account;
use hushwire::proto::audit::{self, AuditEvent};
use hushwire::proto::codec::Codec as _;
use hushwire::transcript::{TranscriptCheckpoint, TranscriptRecord, TranscriptWriter};
use sqlx::SqliteConnection;

use crate::error::{ClientError, Result};
use crate::os::{now_ms, rng};
use crate::store;

use super::{Client, session_error};

impl Client {
    pub(super) async fn append_transcript(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        record: &TranscriptRecord,
    ) -> Result<u64> {
        let mut rng = rng();
        let mut writer = match store::transcript_writer(c, contact_id).await? {
            Some(sealed) => TranscriptWriter::unseal(&sealed, &self.inner.storage_key)
                .map_err(|_| ClientError::CorruptStore("transcript writer"))?,
            None => TranscriptWriter::new(self.inner.options.checkpoint_interval, &mut rng),
        };
        let sequence = writer.len();
        let appended = writer
            .append(record, account.identity(), now_ms(), &mut rng)
            .map_err(session_error)?;
        store::put_transcript_record(c, contact_id, sequence, &appended.record.to_bytes()).await?;
        if let Some(checkpoint) = appended.checkpoint {
            self.store_checkpoint(c, account, contact_id, &writer, &checkpoint)
                .await?;
        }
        store::put_transcript_writer(
            c,
            contact_id,
            &writer.seal(&self.inner.storage_key, &mut rng),
        )
        .await?;
        Ok(sequence)
    }

    /// Stores a transcript checkpoint and its audit record.
    pub(super) async fn store_checkpoint(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        writer: &TranscriptWriter,
        checkpoint: &TranscriptCheckpoint,
    ) -> Result<()> {
        store::put_transcript_checkpoint(c, contact_id, checkpoint.count, &checkpoint.to_bytes())
            .await?;
        let event = AuditEvent::TranscriptCheckpointed {
            transcript: audit::TranscriptId(writer.id().0),
            records: checkpoint.count,
        };
        self.audit(c, account, event).await
    }

    /// Signs a checkpoint of every transcript as it stands now, so that no record is left in
    /// an unsigned tail (run before an export or at the end of a shift).
    pub async fn checkpoint_transcripts(&self) -> Result<u64> {
        self.sign_checkpoints(false).await
    }

    /// Signs a checkpoint of each transcript that has records after its last checkpoint (an
    /// unsigned tail, `docs/transcripts.md` §5.7), and of no other: run when a session of
    /// receiving or chatting ends, so a short conversation is not left wholly unsigned and
    /// repeated runs add no checkpoints. Returns how many transcripts were signed.
    pub async fn sign_unsigned_tails(&self) -> Result<u64> {
        self.sign_checkpoints(true).await
    }

    /// Signs a checkpoint of every transcript (of those with an unsigned tail only, if
    /// `only_unsigned`), then of the device's audit chain: always when signing every
    /// transcript, and only if a transcript was signed otherwise. One transaction.
    async fn sign_checkpoints(&self, only_unsigned: bool) -> Result<u64> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut signed = 0;
        for contact_id in store::transcript_contacts(&mut tx).await? {
            let Some(sealed) = store::transcript_writer(&mut tx, contact_id).await? else {
                continue;
            };
            let writer = TranscriptWriter::unseal(&sealed, &self.inner.storage_key)
                .map_err(|_| ClientError::CorruptStore("transcript writer"))?;
            if only_unsigned
                && store::transcript_signed_count(&mut tx, contact_id).await? >= writer.len()
            {
                continue;
            }
            let checkpoint = writer.checkpoint(state.account.identity(), now_ms());
            self.store_checkpoint(&mut tx, &state.account, contact_id, &writer, &checkpoint)
                .await?;
            signed += 1;
        }
        if !only_unsigned || signed > 0 {
            self.checkpoint_audit(&mut tx, &state.account).await?;
        }
        tx.commit().await?;
        Ok(signed)
    }
}
