//! The relay's audit chain (`docs/audit.md`): every registration, authentication, prekey upload,
//! bundle fetch, stored, acknowledged and expired envelope becomes a hash-chained record of
//! metadata, signed by the relay's own Ed25519 key at regular checkpoints.
//!
//! Records are appended in memory under a lock (so sequence numbers follow the order of
//! events) and written to storage by one task in batches. A crash can lose the records of the
//! last batch (at most a second): the chain resumes from the last stored head, so what was stored
//! always verifies.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hushwire_proto::audit::{AuditChain, AuditEvent, AuditRecord, DeviceRef};
use hushwire_proto::codec::Codec;
use hushwire_proto::keys::Fingerprint;
use hushwire_proto::relay::DeviceAddress;
use tokio::sync::{mpsc, watch};

use crate::storage::{Store, StoreError};

/// A checkpoint is signed after this many records (and at least every flush interval).
const CHECKPOINT_EVERY: u64 = 1000;
/// How often buffered records are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// The longest records stay unsigned while events keep coming.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// The relay's identity for audit purposes: its signing key and its chain's id.
pub struct AuditIdentity {
    /// Signs checkpoints.
    pub key: SigningKey,
    /// This instance's chain.
    pub chain_id: [u8; 16],
}

impl AuditIdentity {
    /// Loads `<dir>/audit-key`; an error if it is missing (for commands that must not create
    /// a relay where there is none, such as `audit verify`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("audit-key");
        if !path.exists() {
            return Err(format!(
                "no audit key at {}: this is not a relay's data directory (give --data-dir)",
                path.display()
            ));
        }
        Self::load_or_create(dir)
    }

    /// Loads `<dir>/audit-key` (32-byte secret ‖ 16-byte chain id), creating it on first start
    /// with owner-only permissions.
    pub fn load_or_create(dir: &Path) -> Result<Self, String> {
        let path = dir.join("audit-key");
        if let Ok(bytes) = std::fs::read(&path) {
            let secret: [u8; 32] = bytes
                .get(..32)
                .and_then(|b| b.try_into().ok())
                .ok_or("audit-key is damaged")?;
            let chain_id: [u8; 16] = bytes
                .get(32..48)
                .and_then(|b| b.try_into().ok())
                .ok_or("audit-key is damaged")?;
            return Ok(Self {
                key: SigningKey::from_bytes(&secret),
                chain_id,
            });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut bytes = [0u8; 48];
        crate::fill_random(&mut bytes);
        write_private(&path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Self::load_or_create(dir)
    }
}

/// Writes a new file readable by its owner only (mode 0600), refusing to replace one.
#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A device address as the audit chain names it.
pub fn device_ref(a: &DeviceAddress) -> DeviceRef {
    DeviceRef {
        fingerprint: Fingerprint(a.fingerprint),
        device_id: a.device_id,
    }
}

/// The appending side, shared by all connections.
pub struct AuditLog {
    chain: Mutex<AuditChain>,
    records: mpsc::UnboundedSender<AuditRecord>,
}

impl AuditLog {
    /// Resumes the chain from storage and starts the writer task (which ends after its final
    /// flush once `shutdown` turns true).
    pub async fn start<S: Store + Clone>(
        store: S,
        identity: AuditIdentity,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), StoreError> {
        let (chain, head) = match store.audit_last(identity.chain_id).await? {
            Some(bytes) => {
                let last = AuditRecord::from_bytes(&bytes).map_err(|e| {
                    StoreError::Corrupt(format!("last audit record does not decode: {e}"))
                })?;
                let head = (last.sequence + 1, last.hash());
                (
                    AuditChain::resume(identity.chain_id, head.0, head.1),
                    Some(head),
                )
            }
            None => (AuditChain::new(identity.chain_id), None),
        };
        // A crash (kill -9) ends without the shutdown checkpoint: sign the tail it left before
        // serving, so unsigned records never pile up over restarts.
        if let Some((count, hash)) = head {
            let signed_up_to = store
                .audit_checkpoints(identity.chain_id)
                .await?
                .iter()
                .filter_map(|b| hushwire_proto::audit::AuditCheckpoint::from_bytes(b).ok())
                .map(|c| c.count)
                .max()
                .unwrap_or(0);
            if signed_up_to < count {
                let checkpoint = AuditChain::resume(identity.chain_id, count, hash)
                    .checkpoint(&identity.key, crate::now_ms());
                store
                    .append_audit(
                        identity.chain_id,
                        Vec::new(),
                        Some((checkpoint.count, checkpoint.to_bytes())),
                    )
                    .await?;
                tracing::info!(
                    records = count,
                    unsigned = count - signed_up_to,
                    "signed the audit chain's unsigned tail left by an unclean stop"
                );
            }
        }
        let (records, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_records(store, identity, queue, shutdown, head));
        Ok((
            Self {
                chain: Mutex::new(chain),
                records,
            },
            writer,
        ))
    }

    /// Appends one event.
    pub fn record(&self, time_ms: u64, event: AuditEvent) {
        if let Ok(mut chain) = self.chain.lock() {
            let record = chain.append(time_ms, event);
            let _ = self.records.send(record);
        }
    }
}

async fn write_records<S: Store>(
    store: S,
    identity: AuditIdentity,
    mut queue: mpsc::UnboundedReceiver<AuditRecord>,
    mut shutdown: watch::Receiver<bool>,
    mut head: Option<(u64, [u8; 32])>,
) {
    // The chain was signed up to its head at start-up.
    let mut unsigned = 0u64;
    let mut last_checkpoint = Instant::now();
    let mut unwritten: Vec<AuditRecord> = Vec::new();
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = shutdown.changed() => stopping = true,
            }
        }
        // Records whose write failed go first: the chain on disk must never skip one.
        let mut batch = std::mem::take(&mut unwritten);
        while let Ok(r) = queue.try_recv() {
            batch.push(r);
        }
        let Some(last) = batch.last() else {
            if stopping {
                // Nothing new to write, but records written earlier may be unsigned: the
                // shutdown checkpoint covers them.
                if let Some((count, hash)) = head.filter(|_| unsigned > 0) {
                    let c = AuditChain::resume(identity.chain_id, count, hash)
                        .checkpoint(&identity.key, crate::now_ms());
                    if let Err(e) = store
                        .append_audit(identity.chain_id, Vec::new(), Some((c.count, c.to_bytes())))
                        .await
                    {
                        tracing::error!("the shutdown audit checkpoint could not be stored: {e}");
                    }
                }
                return;
            }
            continue;
        };
        let last_head = (last.sequence + 1, last.hash());
        // Sign exactly what this write makes durable: the head after the batch's last record.
        let batch_head = AuditChain::resume(identity.chain_id, last.sequence + 1, last.hash());
        let due = unsigned + batch.len() as u64 >= CHECKPOINT_EVERY
            || last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
            || stopping;
        let checkpoint = due.then(|| {
            let c = batch_head.checkpoint(&identity.key, crate::now_ms());
            (c.count, c.to_bytes())
        });
        let encoded: Vec<(u64, Vec<u8>)> =
            batch.iter().map(|r| (r.sequence, r.to_bytes())).collect();
        match store
            .append_audit(identity.chain_id, encoded, checkpoint.clone())
            .await
        {
            Ok(()) => {
                head = Some(last_head);
                unsigned = if checkpoint.is_some() {
                    0
                } else {
                    unsigned + batch.len() as u64
                };
                if checkpoint.is_some() {
                    last_checkpoint = Instant::now();
                }
            }
            Err(e) => {
                tracing::error!("audit records could not be stored, will retry: {e}");
                unwritten = batch;
                if stopping {
                    // One last attempt after a pause; what still fails is reported, not lost
                    // silently.
                    tokio::time::sleep(FLUSH_INTERVAL).await;
                    let encoded = unwritten
                        .iter()
                        .map(|r| (r.sequence, r.to_bytes()))
                        .collect();
                    if let Err(e) = store
                        .append_audit(identity.chain_id, encoded, checkpoint)
                        .await
                    {
                        tracing::error!(
                            "{} audit records could not be stored at shutdown: {e}",
                            unwritten.len()
                        );
                    }
                    return;
                }
                continue;
            }
        }
        if stopping && queue.is_empty() {
            return;
        }
    }
}
