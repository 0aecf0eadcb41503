//! PostgreSQL storage, for several relay instances sharing one database. Each method is one
//! transaction; one-time prekeys are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claims on any number of instances never hand out the same key. A `NOTIFY` on channel
//! `hushwire_mailbox` after each stored envelope wakes whichever instance holds the recipient's
//! connection.

use std::str::FromStr as _;

use hushwire_proto::relay::{Delivery, DeviceAddress, OutgoingEnvelope, Receipt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};

use super::sqlite::{expired_by_recipient, row_to_delivery};
use super::{
    ClaimedBundle, Enqueued, PreKeyUpload, Registration, RegistrationPolicy, Store, StoreError,
    to_i64, to_u64,
};

/// The channel on which stored envelopes are announced (payload: hex fingerprint and device).
pub const NOTIFY_CHANNEL: &str = "hushwire_mailbox";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, identity BYTEA NOT NULL,
    registered_at BIGINT NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS invites (
    token_hash BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL, used BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE IF NOT EXISTS signed_prekeys (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, prekey BYTEA NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS last_resort_kem_prekeys (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, prekey BYTEA NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, kem BIGINT NOT NULL,
    key_id BIGINT NOT NULL, prekey BYTEA NOT NULL, PRIMARY KEY (fingerprint, device_id, kem, key_id));
CREATE TABLE IF NOT EXISTS envelopes (
    position BIGSERIAL PRIMARY KEY, server_id BYTEA NOT NULL UNIQUE,
    recipient_fingerprint BYTEA NOT NULL, recipient_device BIGINT NOT NULL,
    sender_fingerprint BYTEA NOT NULL, sender_device BIGINT NOT NULL,
    server_time BIGINT NOT NULL, payload BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_by_recipient
    ON envelopes (recipient_fingerprint, recipient_device, position);
CREATE INDEX IF NOT EXISTS envelopes_by_time ON envelopes (server_time);
CREATE TABLE IF NOT EXISTS audit_records (
    chain_id BYTEA NOT NULL, sequence BIGINT NOT NULL, record BYTEA NOT NULL,
    PRIMARY KEY (chain_id, sequence));
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain_id BYTEA NOT NULL, count BIGINT NOT NULL, checkpoint BYTEA NOT NULL,
    PRIMARY KEY (chain_id, count));
CREATE TABLE IF NOT EXISTS store_epochs (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, epoch BIGINT NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
";

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn fp(a: &DeviceAddress) -> Vec<u8> {
    a.fingerprint.to_vec()
}

fn dev(a: &DeviceAddress) -> i64 {
    i64::from(a.device_id)
}

impl PostgresStore {
    /// Connects to `url` (optionally inside `schema`, created if missing) and creates tables.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?;
        if let Some(schema) = schema {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        // Several instances may start at once: serialise schema creation with an advisory lock.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7251)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Self { pool })
    }

    /// The pool, for the LISTEN side of cross-instance wake-ups.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PostgresStore {
    async fn register(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        invite: Option<[u8; 32]>,
        policy: RegistrationPolicy,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT identity FROM devices WHERE fingerprint = $1 AND device_id = $2 FOR UPDATE",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return Ok(if existing == identity {
                Registration::AlreadyRegistered
            } else {
                Registration::Refused
            });
        }
        if policy == RegistrationPolicy::Invite {
            let Some(token) = invite else {
                return Ok(Registration::Refused);
            };
            let used = sqlx::query("UPDATE invites SET used = TRUE WHERE token_hash = $1 AND NOT used AND expires_at > $2")
                .bind(token.to_vec())
                .bind(to_i64(now_ms))
                .execute(&mut *tx)
                .await?;
            if used.rows_affected() != 1 {
                return Ok(Registration::Refused);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO devices (fingerprint, device_id, identity, registered_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .bind(identity)
        .bind(to_i64(now_ms))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(Registration::Refused);
        }
        tx.commit().await?;
        Ok(Registration::Registered)
    }

    async fn create_invite(
        &self,
        token_hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO invites (token_hash, expires_at) VALUES ($1, $2)")
            .bind(token_hash.to_vec())
            .bind(to_i64(expires_at_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn identity(&self, address: DeviceAddress) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT identity FROM devices WHERE fingerprint = $1 AND device_id = $2",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn upload_prekeys(
        &self,
        address: DeviceAddress,
        upload: PreKeyUpload,
        max_one_time: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(spk) = upload.signed_prekey {
            sqlx::query(
                "INSERT INTO signed_prekeys (fingerprint, device_id, prekey) VALUES ($1, $2, $3)
                 ON CONFLICT (fingerprint, device_id) DO UPDATE SET prekey = EXCLUDED.prekey",
            )
            .bind(fp(&address))
            .bind(dev(&address))
            .bind(spk)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(kem) = upload.last_resort_kem_prekey {
            sqlx::query(
                "INSERT INTO last_resort_kem_prekeys (fingerprint, device_id, prekey) VALUES ($1, $2, $3)
                 ON CONFLICT (fingerprint, device_id) DO UPDATE SET prekey = EXCLUDED.prekey",
            )
            .bind(fp(&address))
            .bind(dev(&address))
            .bind(kem)
            .execute(&mut *tx)
            .await?;
        }
        for (kem, keys) in [(0i64, upload.one_time), (1, upload.kem_one_time)] {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE fingerprint = $1 AND device_id = $2 AND kem = $3",
            )
            .bind(fp(&address))
            .bind(dev(&address))
            .bind(kem)
            .fetch_one(&mut *tx)
            .await?;
            let room = usize::try_from(i64::from(max_one_time) - held).unwrap_or(0);
            for (id, key) in keys.into_iter().take(room) {
                sqlx::query(
                    "INSERT INTO one_time_prekeys (fingerprint, device_id, kem, key_id, prekey) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (fingerprint, device_id, kem, key_id) DO UPDATE SET prekey = EXCLUDED.prekey",
                )
                .bind(fp(&address))
                .bind(dev(&address))
                .bind(kem)
                .bind(i64::from(id))
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prekey_counts(&self, address: DeviceAddress) -> Result<(u32, u32), StoreError> {
        let rows = sqlx::query(
            "SELECT kem, COUNT(*) FROM one_time_prekeys WHERE fingerprint = $1 AND device_id = $2 GROUP BY kem",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_all(&self.pool)
        .await?;
        let mut counts = (0, 0);
        for row in rows {
            let kem: i64 = row.try_get(0)?;
            let n = u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX);
            if kem == 0 { counts.0 = n } else { counts.1 = n }
        }
        Ok(counts)
    }

    async fn claim_bundle(
        &self,
        address: DeviceAddress,
    ) -> Result<Option<ClaimedBundle>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let identity: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT identity FROM devices WHERE fingerprint = $1 AND device_id = $2",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_optional(&mut *tx)
        .await?;
        let signed: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT prekey FROM signed_prekeys WHERE fingerprint = $1 AND device_id = $2",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_optional(&mut *tx)
        .await?;
        let (Some(identity), Some(signed_prekey)) = (identity, signed) else {
            return Ok(None);
        };
        let take = "DELETE FROM one_time_prekeys WHERE ctid = (SELECT ctid FROM one_time_prekeys
                    WHERE fingerprint = $1 AND device_id = $2 AND kem = $3 ORDER BY key_id LIMIT 1
                    FOR UPDATE SKIP LOCKED) RETURNING prekey";
        let one_time: Option<Vec<u8>> = sqlx::query_scalar(take)
            .bind(fp(&address))
            .bind(dev(&address))
            .bind(0i64)
            .fetch_optional(&mut *tx)
            .await?;
        let kem_one_time: Option<Vec<u8>> = sqlx::query_scalar(take)
            .bind(fp(&address))
            .bind(dev(&address))
            .bind(1i64)
            .fetch_optional(&mut *tx)
            .await?;
        let kem = match kem_one_time {
            Some(k) => k,
            None => {
                let last: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT prekey FROM last_resort_kem_prekeys WHERE fingerprint = $1 AND device_id = $2",
                )
                .bind(fp(&address))
                .bind(dev(&address))
                .fetch_optional(&mut *tx)
                .await?;
                match last {
                    Some(k) => k,
                    None => return Ok(None),
                }
            }
        };
        tx.commit().await?;
        Ok(Some(ClaimedBundle {
            identity,
            signed_prekey,
            one_time,
            kem,
        }))
    }

    async fn enqueue(
        &self,
        sender: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
        now_ms: u64,
        quota: u32,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Several envelopes of one frame may go to the same device: the quota counts them all.
        let mut in_frame: std::collections::HashMap<DeviceAddress, i64> =
            std::collections::HashMap::new();
        for e in &envelopes {
            let known: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM devices WHERE fingerprint = $1 AND device_id = $2",
            )
            .bind(fp(&e.recipient))
            .bind(dev(&e.recipient))
            .fetch_optional(&mut *tx)
            .await?;
            if known.is_none() {
                return Ok(Enqueued::UnknownRecipient(e.recipient));
            }
            let queued: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM envelopes WHERE recipient_fingerprint = $1 AND recipient_device = $2",
            )
            .bind(fp(&e.recipient))
            .bind(dev(&e.recipient))
            .fetch_one(&mut *tx)
            .await?;
            let pending = in_frame.entry(e.recipient).or_insert(0);
            *pending += 1;
            if queued + *pending > i64::from(quota) {
                return Ok(Enqueued::QuotaExceeded(e.recipient));
            }
        }
        let mut receipts = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let id = crate::random_id();
            sqlx::query(
                "INSERT INTO envelopes (server_id, recipient_fingerprint, recipient_device, sender_fingerprint,
                 sender_device, server_time, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.to_vec())
            .bind(fp(&e.recipient))
            .bind(dev(&e.recipient))
            .bind(fp(&sender))
            .bind(dev(&sender))
            .bind(to_i64(now_ms))
            .bind(e.payload)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(format!(
                    "{}:{}",
                    hex::encode(e.recipient.fingerprint),
                    e.recipient.device_id
                ))
                .execute(&mut *tx)
                .await?;
            receipts.push(Receipt {
                server_id: id,
                server_time_ms: now_ms,
            });
        }
        tx.commit().await?;
        Ok(Enqueued::Stored(receipts))
    }

    async fn pending(
        &self,
        recipient: DeviceAddress,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Delivery)>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, server_id, sender_fingerprint, sender_device, server_time, payload FROM envelopes
             WHERE recipient_fingerprint = $1 AND recipient_device = $2 AND position > $3 ORDER BY position LIMIT $4",
        )
        .bind(fp(&recipient))
        .bind(dev(&recipient))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_delivery).collect()
    }

    async fn ack(
        &self,
        recipient: DeviceAddress,
        server_ids: Vec<[u8; 16]>,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let ids: Vec<Vec<u8>> = server_ids.iter().map(|i| i.to_vec()).collect();
        let deleted: Vec<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM envelopes WHERE server_id = ANY($1) AND recipient_fingerprint = $2 AND recipient_device = $3
             RETURNING server_id",
        )
        .bind(ids)
        .bind(fp(&recipient))
        .bind(dev(&recipient))
        .fetch_all(&self.pool)
        .await?;
        Ok(deleted
            .into_iter()
            .filter_map(|id| id.try_into().ok())
            .collect())
    }

    async fn expire(&self, before_ms: u64) -> Result<Vec<(DeviceAddress, u64)>, StoreError> {
        let rows = sqlx::query("DELETE FROM envelopes WHERE server_time < $1 RETURNING recipient_fingerprint, recipient_device")
            .bind(to_i64(before_ms))
            .fetch_all(&self.pool)
            .await?;
        Ok(expired_by_recipient(&rows))
    }

    async fn audit_last(&self, chain_id: [u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT record FROM audit_records WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(chain_id.to_vec())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn append_audit(
        &self,
        chain_id: [u8; 16],
        records: Vec<(u64, Vec<u8>)>,
        checkpoint: Option<(u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (sequence, record) in records {
            sqlx::query(
                "INSERT INTO audit_records (chain_id, sequence, record) VALUES ($1, $2, $3)",
            )
            .bind(chain_id.to_vec())
            .bind(to_i64(sequence))
            .bind(record)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((count, bytes)) = checkpoint {
            sqlx::query(
                "INSERT INTO audit_checkpoints (chain_id, count, checkpoint) VALUES ($1, $2, $3)
                 ON CONFLICT (chain_id, count) DO UPDATE SET checkpoint = EXCLUDED.checkpoint",
            )
            .bind(chain_id.to_vec())
            .bind(to_i64(count))
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_records(
        &self,
        chain_id: [u8; 16],
        from: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT record FROM audit_records WHERE chain_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT $3",
        )
        .bind(chain_id.to_vec())
        .bind(to_i64(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn audit_checkpoints(&self, chain_id: [u8; 16]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT checkpoint FROM audit_checkpoints WHERE chain_id = $1 ORDER BY count",
        )
        .bind(chain_id.to_vec())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn record_store_epoch(
        &self,
        device: DeviceAddress,
        epoch: u64,
    ) -> Result<u64, StoreError> {
        // The row lock (FOR UPDATE, then the upsert) serialises two instances reporting for one
        // device; only two first-ever reports can both read "none", and both then get 0.
        let mut tx = self.pool.begin().await?;
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT epoch FROM store_epochs WHERE fingerprint = $1 AND device_id = $2 FOR UPDATE",
        )
        .bind(fp(&device))
        .bind(i64::from(device.device_id))
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO store_epochs (fingerprint, device_id, epoch) VALUES ($1, $2, $3)
             ON CONFLICT (fingerprint, device_id)
             DO UPDATE SET epoch = GREATEST(store_epochs.epoch, excluded.epoch)",
        )
        .bind(fp(&device))
        .bind(i64::from(device.device_id))
        .bind(to_i64(epoch))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before.map_or(0, to_u64))
    }
}
