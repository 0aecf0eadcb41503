//! PostgreSQL storage, for several relay instances sharing one database. Each method is one
//! transaction; one-time prekeys are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claims on any number of instances never hand out the same key. A `NOTIFY` on channel
//! `hushwire_mailbox` after each stored envelope wakes whichever instance holds the recipient's
//! connection.
//!
//! Each mailbox has a row in `mailboxes` (envelopes, bytes, next position) and one per sender in
//! `mailbox_senders`. A send locks the recipient's row (`FOR UPDATE`, recipients in a fixed
//! order, so two sends cannot deadlock), checks the quotas against the counters, gives each
//! envelope the recipient's next position and updates the counters, all in one transaction:
//!
//! - the quota is atomic, whatever the number of senders and instances, and O(1) in mailbox size;
//! - positions of one mailbox are handed out under that lock and the lock is held until commit,
//!   so they become visible in order: a connection that has delivered position `p` can never
//!   later see a lower one appear (a global sequence would let a slower transaction's lower
//!   position commit after a higher one, and delivery by `position > last sent` skipped it).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr as _;

use hushwire_proto::relay::{Delivery, DeviceAddress, OutgoingEnvelope, Receipt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};

use super::sqlite::{address_at, expired_by_recipient, row_to_delivery};
use super::{
    ClaimedBundle, Enqueued, MailboxLimits, PreKeyUpload, Registration, RegistrationPolicy, Store,
    StoreError, Usage, frame_usage, sql, to_i64, to_u64,
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
ALTER TABLE envelopes ADD COLUMN IF NOT EXISTS mailbox_position BIGINT;
CREATE INDEX IF NOT EXISTS envelopes_by_mailbox_position
    ON envelopes (recipient_fingerprint, recipient_device, mailbox_position);
CREATE TABLE IF NOT EXISTS mailboxes (
    recipient_fingerprint BYTEA NOT NULL, recipient_device BIGINT NOT NULL,
    envelopes BIGINT NOT NULL, bytes BIGINT NOT NULL, last_position BIGINT NOT NULL,
    PRIMARY KEY (recipient_fingerprint, recipient_device));
CREATE TABLE IF NOT EXISTS mailbox_senders (
    recipient_fingerprint BYTEA NOT NULL, recipient_device BIGINT NOT NULL,
    sender_fingerprint BYTEA NOT NULL, sender_device BIGINT NOT NULL,
    envelopes BIGINT NOT NULL, bytes BIGINT NOT NULL,
    PRIMARY KEY (recipient_fingerprint, recipient_device, sender_fingerprint, sender_device));
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

/// Fills the counters and positions for envelopes stored before they existed (a database from
/// an earlier relay version). Runs once, when `mailboxes` is created.
const BACKFILL: &str = "
UPDATE envelopes SET mailbox_position = position WHERE mailbox_position IS NULL;
INSERT INTO mailboxes (recipient_fingerprint, recipient_device, envelopes, bytes, last_position)
    SELECT recipient_fingerprint, recipient_device, COUNT(*), SUM(length(payload)), MAX(mailbox_position)
    FROM envelopes GROUP BY recipient_fingerprint, recipient_device;
INSERT INTO mailbox_senders (recipient_fingerprint, recipient_device, sender_fingerprint, sender_device,
    envelopes, bytes)
    SELECT recipient_fingerprint, recipient_device, sender_fingerprint, sender_device, COUNT(*),
    SUM(length(payload)) FROM envelopes
    GROUP BY recipient_fingerprint, recipient_device, sender_fingerprint, sender_device;
";

/// Takes deleted envelopes (rows of `recipient_fingerprint, recipient_device,
/// sender_fingerprint, sender_device, length(payload)`) off their mailboxes' counters, in the
/// same transaction as the delete. Mailboxes are updated in the same fixed order as a send
/// locks them, so the two never deadlock.
async fn release(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[sqlx::postgres::PgRow],
) -> Result<(), StoreError> {
    let mut freed: BTreeMap<(DeviceAddress, DeviceAddress), Usage> = BTreeMap::new();
    for row in rows {
        let (Some(recipient), Some(sender)) = (address_at(row, 0), address_at(row, 2)) else {
            continue;
        };
        let len: i32 = row.try_get(4)?;
        freed
            .entry((recipient, sender))
            .or_default()
            .add(Usage::one(usize::try_from(len).unwrap_or(0)));
    }
    let mut per_recipient: BTreeMap<DeviceAddress, Usage> = BTreeMap::new();
    for ((recipient, _), u) in &freed {
        per_recipient.entry(*recipient).or_default().add(*u);
    }
    for (recipient, u) in &per_recipient {
        sqlx::query(
            "UPDATE mailboxes SET envelopes = GREATEST(envelopes - $3, 0), bytes = GREATEST(bytes - $4, 0)
             WHERE recipient_fingerprint = $1 AND recipient_device = $2",
        )
        .bind(fp(recipient))
        .bind(dev(recipient))
        .bind(u.envelopes)
        .bind(u.bytes)
        .execute(&mut **tx)
        .await?;
    }
    for ((recipient, sender), u) in &freed {
        sqlx::query(
            "UPDATE mailbox_senders SET envelopes = GREATEST(envelopes - $5, 0), bytes = GREATEST(bytes - $6, 0)
             WHERE recipient_fingerprint = $1 AND recipient_device = $2 AND sender_fingerprint = $3
             AND sender_device = $4",
        )
        .bind(fp(recipient))
        .bind(dev(recipient))
        .bind(fp(sender))
        .bind(dev(sender))
        .bind(u.envelopes)
        .bind(u.bytes)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

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
        let fresh: bool = sqlx::query_scalar("SELECT to_regclass('mailboxes') IS NULL")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        if fresh {
            sqlx::raw_sql(BACKFILL).execute(&mut *tx).await?;
        }
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
        sqlx::query(sql::INSERT_INVITE.postgres.as_str())
            .bind(token_hash.to_vec())
            .bind(to_i64(expires_at_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn identity(&self, address: DeviceAddress) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::IDENTITY.postgres.as_str())
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
            let held: i64 = sqlx::query_scalar(sql::ONE_TIME_HELD.postgres.as_str())
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
        let rows = sqlx::query(sql::PREKEY_COUNTS.postgres.as_str())
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
        one_time: bool,
    ) -> Result<Option<ClaimedBundle>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let identity: Option<Vec<u8>> = sqlx::query_scalar(sql::IDENTITY.postgres.as_str())
            .bind(fp(&address))
            .bind(dev(&address))
            .fetch_optional(&mut *tx)
            .await?;
        let signed: Option<Vec<u8>> = sqlx::query_scalar(sql::SIGNED_PREKEY.postgres.as_str())
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
        let (one_time, kem_one_time): (Option<Vec<u8>>, Option<Vec<u8>>) = if one_time {
            (
                sqlx::query_scalar(take)
                    .bind(fp(&address))
                    .bind(dev(&address))
                    .bind(0i64)
                    .fetch_optional(&mut *tx)
                    .await?,
                sqlx::query_scalar(take)
                    .bind(fp(&address))
                    .bind(dev(&address))
                    .bind(1i64)
                    .fetch_optional(&mut *tx)
                    .await?,
            )
        } else {
            (None, None)
        };
        let kem = match kem_one_time {
            Some(k) => k,
            None => {
                let last: Option<Vec<u8>> =
                    sqlx::query_scalar(sql::LAST_RESORT_PREKEY.postgres.as_str())
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
        limits: MailboxLimits,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Lock every recipient's counter row in one fixed order: two sends to overlapping
        // recipients then wait for each other instead of deadlocking.
        let mut adding = frame_usage(&envelopes);
        adding.sort_by_key(|(r, _)| *r);
        let mut last_positions = HashMap::new();
        for (recipient, add) in &adding {
            // A counter row exists for every registered device that was ever sent to (devices
            // are never removed), so once it has been created its absence means "not
            // registered". Usually it exists: one round trip. Else it is created (only for a
            // registered device) and read again, by a new statement whose snapshot sees a
            // concurrent creation of the same row that ON CONFLICT waited for.
            let mut row = None;
            for attempt in 0..2 {
                if attempt == 1 {
                    sqlx::query(
                        "INSERT INTO mailboxes (recipient_fingerprint, recipient_device, envelopes, bytes, last_position)
                         SELECT $1, $2, 0, 0, 0 WHERE EXISTS
                         (SELECT 1 FROM devices WHERE fingerprint = $1 AND device_id = $2)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(fp(recipient))
                    .bind(dev(recipient))
                    .execute(&mut *tx)
                    .await?;
                }
                row = sqlx::query(
                    "SELECT m.envelopes, m.bytes, m.last_position, COALESCE(s.envelopes, 0), COALESCE(s.bytes, 0)
                     FROM mailboxes m LEFT JOIN mailbox_senders s
                     ON s.recipient_fingerprint = m.recipient_fingerprint AND s.recipient_device = m.recipient_device
                     AND s.sender_fingerprint = $3 AND s.sender_device = $4
                     WHERE m.recipient_fingerprint = $1 AND m.recipient_device = $2 FOR UPDATE OF m",
                )
                .bind(fp(recipient))
                .bind(dev(recipient))
                .bind(fp(&sender))
                .bind(dev(&sender))
                .fetch_optional(&mut *tx)
                .await?;
                if row.is_some() {
                    break;
                }
            }
            let Some(row) = row else {
                return Ok(Enqueued::UnknownRecipient(*recipient));
            };
            let total = Usage {
                envelopes: row.try_get(0)?,
                bytes: row.try_get(1)?,
            };
            let from_sender = Usage {
                envelopes: row.try_get(3)?,
                bytes: row.try_get(4)?,
            };
            if let Some(refused) = limits.refusal(*recipient, total, from_sender, *add) {
                return Ok(refused);
            }
            last_positions.insert(*recipient, row.try_get::<i64, _>(2)?);
        }
        // One statement stores the envelopes, updates both counters and notifies.
        let mut receipts = Vec::with_capacity(envelopes.len());
        let (mut ids, mut to_fp, mut to_dev, mut positions, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in envelopes {
            let id = crate::random_id();
            let position = last_positions.entry(e.recipient).or_insert(0);
            *position += 1;
            ids.push(id.to_vec());
            to_fp.push(fp(&e.recipient));
            to_dev.push(dev(&e.recipient));
            positions.push(*position);
            payloads.push(e.payload);
            receipts.push(Receipt {
                server_id: id,
                server_time_ms: now_ms,
            });
        }
        let (mut m_fp, mut m_dev, mut m_envelopes, mut m_bytes, mut m_last, mut notices) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (recipient, add) in &adding {
            m_fp.push(fp(recipient));
            m_dev.push(dev(recipient));
            m_envelopes.push(add.envelopes);
            m_bytes.push(add.bytes);
            m_last.push(last_positions.get(recipient).copied().unwrap_or(0));
            notices.push(format!(
                "{}:{}",
                hex::encode(recipient.fingerprint),
                recipient.device_id
            ));
        }
        sqlx::query(
            "WITH stored AS (
                INSERT INTO envelopes (server_id, recipient_fingerprint, recipient_device, sender_fingerprint,
                  sender_device, server_time, payload, mailbox_position)
                SELECT e.id, e.rf, e.rd, $6, $7, $8, e.payload, e.position
                FROM UNNEST($1::bytea[], $2::bytea[], $3::bigint[], $4::bytea[], $5::bigint[])
                  AS e(id, rf, rd, payload, position)),
             totals AS (
                UPDATE mailboxes AS m SET envelopes = m.envelopes + u.n, bytes = m.bytes + u.b,
                  last_position = u.last
                FROM UNNEST($9::bytea[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
                  AS u(rf, rd, n, b, last)
                WHERE m.recipient_fingerprint = u.rf AND m.recipient_device = u.rd),
             shares AS (
                INSERT INTO mailbox_senders (recipient_fingerprint, recipient_device, sender_fingerprint,
                  sender_device, envelopes, bytes)
                SELECT u.rf, u.rd, $6, $7, u.n, u.b
                FROM UNNEST($9::bytea[], $10::bigint[], $11::bigint[], $12::bigint[]) AS u(rf, rd, n, b)
                ON CONFLICT (recipient_fingerprint, recipient_device, sender_fingerprint, sender_device)
                DO UPDATE SET envelopes = mailbox_senders.envelopes + EXCLUDED.envelopes,
                  bytes = mailbox_senders.bytes + EXCLUDED.bytes)
             SELECT pg_notify($14, n) FROM UNNEST($15::text[]) AS n",
        )
        .bind(ids)
        .bind(to_fp)
        .bind(to_dev)
        .bind(payloads)
        .bind(positions)
        .bind(fp(&sender))
        .bind(dev(&sender))
        .bind(to_i64(now_ms))
        .bind(m_fp)
        .bind(m_dev)
        .bind(m_envelopes)
        .bind(m_bytes)
        .bind(m_last)
        .bind(NOTIFY_CHANNEL)
        .bind(notices)
        .execute(&mut *tx)
        .await?;
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
            "SELECT mailbox_position, server_id, sender_fingerprint, sender_device, server_time, payload
             FROM envelopes WHERE recipient_fingerprint = $1 AND recipient_device = $2 AND mailbox_position > $3
             ORDER BY mailbox_position LIMIT $4",
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
        // One statement (one round trip, atomic on its own): delete, then take what was deleted
        // off the mailbox's counters, the total row before the sender rows as a send locks them.
        let deleted: Vec<Vec<u8>> = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM envelopes WHERE server_id = ANY($1) AND recipient_fingerprint = $2
                  AND recipient_device = $3
                RETURNING server_id, sender_fingerprint, sender_device, length(payload) AS len),
             per_sender AS (
                SELECT sender_fingerprint, sender_device, COUNT(*) AS n, SUM(len) AS b FROM gone
                GROUP BY sender_fingerprint, sender_device),
             total AS (
                UPDATE mailboxes SET envelopes = GREATEST(envelopes - (SELECT COUNT(*) FROM gone), 0),
                  bytes = GREATEST(bytes - (SELECT COALESCE(SUM(len), 0) FROM gone), 0)
                WHERE recipient_fingerprint = $2 AND recipient_device = $3 AND EXISTS (SELECT 1 FROM gone)
                RETURNING 1),
             shares AS (
                UPDATE mailbox_senders AS s SET envelopes = GREATEST(s.envelopes - p.n, 0),
                  bytes = GREATEST(s.bytes - p.b, 0)
                FROM per_sender p, (SELECT COUNT(*) FROM total) AS after_total
                WHERE s.recipient_fingerprint = $2 AND s.recipient_device = $3
                  AND s.sender_fingerprint = p.sender_fingerprint AND s.sender_device = p.sender_device)
             SELECT server_id FROM gone",
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "DELETE FROM envelopes WHERE server_time < $1 RETURNING recipient_fingerprint, recipient_device,
             sender_fingerprint, sender_device, length(payload)",
        )
        .bind(to_i64(before_ms))
        .fetch_all(&mut *tx)
        .await?;
        release(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(expired_by_recipient(&rows))
    }

    async fn audit_last(&self, chain_id: [u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::AUDIT_LAST.postgres.as_str())
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
        Ok(sqlx::query_scalar(sql::AUDIT_RECORDS.postgres.as_str())
            .bind(chain_id.to_vec())
            .bind(to_i64(from))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn audit_checkpoints(&self, chain_id: [u8; 16]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::AUDIT_CHECKPOINTS.postgres.as_str())
            .bind(chain_id.to_vec())
            .fetch_all(&self.pool)
            .await?)
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::QUEUE_DEPTH.postgres.as_str())
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
