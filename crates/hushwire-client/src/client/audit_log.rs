//! The device's own audit chain (`docs/audit.md` §10, `docs/client.md` §7): metadata events —
//! store unlocked, session started, identity changed, contact verified, transcript checkpointed,
//! exported or opened — hash-chained with the same construction as the relay's, checkpoints
//! signed with the device's identity key. Each record is stored sealed (it names contacts), in
//! the same transaction as the action it records.

use hushwire::Account;
use hushwire::proto::audit::{
    self, AuditChain, AuditCheckpoint, AuditEvent, AuditRecord, AuditReport,
};
use hushwire::proto::codec::Codec as _;
use sqlx::SqliteConnection;

use super::Client;
use crate::error::{ClientError, Result};
use crate::os::{now_ms, rng};
use crate::store;

/// A checkpoint of the device's audit chain is signed every this many records (and whenever
/// transcripts are checkpointed).
pub const AUDIT_CHECKPOINT_INTERVAL: u64 = 100;

fn audit_error(e: impl core::fmt::Display) -> ClientError {
    ClientError::Audit(e.to_string())
}

impl Client {
    async fn audit_chain_id(&self, c: &mut SqliteConnection) -> Result<[u8; 16]> {
        if let Some(id) = store::get_meta(c, "audit_chain").await? {
            return id
                .try_into()
                .map_err(|_| ClientError::CorruptStore("audit chain id"));
        }
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng(), &mut id);
        store::put_meta(c, "audit_chain", &id).await?;
        Ok(id)
    }

    /// The chain as stored: resumed from its last record.
    async fn audit_chain(&self, c: &mut SqliteConnection) -> Result<AuditChain> {
        let chain_id = self.audit_chain_id(c).await?;
        Ok(match store::last_audit_record(c).await? {
            None => AuditChain::new(chain_id),
            Some((sequence, sealed)) => {
                let record = self.open_audit_record(sequence, &sealed)?;
                AuditChain::resume(chain_id, record.sequence + 1, record.hash())
            }
        })
    }

    fn open_audit_record(&self, sequence: i64, sealed: &[u8]) -> Result<AuditRecord> {
        let bytes = self
            .vault()
            .open("audit record", &sequence.to_be_bytes(), sealed)
            .map_err(|_| {
                ClientError::Audit(format!("audit record {sequence} does not authenticate"))
            })?;
        AuditRecord::from_bytes(&bytes).map_err(audit_error)
    }

    /// Appends `event` inside the caller's transaction; signs a checkpoint when due.
    pub(crate) async fn audit(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        event: AuditEvent,
    ) -> Result<()> {
        let mut chain = self.audit_chain(c).await?;
        let record = chain.append(now_ms(), event);
        let sequence = i64::try_from(record.sequence).unwrap_or(i64::MAX);
        let sealed = self.vault().seal(
            "audit record",
            &sequence.to_be_bytes(),
            &record.to_bytes(),
            &mut rng(),
        );
        store::put_audit_record(c, sequence, &sealed).await?;
        if chain.len().is_multiple_of(AUDIT_CHECKPOINT_INTERVAL) {
            self.sign_audit_checkpoint(c, account, &chain).await?;
        }
        Ok(())
    }

    async fn sign_audit_checkpoint(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        chain: &AuditChain,
    ) -> Result<()> {
        let checkpoint = chain.checkpoint(account.identity(), now_ms());
        store::put_audit_checkpoint(c, &checkpoint.to_bytes()).await
    }

    /// Signs a checkpoint of the audit chain as it stands, inside the caller's transaction.
    pub(crate) async fn checkpoint_audit(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
    ) -> Result<()> {
        let chain = self.audit_chain(c).await?;
        self.sign_audit_checkpoint(c, account, &chain).await
    }

    /// Verifies the device's audit chain — every record authentic, in order and linked, every
    /// checkpoint signed by this device's identity and matching — and returns it.
    pub async fn verify_audit(&self) -> Result<(AuditReport, Vec<AuditRecord>)> {
        let signer = *self.identity_key().await.signing_key();
        // One snapshot: a record or checkpoint added meanwhile is not half in it.
        let mut c = self.db().begin().await?;
        let chain_id = self.audit_chain_id(&mut c).await?;
        let mut records = Vec::new();
        for (sequence, sealed) in store::audit_records(&mut c).await? {
            records.push(self.open_audit_record(sequence, &sealed)?);
        }
        let checkpoints = store::audit_checkpoints(&mut c)
            .await?
            .iter()
            .map(|b| AuditCheckpoint::from_bytes(b).map_err(audit_error))
            .collect::<Result<Vec<_>>>()?;
        let report = audit::verify(chain_id, &signer, &records, &checkpoints)
            .map_err(|fault| ClientError::Audit(fault.to_string()))?;
        Ok((report, records))
    }
}
