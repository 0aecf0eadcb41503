//! PostgreSQL storage, for several relay instances sharing one database. One-time prekeys are
//! claimed with `FOR UPDATE SKIP LOCKED`, so concurrent claims on any number of instances never
//! hand out the same key. A `NOTIFY` on the schema's mailbox channel ([`mailbox_channel`]) for
//! each envelope a commit stored (carrying it if small: [`delivery_notice`]) reaches whichever
//! instance holds the recipient's connection.
//!
//! **Group commit.** Sends and acknowledgements go through one writer task per instance (as on
//! SQLite): it takes whatever is queued (up to [`MAX_BATCH`] jobs) and runs it as one
//! transaction, then answers each job, so one commit (one WAL flush) and one lock of each
//! counter row cover many sends. Other operations are one transaction each, on the pool.
//!
//! **Counters.** Each mailbox has a row in `mailboxes` (envelopes and bytes ever stored, last
//! position) and one per sender in `mailbox_senders`; what acknowledgements and expiry delete
//! is counted in `mailbox_released` and `mailbox_sender_released`. What a mailbox holds is the
//! stored count minus the released one. Only sends write the first two tables, and they lock
//! each recipient's `mailboxes` row (`FOR UPDATE`, recipients in one fixed order, so two
//! instances' batches cannot deadlock) before checking quotas and numbering envelopes; only
//! deletions write the released tables. So an acknowledgement never waits for a send's lock,
//! and:
//!
//! - the quota is atomic, whatever the number of senders and instances, and O(1) in mailbox
//!   size: a send sees every send before it (the lock), and every deletion committed before it
//!   reads; a deletion committing concurrently can only make it count too much, never too
//!   little (the send is then ordered before that deletion);
//! - positions of one mailbox are handed out under that lock and the lock is held until commit,
//!   so they become visible in order: a connection that has delivered position `p` can never
//!   later see a lower one appear (a global sequence would let a slower transaction's lower
//!   position commit after a higher one, and delivery by `position > last sent` skipped it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr as _;
use std::sync::LazyLock;

use hushwire_proto::relay::{Delivery, DeviceAddress, OutgoingEnvelope, Receipt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};
use tokio::sync::{mpsc, oneshot};

use super::sqlite::{address_at, expired_by_recipient, filing_of_row, row_to_delivery};
use super::{
    Answer, ArchiveFiling, ClaimedBundle, Committed, ConversationUpdate, Enqueued, MailboxLimits,
    PreKeyUpload, Provisioned, Provisioning, Registration, RegistrationPolicy, Standing, Store,
    StoreError, StoredArchiveEnvelope, StoredConversation, Usage, archive_filing_digest,
    frame_usage, sequence_key, sql, to_i64, to_u64,
};

/// The `NOTIFY` channel on which stored envelopes and pushes are announced, as an SQL
/// expression: `hushwire_mailbox_` and 16 hex digits of the MD5 of the schema, so that
/// deployments sharing one database in different schemas (`--database-schema`) never hear each
/// other's mailboxes (a notification can carry an envelope, `delivery_notice`).
macro_rules! mailbox_channel {
    () => {
        "('hushwire_mailbox_' || left(md5(current_schema()), 16))"
    };
}

/// The name of this connection's schema's mailbox channel, for `LISTEN`.
pub async fn mailbox_channel(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(concat!("SELECT ", mailbox_channel!()))
        .fetch_one(pool)
        .await
}

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
CREATE TABLE IF NOT EXISTS mailbox_released (
    recipient_fingerprint BYTEA NOT NULL, recipient_device BIGINT NOT NULL,
    envelopes BIGINT NOT NULL, bytes BIGINT NOT NULL,
    PRIMARY KEY (recipient_fingerprint, recipient_device));
CREATE TABLE IF NOT EXISTS mailbox_sender_released (
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
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint BYTEA PRIMARY KEY, certificate BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS revocation_lists (
    org_key BYTEA PRIMARY KEY, sequence BYTEA NOT NULL, list BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS device_lists (
    fingerprint BYTEA PRIMARY KEY, sequence BYTEA NOT NULL, list BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS suspended_devices (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, suspended_at BIGINT NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS pending_wipes (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, command BYTEA NOT NULL,
    ordered_at BIGINT NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS provisioning (
    slot BYTEA PRIMARY KEY, sealed BYTEA NOT NULL, owner_fingerprint BYTEA NOT NULL,
    owner_device BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS provisioning_by_owner
    ON provisioning (owner_fingerprint, owner_device);
CREATE INDEX IF NOT EXISTS provisioning_by_expiry ON provisioning (expires_at);
CREATE TABLE IF NOT EXISTS conversations (
    id BYTEA PRIMARY KEY, clinic BYTEA NOT NULL, head_epoch BIGINT NOT NULL, head_hash BYTEA NOT NULL,
    state BIGINT NOT NULL, opened_at BIGINT NOT NULL, waiting_since BIGINT NOT NULL,
    claimed BIGINT NOT NULL, last_activity BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_waiting ON conversations (state, waiting_since);
CREATE TABLE IF NOT EXISTS conversation_changes (
    conversation BYTEA NOT NULL, epoch BIGINT NOT NULL, change BYTEA NOT NULL,
    PRIMARY KEY (conversation, epoch));
CREATE TABLE IF NOT EXISTS conversation_members (
    conversation BYTEA NOT NULL, fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL,
    PRIMARY KEY (conversation, fingerprint, device_id));
CREATE TABLE IF NOT EXISTS on_duty (
    fingerprint BYTEA NOT NULL, device_id BIGINT NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS conversation_pushes (
    position BIGSERIAL PRIMARY KEY, fingerprint BYTEA NOT NULL,
    device_id BIGINT NOT NULL, frame BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS conversation_pushes_by_device
    ON conversation_pushes (fingerprint, device_id, position);
CREATE TABLE IF NOT EXISTS archive_envelopes (
    conversation BYTEA NOT NULL, position BIGINT NOT NULL, envelope BYTEA NOT NULL,
    filed_by_fingerprint BYTEA NOT NULL, filed_by_device BIGINT NOT NULL, filed_at BIGINT NOT NULL,
    PRIMARY KEY (conversation, position));
CREATE TABLE IF NOT EXISTS archive_policies (
    org_key BYTEA PRIMARY KEY, sequence BYTEA NOT NULL, policy BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS archive_filings (
    conversation BYTEA NOT NULL, digest BYTEA NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (conversation, digest));
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

/// One statement: the `DELETE ... RETURNING` in `gone` (rows of `server_id`,
/// `recipient_fingerprint, recipient_device, sender_fingerprint, sender_device, len`), and what it
/// deleted added to the released counters, per mailbox and per sender (in address order, as
/// every deletion takes them). Returns `recipient_fingerprint, recipient_device, server_id` of
/// each deleted envelope. Atomic on its own; it never touches the rows a send locks.
fn released_sql(gone: &str) -> String {
    format!(
        "WITH gone AS ({gone}),
         totals AS (
            INSERT INTO mailbox_released (recipient_fingerprint, recipient_device, envelopes, bytes)
            SELECT recipient_fingerprint, recipient_device, COUNT(*), SUM(len) FROM gone
            GROUP BY recipient_fingerprint, recipient_device
            ORDER BY recipient_fingerprint, recipient_device
            ON CONFLICT (recipient_fingerprint, recipient_device) DO UPDATE SET
              envelopes = mailbox_released.envelopes + EXCLUDED.envelopes,
              bytes = mailbox_released.bytes + EXCLUDED.bytes),
         shares AS (
            INSERT INTO mailbox_sender_released (recipient_fingerprint, recipient_device,
              sender_fingerprint, sender_device, envelopes, bytes)
            SELECT recipient_fingerprint, recipient_device, sender_fingerprint, sender_device,
              COUNT(*), SUM(len) FROM gone
            GROUP BY recipient_fingerprint, recipient_device, sender_fingerprint, sender_device
            ORDER BY recipient_fingerprint, recipient_device, sender_fingerprint, sender_device
            ON CONFLICT (recipient_fingerprint, recipient_device, sender_fingerprint, sender_device)
            DO UPDATE SET envelopes = mailbox_sender_released.envelopes + EXCLUDED.envelopes,
              bytes = mailbox_sender_released.bytes + EXCLUDED.bytes)
         SELECT recipient_fingerprint, recipient_device, server_id FROM gone"
    )
}

/// Deletes acknowledged envelopes, `(server_id, recipient_fingerprint, recipient_device)` in
/// three arrays: an id deletes only its own recipient's envelope, once however often named.
static ACK: LazyLock<String> = LazyLock::new(|| {
    released_sql(
        "DELETE FROM envelopes AS e
         USING UNNEST($1::bytea[], $2::bytea[], $3::bigint[]) AS v(id, rf, rd)
         WHERE e.server_id = v.id AND e.recipient_fingerprint = v.rf AND e.recipient_device = v.rd
         RETURNING e.server_id, e.recipient_fingerprint, e.recipient_device,
           e.sender_fingerprint, e.sender_device, length(e.payload) AS len",
    )
});

/// Deletes envelopes stored before `$1`.
static EXPIRE: LazyLock<String> = LazyLock::new(|| {
    released_sql(
        "DELETE FROM envelopes WHERE server_time < $1
         RETURNING server_id, recipient_fingerprint, recipient_device, sender_fingerprint,
           sender_device, length(payload) AS len",
    )
});

/// Creates the counter rows of those of the recipients (two arrays) that are registered and
/// have none yet. A counter row exists for every registered device that was ever sent to
/// (devices are never removed), so once created its absence means "not registered". A
/// concurrent creation of the same row is waited for (`ON CONFLICT`), and the next statement's
/// snapshot sees it.
const CREATE_MAILBOXES: &str = "
    INSERT INTO mailboxes (recipient_fingerprint, recipient_device, envelopes, bytes, last_position)
    SELECT u.rf, u.rd, 0, 0, 0 FROM UNNEST($1::bytea[], $2::bigint[]) AS u(rf, rd)
    WHERE EXISTS (SELECT 1 FROM devices WHERE fingerprint = u.rf AND device_id = u.rd)
    ORDER BY u.rf, u.rd
    ON CONFLICT DO NOTHING";

/// Locks the counter rows of the recipients (two arrays), in address order, and reads what each
/// mailbox holds and its last position. The released counts read here may be older than the
/// lock (they are not locked): that can only overstate what a mailbox holds.
const LOCK_MAILBOXES: &str = "
    SELECT m.recipient_fingerprint, m.recipient_device, m.envelopes - COALESCE(r.envelopes, 0),
      m.bytes - COALESCE(r.bytes, 0), m.last_position
    FROM mailboxes AS m
    JOIN UNNEST($1::bytea[], $2::bigint[]) AS u(rf, rd)
      ON m.recipient_fingerprint = u.rf AND m.recipient_device = u.rd
    LEFT JOIN mailbox_released AS r
      ON r.recipient_fingerprint = m.recipient_fingerprint AND r.recipient_device = m.recipient_device
    ORDER BY m.recipient_fingerprint, m.recipient_device
    FOR UPDATE OF m";

/// What each `(recipient, sender)` pair (four arrays) holds. Run after [`LOCK_MAILBOXES`], in a
/// statement of its own: only sends holding the recipient's lock change `mailbox_senders`, and
/// this statement's snapshot, taken after the lock, sees all of them.
const SENDER_SHARES: &str = "
    SELECT s.recipient_fingerprint, s.recipient_device, s.sender_fingerprint, s.sender_device,
      s.envelopes - COALESCE(r.envelopes, 0), s.bytes - COALESCE(r.bytes, 0)
    FROM mailbox_senders AS s
    JOIN UNNEST($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[]) AS u(rf, rd, sf, sd)
      ON s.recipient_fingerprint = u.rf AND s.recipient_device = u.rd
      AND s.sender_fingerprint = u.sf AND s.sender_device = u.sd
    LEFT JOIN mailbox_sender_released AS r
      ON r.recipient_fingerprint = s.recipient_fingerprint AND r.recipient_device = s.recipient_device
      AND r.sender_fingerprint = s.sender_fingerprint AND r.sender_device = s.sender_device";

/// One statement for a batch's accepted envelopes: stores them (eight arrays, one element per
/// envelope), adds them to the counters (per recipient: five arrays; per pair: six) and
/// notifies each recipient's channel.
const STORE_BATCH: &str = concat!(
    "
    WITH stored AS (
        INSERT INTO envelopes (server_id, recipient_fingerprint, recipient_device, sender_fingerprint,
          sender_device, server_time, payload, mailbox_position)
        SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bigint[], $4::bytea[], $5::bigint[],
          $6::bigint[], $7::bytea[], $8::bigint[])),
     totals AS (
        UPDATE mailboxes AS m SET envelopes = m.envelopes + u.n, bytes = m.bytes + u.b,
          last_position = u.last
        FROM UNNEST($9::bytea[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
          AS u(rf, rd, n, b, last)
        WHERE m.recipient_fingerprint = u.rf AND m.recipient_device = u.rd),
     shares AS (
        INSERT INTO mailbox_senders (recipient_fingerprint, recipient_device, sender_fingerprint,
          sender_device, envelopes, bytes)
        SELECT * FROM UNNEST($14::bytea[], $15::bigint[], $16::bytea[], $17::bigint[],
          $18::bigint[], $19::bigint[])
        ON CONFLICT (recipient_fingerprint, recipient_device, sender_fingerprint, sender_device)
        DO UPDATE SET envelopes = mailbox_senders.envelopes + EXCLUDED.envelopes,
          bytes = mailbox_senders.bytes + EXCLUDED.bytes)
    SELECT pg_notify(",
    mailbox_channel!(),
    ", n) FROM UNNEST($20::text[]) AS n"
);

/// Most jobs one writer transaction takes.
const MAX_BATCH: usize = 256;

/// A queued send, answered after its batch commits.
struct EnqueueJob {
    sender: DeviceAddress,
    envelopes: Vec<OutgoingEnvelope>,
    now_ms: u64,
    limits: MailboxLimits,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// A queued acknowledgement, answered after its batch commits.
struct AckJob {
    recipient: DeviceAddress,
    server_ids: Vec<[u8; 16]>,
    reply: oneshot::Sender<Result<Vec<[u8; 16]>, StoreError>>,
}

enum Job {
    Enqueue(EnqueueJob),
    Ack(AckJob),
}

/// The writer: one transaction per batch of queued jobs, each answered after the commit. A
/// batch that fails is rolled back whole and every job in it gets an error (nothing half
/// applied; clients retry).
async fn run_writer(pool: PgPool, mut jobs: mpsc::Receiver<Job>) {
    // Recipients whose counter row is known to exist (rows are never deleted).
    let mut known: HashSet<DeviceAddress> = HashSet::new();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (mut enqueues, mut acks) = (Vec::new(), Vec::new());
        for job in batch {
            match job {
                Job::Enqueue(e) => enqueues.push(e),
                Job::Ack(a) => acks.push(a),
            }
        }
        match write_batch(&pool, &mut known, &mut enqueues, &acks).await {
            Ok((stored, deleted)) => {
                for (job, outcome) in enqueues.into_iter().zip(stored) {
                    let _ = job.reply.send(Ok(outcome));
                }
                answer_acks(acks, deleted);
            }
            Err(e) => {
                tracing::error!(
                    "postgres batch of {} sends and {} acks failed: {e}",
                    enqueues.len(),
                    acks.len()
                );
                let failed = || StoreError::Batch(e.to_string());
                for job in enqueues {
                    let _ = job.reply.send(Err(failed()));
                }
                for job in acks {
                    let _ = job.reply.send(Err(failed()));
                }
            }
        }
    }
}

/// Each ack job gets the ids of its own recipient that were deleted, each id once over the
/// batch, as if the jobs had run one after the other.
fn answer_acks(acks: Vec<AckJob>, mut deleted: HashSet<([u8; 16], DeviceAddress)>) {
    for job in acks {
        let mine = job
            .server_ids
            .into_iter()
            .filter(|id| deleted.remove(&(*id, job.recipient)))
            .collect();
        let _ = job.reply.send(Ok(mine));
    }
}

/// The `(server_id, recipient)` pairs of a batch's acks, without repeats, as three arrays.
fn ack_arrays(acks: &[AckJob]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<i64>) {
    let mut seen = HashSet::new();
    let (mut ids, mut fps, mut devs) = (Vec::new(), Vec::new(), Vec::new());
    for job in acks {
        for id in &job.server_ids {
            if seen.insert((*id, job.recipient)) {
                ids.push(id.to_vec());
                fps.push(fp(&job.recipient));
                devs.push(dev(&job.recipient));
            }
        }
    }
    (ids, fps, devs)
}

/// Runs the [`ACK`] statement for `acks` on `conn`; returns the `(server_id, recipient)` deleted.
async fn delete_acked(
    conn: &mut sqlx::PgConnection,
    acks: &[AckJob],
) -> Result<HashSet<([u8; 16], DeviceAddress)>, sqlx::Error> {
    let (ids, fps, devs) = ack_arrays(acks);
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query(ACK.as_str())
        .bind(ids)
        .bind(fps)
        .bind(devs)
        .fetch_all(&mut *conn)
        .await?;
    let mut deleted = HashSet::new();
    for row in &rows {
        let id: Vec<u8> = row.try_get(2)?;
        if let (Some(recipient), Ok(id)) = (address_at(row, 0), <[u8; 16]>::try_from(id)) {
            deleted.insert((id, recipient));
        }
    }
    Ok(deleted)
}

/// One batch in one transaction (a batch of acknowledgements only is one statement, atomic on
/// its own): the acknowledgements' delete first, then the recipients' counter rows locked,
/// every send checked in queue order against what the jobs before it added, and the accepted
/// envelopes stored. Returns each send's outcome (in order) and what the acks deleted.
async fn write_batch(
    pool: &PgPool,
    known: &mut HashSet<DeviceAddress>,
    enqueues: &mut [EnqueueJob],
    acks: &[AckJob],
) -> Result<(Vec<Enqueued>, HashSet<([u8; 16], DeviceAddress)>), sqlx::Error> {
    if enqueues.is_empty() {
        let mut conn = pool.acquire().await?;
        return Ok((Vec::new(), delete_acked(&mut conn, acks).await?));
    }
    let mut tx = pool.begin().await?;
    let deleted = delete_acked(&mut tx, acks).await?;

    // Every recipient of the batch, in address order (the lock order).
    let recipients: BTreeSet<DeviceAddress> = enqueues
        .iter()
        .flat_map(|j| j.envelopes.iter().map(|e| e.recipient))
        .collect();
    let unknown: Vec<&DeviceAddress> = recipients.iter().filter(|r| !known.contains(r)).collect();
    if !unknown.is_empty() {
        sqlx::query(CREATE_MAILBOXES)
            .bind(unknown.iter().map(|r| fp(r)).collect::<Vec<_>>())
            .bind(unknown.iter().map(|r| dev(r)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    let rows = sqlx::query(LOCK_MAILBOXES)
        .bind(recipients.iter().map(fp).collect::<Vec<_>>())
        .bind(recipients.iter().map(dev).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    // Per registered recipient: what it holds, and its last position.
    let mut held: HashMap<DeviceAddress, (Usage, i64)> = HashMap::new();
    for row in &rows {
        if let Some(recipient) = address_at(row, 0) {
            let total = Usage {
                envelopes: row.try_get(2)?,
                bytes: row.try_get(3)?,
            };
            held.insert(recipient, (total, row.try_get(4)?));
        }
    }
    let pairs: BTreeSet<(DeviceAddress, DeviceAddress)> = enqueues
        .iter()
        .flat_map(|j| j.envelopes.iter().map(|e| (e.recipient, j.sender)))
        .filter(|(r, _)| held.contains_key(r))
        .collect();
    let mut shares: HashMap<(DeviceAddress, DeviceAddress), Usage> = HashMap::new();
    if !pairs.is_empty() {
        let rows = sqlx::query(SENDER_SHARES)
            .bind(pairs.iter().map(|(r, _)| fp(r)).collect::<Vec<_>>())
            .bind(pairs.iter().map(|(r, _)| dev(r)).collect::<Vec<_>>())
            .bind(pairs.iter().map(|(_, s)| fp(s)).collect::<Vec<_>>())
            .bind(pairs.iter().map(|(_, s)| dev(s)).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            if let (Some(recipient), Some(sender)) = (address_at(row, 0), address_at(row, 2)) {
                let usage = Usage {
                    envelopes: row.try_get(4)?,
                    bytes: row.try_get(5)?,
                };
                shares.insert((recipient, sender), usage);
            }
        }
    }

    // Admission, job by job in queue order, counting what the jobs before added.
    let mut outcomes = Vec::with_capacity(enqueues.len());
    let mut batch = StoreArrays::default();
    let mut added: BTreeMap<DeviceAddress, Usage> = BTreeMap::new();
    let mut added_pairs: BTreeMap<(DeviceAddress, DeviceAddress), Usage> = BTreeMap::new();
    // One notification per envelope small enough to ride in it (`delivery_notice`), in
    // position order; one plain wake-up per mailbox that also got a larger one.
    let mut notices: Vec<String> = Vec::new();
    let mut wake_only: BTreeSet<DeviceAddress> = BTreeSet::new();
    'jobs: for job in enqueues.iter_mut() {
        for (recipient, adding) in frame_usage(&job.envelopes) {
            let Some((total, _)) = held.get(&recipient) else {
                outcomes.push(Enqueued::UnknownRecipient(recipient));
                continue 'jobs;
            };
            let mut total = *total;
            total.add(added.get(&recipient).copied().unwrap_or_default());
            let mut from_sender = shares
                .get(&(recipient, job.sender))
                .copied()
                .unwrap_or_default();
            from_sender.add(
                added_pairs
                    .get(&(recipient, job.sender))
                    .copied()
                    .unwrap_or_default(),
            );
            if let Some(refused) = job.limits.refusal(recipient, total, from_sender, adding) {
                outcomes.push(refused);
                continue 'jobs;
            }
        }
        let mut receipts = Vec::with_capacity(job.envelopes.len());
        for e in std::mem::take(&mut job.envelopes) {
            let one = Usage::one(e.payload.len());
            added.entry(e.recipient).or_default().add(one);
            added_pairs
                .entry((e.recipient, job.sender))
                .or_default()
                .add(one);
            let position = held.get_mut(&e.recipient).map_or(0, |(_, last)| {
                *last += 1;
                *last
            });
            let id = crate::random_id();
            let committed = Committed {
                recipient: e.recipient,
                position,
                delivery: Delivery {
                    server_id: id,
                    sender: job.sender,
                    server_time_ms: job.now_ms,
                    payload: Vec::new(),
                },
            };
            match delivery_notice(&committed, &e.payload) {
                Some(notice) => notices.push(notice),
                None => {
                    wake_only.insert(e.recipient);
                }
            }
            batch.ids.push(id.to_vec());
            batch.to_fp.push(fp(&e.recipient));
            batch.to_dev.push(dev(&e.recipient));
            batch.from_fp.push(fp(&job.sender));
            batch.from_dev.push(dev(&job.sender));
            batch.times.push(to_i64(job.now_ms));
            batch.payloads.push(e.payload);
            batch.positions.push(position);
            receipts.push(Receipt {
                server_id: id,
                server_time_ms: job.now_ms,
            });
        }
        outcomes.push(Enqueued::Stored(receipts));
    }
    if !batch.ids.is_empty() {
        notices.extend(wake_only.iter().map(device_payload));
        sqlx::query(STORE_BATCH)
            .bind(batch.ids)
            .bind(batch.to_fp)
            .bind(batch.to_dev)
            .bind(batch.from_fp)
            .bind(batch.from_dev)
            .bind(batch.times)
            .bind(batch.payloads)
            .bind(batch.positions)
            .bind(added.keys().map(fp).collect::<Vec<_>>())
            .bind(added.keys().map(dev).collect::<Vec<_>>())
            .bind(added.values().map(|u| u.envelopes).collect::<Vec<_>>())
            .bind(added.values().map(|u| u.bytes).collect::<Vec<_>>())
            .bind(
                added
                    .keys()
                    .map(|r| held.get(r).map_or(0, |(_, last)| *last))
                    .collect::<Vec<_>>(),
            )
            .bind(added_pairs.keys().map(|(r, _)| fp(r)).collect::<Vec<_>>())
            .bind(added_pairs.keys().map(|(r, _)| dev(r)).collect::<Vec<_>>())
            .bind(added_pairs.keys().map(|(_, s)| fp(s)).collect::<Vec<_>>())
            .bind(added_pairs.keys().map(|(_, s)| dev(s)).collect::<Vec<_>>())
            .bind(
                added_pairs
                    .values()
                    .map(|u| u.envelopes)
                    .collect::<Vec<_>>(),
            )
            .bind(added_pairs.values().map(|u| u.bytes).collect::<Vec<_>>())
            .bind(notices)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    known.extend(held.into_keys());
    Ok((outcomes, deleted))
}

/// A batch's accepted envelopes, one array per column.
#[derive(Default)]
struct StoreArrays {
    ids: Vec<Vec<u8>>,
    to_fp: Vec<Vec<u8>>,
    to_dev: Vec<i64>,
    from_fp: Vec<Vec<u8>>,
    from_dev: Vec<i64>,
    times: Vec<i64>,
    payloads: Vec<Vec<u8>>,
    positions: Vec<i64>,
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    writes: mpsc::Sender<Job>,
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
            // `IF NOT EXISTS` does not stop two instances starting together from both creating
            // it (one then fails on pg_namespace's unique index): the same advisory lock as the
            // tables' creation below serialises them.
            let mut tx = admin.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7251)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
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
        let filings_fresh: bool =
            sqlx::query_scalar("SELECT to_regclass('archive_filings') IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        if fresh {
            sqlx::raw_sql(BACKFILL).execute(&mut *tx).await?;
        }
        // In the transaction that creates the table, under the lock: a database of an earlier
        // version gets `archive_filings` filled once, by whichever instance starts first.
        if filings_fresh {
            backfill_archive_filings(&mut tx).await?;
        }
        tx.commit().await?;
        let (writes, jobs) = mpsc::channel(4096);
        tokio::spawn(run_writer(pool.clone(), jobs));
        Ok(Self { pool, writes })
    }

    /// Hands `job` to the writer; its answer comes after the batch's commit.
    async fn submit_job<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<Answer<T>, StoreError> {
        self.writes
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Answer(rx))
    }

    /// Stores a signed list under `key` if its `sequence` is higher than the stored one's (one
    /// upsert, atomic across instances), then tells every instance to re-check standing
    /// (`notice`) in the same transaction. Whether it was stored.
    async fn publish_if_newer(
        &self,
        statement: &'static sql::Shared,
        key: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
        notice: String,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let stored = sqlx::query(statement.postgres.as_str())
            .bind(key.to_vec())
            .bind(sequence_key(sequence))
            .bind(list)
            .execute(&mut *tx)
            .await?;
        if stored.rows_affected() != 1 {
            return Ok(false);
        }
        notify_standing(&mut tx, notice).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The pool, for the LISTEN side of cross-instance wake-ups.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PostgresStore {
    /// Each mailbox's positions are handed out one after the other under its counter row's
    /// lock, so they are consecutive, and a connection can tell a missed notification.
    fn mailbox_positions_consecutive(&self) -> bool {
        true
    }

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

    async fn submit_enqueue(
        &self,
        sender: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Result<Answer<Enqueued>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = EnqueueJob {
            sender,
            envelopes,
            now_ms,
            limits,
            reply,
        };
        self.submit_job(Job::Enqueue(job), rx).await
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

    async fn submit_ack(
        &self,
        recipient: DeviceAddress,
        server_ids: Vec<[u8; 16]>,
    ) -> Result<Answer<Vec<[u8; 16]>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = AckJob {
            recipient,
            server_ids,
            reply,
        };
        self.submit_job(Job::Ack(job), rx).await
    }

    async fn expire(&self, before_ms: u64) -> Result<Vec<(DeviceAddress, u64)>, StoreError> {
        // One statement: the delete and the released counters together.
        let rows = sqlx::query(EXPIRE.as_str())
            .bind(to_i64(before_ms))
            .fetch_all(&self.pool)
            .await?;
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
    async fn register_certified(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        certificate: Vec<u8>,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialises registrations of one identity across instances (the patient check reads
        // rows that a concurrent registration may be inserting).
        sqlx::query("SELECT pg_advisory_xact_lock(7252, hashtext(encode($1, 'hex')))")
            .bind(fp(&address))
            .execute(&mut *tx)
            .await?;
        let existing: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT identity FROM devices WHERE fingerprint = $1 AND device_id = $2 FOR UPDATE",
        )
        .bind(fp(&address))
        .bind(dev(&address))
        .fetch_optional(&mut *tx)
        .await?;
        if existing.as_ref().is_some_and(|e| *e != identity) {
            return Ok(Registration::Refused);
        }
        let certified: i64 = sqlx::query_scalar(sql::HAS_CERTIFICATE.postgres.as_str())
            .bind(fp(&address))
            .fetch_one(&mut *tx)
            .await?;
        let devices: i64 = sqlx::query_scalar(sql::IDENTITY_DEVICES.postgres.as_str())
            .bind(fp(&address))
            .fetch_one(&mut *tx)
            .await?;
        if certified == 0 && devices > 0 {
            return Ok(Registration::PatientIdentity);
        }
        sqlx::query(sql::UPSERT_CERTIFICATE.postgres.as_str())
            .bind(fp(&address))
            .bind(certificate)
            .execute(&mut *tx)
            .await?;
        let outcome = if existing.is_some() {
            Registration::AlreadyRegistered
        } else {
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
            Registration::Registered
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn certificate(&self, identity: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::CERTIFICATE.postgres.as_str())
            .bind(identity.to_vec())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn replace_certificate(
        &self,
        identity: [u8; 32],
        certificate: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(sql::REPLACE_CERTIFICATE.postgres.as_str())
            .bind(certificate)
            .bind(identity.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn standing(&self, device: DeviceAddress) -> Result<Standing, StoreError> {
        let row = sqlx::query(sql::STANDING.postgres.as_str())
            .bind(fp(&device))
            .bind(dev(&device))
            .bind(fp(&device))
            .bind(dev(&device))
            .bind(fp(&device))
            .bind(fp(&device))
            .fetch_one(&self.pool)
            .await?;
        Ok(Standing {
            suspended: row.try_get::<i64, _>(0)? > 0,
            wipe: row.try_get(1)?,
            certificate: row.try_get(2)?,
            device_list: row.try_get(3)?,
        })
    }

    async fn revocation_list(&self, org: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::REVOCATION_LIST.postgres.as_str())
            .bind(org.to_vec())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn publish_revocation_list(
        &self,
        org: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.publish_if_newer(
            &sql::PUBLISH_REVOCATION_LIST,
            org,
            sequence,
            list,
            "revoked".to_owned(),
        )
        .await
    }

    async fn suspend(&self, device: DeviceAddress, now_ms: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        suspend_on(&mut tx, device, now_ms).await?;
        notify_standing(&mut tx, device_payload(&device)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn order_wipe(
        &self,
        device: DeviceAddress,
        command: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::ORDER_WIPE.postgres.as_str())
            .bind(fp(&device))
            .bind(dev(&device))
            .bind(command)
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await?;
        suspend_on(&mut tx, device, now_ms).await?;
        notify_standing(&mut tx, device_payload(&device)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn device_list(&self, identity: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::DEVICE_LIST.postgres.as_str())
            .bind(identity.to_vec())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn publish_device_list(
        &self,
        identity: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> Result<bool, StoreError> {
        // Devices no longer on the list, connected to any instance, are closed.
        self.publish_if_newer(
            &sql::PUBLISH_DEVICE_LIST,
            identity,
            sequence,
            list,
            format!("list:{}", hex::encode(identity)),
        )
        .await
    }

    async fn identity_devices(&self, identity: [u8; 32]) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::IDENTITY_DEVICES.postgres.as_str())
            .bind(identity.to_vec())
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn put_provisioning(
        &self,
        message: Provisioning,
        now_ms: u64,
        max_live: u32,
    ) -> Result<Provisioned, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialises one owner's puts across instances, so that the count holds.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(7253, hashtext(encode($1, 'hex') || ':' || $2::text))",
        )
        .bind(fp(&message.owner))
        .bind(dev(&message.owner))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sql::DELETE_EXPIRED_PROVISIONING.postgres.as_str())
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await?;
        let live: i64 = sqlx::query_scalar(sql::LIVE_PROVISIONING.postgres.as_str())
            .bind(fp(&message.owner))
            .bind(dev(&message.owner))
            .bind(to_i64(now_ms))
            .fetch_one(&mut *tx)
            .await?;
        if live >= i64::from(max_live) {
            return Ok(Provisioned::TooMany);
        }
        let filed = sqlx::query(sql::INSERT_PROVISIONING.postgres.as_str())
            .bind(message.slot.to_vec())
            .bind(message.sealed)
            .bind(fp(&message.owner))
            .bind(dev(&message.owner))
            .bind(to_i64(message.expires_at_ms))
            .execute(&mut *tx)
            .await?;
        if filed.rows_affected() != 1 {
            return Ok(Provisioned::SlotTaken);
        }
        tx.commit().await?;
        Ok(Provisioned::Stored)
    }

    async fn take_provisioning(
        &self,
        slot: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // One statement: a concurrent take of the same row waits for this one's delete and
        // then finds nothing.
        let row = sqlx::query(sql::TAKE_PROVISIONING.postgres.as_str())
            .bind(slot.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get(0)?;
        let expires_at: i64 = row.try_get(1)?;
        Ok((to_u64(expires_at) > now_ms).then_some(sealed))
    }
    async fn open_conversation(
        &self,
        conversation: StoredConversation,
        change: Vec<u8>,
        members: Vec<DeviceAddress>,
        pushes: Vec<(DeviceAddress, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sql::INSERT_CONVERSATION.postgres.as_str())
            .bind(conversation.id.to_vec())
            .bind(conversation.clinic.to_vec())
            .bind(to_i64(conversation.head_epoch))
            .bind(conversation.head_hash.to_vec())
            .bind(i64::from(conversation.state))
            .bind(to_i64(conversation.opened_at))
            .bind(to_i64(conversation.waiting_since))
            .bind(i64::from(conversation.claimed))
            .bind(to_i64(conversation.last_activity_ms))
            .execute(&mut *tx)
            .await?;
        if inserted.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(sql::INSERT_CHANGE.postgres.as_str())
            .bind(conversation.id.to_vec())
            .bind(0i64)
            .bind(change)
            .execute(&mut *tx)
            .await?;
        store_members_and_pushes(&mut tx, conversation.id, &members, &pushes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn open_conversations_of(&self, fingerprint: [u8; 32]) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(sql::OPEN_CONVERSATIONS_OF.postgres.as_str())
            .bind(fingerprint.to_vec())
            .fetch_one(&self.pool)
            .await?;
        Ok(super::to_u64(count))
    }

    async fn conversation(&self, id: [u8; 16]) -> Result<Option<StoredConversation>, StoreError> {
        let row = sqlx::query(sql::CONVERSATION.postgres.as_str())
            .bind(id.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::conversation_from_row).transpose()
    }

    async fn conversation_changes(
        &self,
        id: [u8; 16],
        from_epoch: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::CHANGES.postgres.as_str())
            .bind(id.to_vec())
            .bind(to_i64(from_epoch))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn conversation_members(&self, id: [u8; 16]) -> Result<Vec<DeviceAddress>, StoreError> {
        let rows = sqlx::query(sql::MEMBERS.postgres.as_str())
            .bind(id.to_vec())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| address_at(r, 0).ok_or_else(|| StoreError::Corrupt("member row".into())))
            .collect()
    }

    async fn update_conversation(&self, update: ConversationUpdate) -> Result<bool, StoreError> {
        // The compare-and-set: `UPDATE … WHERE id = $id AND head_epoch = $n [AND claimed = 0]`
        // updates one row or none, and the row lock it takes makes a racing instance's update
        // wait for this transaction and then match nothing. Exactly one claim wins.
        let mut tx = self.pool.begin().await?;
        let next = update.expected_epoch + update.changes.len() as u64;
        let updated = sqlx::query(sql::UPDATE_CONVERSATION_HEAD.postgres.as_str())
            .bind(to_i64(next))
            .bind(update.head_hash.to_vec())
            .bind(i64::from(update.state))
            .bind(to_i64(update.waiting_since))
            .bind(i64::from(update.claimed))
            .bind(to_i64(update.now_ms))
            .bind(update.id.to_vec())
            .bind(to_i64(update.expected_epoch))
            .bind(i64::from(update.require_unclaimed))
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        for (i, change) in update.changes.into_iter().enumerate() {
            sqlx::query(sql::INSERT_CHANGE.postgres.as_str())
                .bind(update.id.to_vec())
                .bind(to_i64(update.expected_epoch + i as u64))
                .bind(change)
                .execute(&mut *tx)
                .await?;
        }
        store_members_and_pushes(&mut tx, update.id, &update.members, &update.pushes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn waiting_conversations(
        &self,
        limit: u32,
    ) -> Result<Vec<StoredConversation>, StoreError> {
        let rows = sqlx::query(sql::WAITING.postgres.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::conversation_from_row).collect()
    }

    async fn claimed_conversations(
        &self,
        after: Option<[u8; 16]>,
        limit: u32,
    ) -> Result<Vec<StoredConversation>, StoreError> {
        let rows = sqlx::query(sql::CLAIMED_AFTER.postgres.as_str())
            // An empty id sorts before every id.
            .bind(after.map_or_else(Vec::new, |a| a.to_vec()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::conversation_from_row).collect()
    }

    async fn set_on_duty(&self, device: DeviceAddress, on_duty: bool) -> Result<(), StoreError> {
        let statement = if on_duty {
            &sql::SET_ON_DUTY
        } else {
            &sql::SET_OFF_DUTY
        };
        sqlx::query(statement.postgres.as_str())
            .bind(fp(&device))
            .bind(dev(&device))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn on_duty(&self, limit: u32) -> Result<Vec<DeviceAddress>, StoreError> {
        let rows = sqlx::query(sql::ON_DUTY.postgres.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| address_at(r, 0).ok_or_else(|| StoreError::Corrupt("on-duty row".into())))
            .collect()
    }

    async fn push(&self, pushes: Vec<(DeviceAddress, Vec<u8>)>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        store_pushes(&mut tx, &pushes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_pushes(
        &self,
        device: DeviceAddress,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(sql::TAKE_PUSHES.postgres.as_str())
            .bind(fp(&device))
            .bind(dev(&device))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut taken: Vec<(i64, Vec<u8>)> = rows
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
            .collect();
        taken.sort_by_key(|(position, _)| *position);
        Ok(taken.into_iter().map(|(_, frame)| frame).collect())
    }

    async fn put_archive(
        &self,
        id: [u8; 16],
        envelope: Vec<u8>,
        filed_by: DeviceAddress,
        now_ms: u64,
    ) -> Result<ArchiveFiling, StoreError> {
        let digest = archive_filing_digest(&filed_by, &envelope);
        let mut tx = self.pool.begin().await?;
        // The conversation's row lock serialises two instances filing for one conversation, so
        // positions are handed out one at a time. Two identical filings racing: the second
        // waits here until the first commits, then (read committed: each statement sees what
        // was committed before it) finds its `(conversation, digest)` and stores nothing. Even
        // without the lock, `ON CONFLICT DO NOTHING` on the unique key waits for the other
        // transaction's insert of the same key and does nothing once it commits.
        sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
            .bind(id.to_vec())
            .execute(&mut *tx)
            .await?;
        let claimed: Option<i64> = sqlx::query_scalar(sql::CLAIM_ARCHIVE_FILING.postgres.as_str())
            .bind(id.to_vec())
            .bind(digest.to_vec())
            .bind(id.to_vec())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(index) = claimed else {
            let index: i64 = sqlx::query_scalar(sql::ARCHIVE_FILING.postgres.as_str())
                .bind(id.to_vec())
                .bind(digest.to_vec())
                .fetch_one(&mut *tx)
                .await?;
            // Nothing was written: the rollback only ends the transaction (and its lock).
            tx.rollback().await?;
            return Ok(ArchiveFiling {
                index: to_u64(index),
                repeat: true,
            });
        };
        sqlx::query(sql::INSERT_ARCHIVE.postgres.as_str())
            .bind(id.to_vec())
            .bind(index)
            .bind(envelope)
            .bind(fp(&filed_by))
            .bind(dev(&filed_by))
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::TOUCH_CONVERSATION.postgres.as_str())
            .bind(to_i64(now_ms))
            .bind(id.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ArchiveFiling {
            index: to_u64(index),
            repeat: false,
        })
    }

    async fn archive(
        &self,
        id: [u8; 16],
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<StoredArchiveEnvelope>, StoreError> {
        let rows = sqlx::query(sql::ARCHIVE.postgres.as_str())
            .bind(id.to_vec())
            .bind(to_i64(from_index))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::archive_from_row).collect()
    }

    async fn archive_policy(&self, org: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::ARCHIVE_POLICY.postgres.as_str())
            .bind(org.to_vec())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn publish_archive_policy(
        &self,
        org: [u8; 32],
        sequence: u64,
        policy: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let stored = sqlx::query(sql::PUBLISH_ARCHIVE_POLICY.postgres.as_str())
            .bind(org.to_vec())
            .bind(sequence_key(sequence))
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(stored.rows_affected() == 1)
    }

    async fn expire_archive(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::EXPIRE_ARCHIVE_FILINGS.postgres.as_str())
            .bind(to_i64(before_ms))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(sql::EXPIRE_ARCHIVE.postgres.as_str())
            .bind(to_i64(before_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// Envelopes read per page by [`backfill_archive_filings`].
const BACKFILL_PAGE: i64 = 256;

/// Remembers the filing of every archive envelope stored by a relay version without
/// `archive_filings` (`relay-protocol.md` §7), as on SQLite (`sqlite::filing_of_row` computes
/// the same digest): once, in the transaction that creates the table, page by page in key
/// order.
async fn backfill_archive_filings(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), StoreError> {
    let mut after: (Vec<u8>, i64) = (Vec::new(), -1);
    loop {
        let rows = sqlx::query(sql::ARCHIVE_PAGE.postgres.as_str())
            .bind(after.0.clone())
            .bind(after.0.clone())
            .bind(after.1)
            .bind(BACKFILL_PAGE)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let (conversation, position, digest) = filing_of_row(row)?;
            if let Some(digest) = digest {
                sqlx::query(sql::BACKFILL_ARCHIVE_FILING.postgres.as_str())
                    .bind(conversation.clone())
                    .bind(digest.to_vec())
                    .bind(position)
                    .execute(&mut **tx)
                    .await?;
            }
            after = (conversation, position);
        }
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) < BACKFILL_PAGE {
            return Ok(());
        }
    }
}

/// Replaces a conversation's member devices and stores pushes, inside the caller's transaction.
async fn store_members_and_pushes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: [u8; 16],
    members: &[DeviceAddress],
    pushes: &[(DeviceAddress, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::DELETE_MEMBERS.postgres.as_str())
        .bind(id.to_vec())
        .execute(&mut **tx)
        .await?;
    for m in members {
        sqlx::query(sql::INSERT_MEMBER.postgres.as_str())
            .bind(id.to_vec())
            .bind(fp(m))
            .bind(dev(m))
            .execute(&mut **tx)
            .await?;
    }
    store_pushes(tx, pushes).await
}

/// Stores pushes and announces them on the mailbox channel ([`mailbox_channel`]) (delivered at commit) with payload
/// `push:hex(fingerprint):device_id`, so the instance holding each device's connection wakes
/// it and reads its pushes (a plain mail wake-up does not read them).
async fn store_pushes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    pushes: &[(DeviceAddress, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    for (device, frame) in pushes {
        sqlx::query(sql::INSERT_PUSH.postgres.as_str())
            .bind(fp(device))
            .bind(dev(device))
            .bind(frame.clone())
            .execute(&mut **tx)
            .await?;
        sqlx::query(concat!("SELECT pg_notify(", mailbox_channel!(), ", $1)"))
            .bind(format!("push:{}", device_payload(device)))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Largest payload a mailbox notification carries (hex, so twice this, plus about 230
/// characters of addresses and ids: under PostgreSQL's 8,000-byte limit on a payload).
pub const INLINE_PAYLOAD_MAX: usize = 3_800;

/// The mailbox notification that carries `committed` with `payload` (`docs/relay-protocol.md`
/// §5, live delivery): `d:` then, colon-separated, the recipient's fingerprint (hex) and
/// device, the envelope's mailbox position, server id (hex), the sender's fingerprint (hex)
/// and device, the relay's time (ms) and the payload (hex). `None` if the payload is larger
/// than [`INLINE_PAYLOAD_MAX`].
pub fn delivery_notice(committed: &Committed, payload: &[u8]) -> Option<String> {
    if payload.len() > INLINE_PAYLOAD_MAX {
        return None;
    }
    let d = &committed.delivery;
    Some(format!(
        "d:{}:{}:{}:{}:{}:{}:{}:{}",
        hex::encode(committed.recipient.fingerprint),
        committed.recipient.device_id,
        committed.position,
        hex::encode(d.server_id),
        hex::encode(d.sender.fingerprint),
        d.sender.device_id,
        d.server_time_ms,
        hex::encode(payload),
    ))
}

/// A [`delivery_notice`] read back; `None` for any other payload or a malformed one.
pub fn parse_delivery_notice(notice: &str) -> Option<Committed> {
    let mut parts = notice.strip_prefix("d:")?.split(':');
    let address = |parts: &mut std::str::Split<'_, char>| -> Option<DeviceAddress> {
        Some(DeviceAddress {
            fingerprint: hex::decode(parts.next()?).ok()?.try_into().ok()?,
            device_id: parts.next()?.parse().ok()?,
        })
    };
    let recipient = address(&mut parts)?;
    let position = parts.next()?.parse().ok()?;
    let server_id = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    let sender = address(&mut parts)?;
    let server_time_ms = parts.next()?.parse().ok()?;
    let payload = hex::decode(parts.next()?).ok()?;
    if parts.next().is_some() || payload.len() > INLINE_PAYLOAD_MAX {
        return None;
    }
    Some(Committed {
        recipient,
        position,
        delivery: Delivery {
            server_id,
            sender,
            server_time_ms,
            payload,
        },
    })
}

/// `hex(fingerprint):device_id`, as the mailbox notifications name a device.
fn device_payload(device: &DeviceAddress) -> String {
    format!("{}:{}", hex::encode(device.fingerprint), device.device_id)
}

/// Tells every instance (at commit) that the clinic changed a device's standing.
/// Marks `device` suspended (again: nothing changes): what `suspend` and `order_wipe` share.
async fn suspend_on(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    device: DeviceAddress,
    now_ms: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::SUSPEND.postgres.as_str())
        .bind(fp(&device))
        .bind(dev(&device))
        .bind(to_i64(now_ms))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn notify_standing(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    payload: String,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::STANDING_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]

    use futures_util::future::join_all;

    use super::*;

    #[test]
    fn a_delivery_notice_reads_back_and_fits_a_notification() {
        let committed = Committed {
            recipient: DeviceAddress {
                fingerprint: [0xab; 32],
                device_id: u32::MAX,
            },
            position: i64::MAX,
            delivery: Delivery {
                server_id: [0xcd; 16],
                sender: DeviceAddress {
                    fingerprint: [0xef; 32],
                    device_id: 7,
                },
                server_time_ms: u64::MAX,
                payload: Vec::new(),
            },
        };
        let payload = vec![0x11; INLINE_PAYLOAD_MAX];
        let notice = delivery_notice(&committed, &payload).unwrap();
        assert!(
            notice.len() < 8000,
            "{} bytes: PostgreSQL refuses 8,000",
            notice.len()
        );
        let back = parse_delivery_notice(&notice).unwrap();
        assert_eq!(back.recipient, committed.recipient);
        assert_eq!(back.position, committed.position);
        assert_eq!(back.delivery.server_id, committed.delivery.server_id);
        assert_eq!(back.delivery.sender, committed.delivery.sender);
        assert_eq!(back.delivery.server_time_ms, u64::MAX);
        assert_eq!(back.delivery.payload, payload);
        assert!(delivery_notice(&committed, &[0; INLINE_PAYLOAD_MAX + 1]).is_none());
        // Mail wake-ups, pushes and damaged notices are not deliveries.
        for other in [
            device_payload(&committed.recipient),
            format!("push:{}", device_payload(&committed.recipient)),
            notice.replace(":7:", ":x:"),
            format!("{notice}:00"),
            notice[..notice.len() - 1].to_string(),
        ] {
            assert!(parse_delivery_notice(&other).is_none(), "{other:.80}");
        }
    }

    fn device(n: u8) -> DeviceAddress {
        DeviceAddress {
            fingerprint: [n; 32],
            device_id: 1,
        }
    }

    fn to(recipient: DeviceAddress, payload: u8) -> OutgoingEnvelope {
        OutgoingEnvelope {
            recipient,
            payload: vec![payload; 8],
        }
    }

    /// A store on a fresh schema of the test database, or `None` (said loudly) without one.
    async fn store(name: &str) -> Option<PostgresStore> {
        let url = std::env::var("HUSHWIRE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("hw_unit_{name}_{}", hex::encode(crate::random_id()));
        let connected = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            PostgresStore::connect(&url, Some(&schema)),
        )
        .await;
        match connected {
            Ok(Ok(store)) => Some(store),
            _ => {
                eprintln!("\n*** SKIPPED: PostgreSQL is not reachable at {url} ***\n");
                None
            }
        }
    }

    /// Sends and acks queued at once share the writer's batches: the quota (total and per
    /// sender, counted with what acks release), ownership of acks, each id deleted once, and
    /// the order of a frame's envelopes hold as if the jobs had run one by one.
    #[tokio::test]
    async fn batched_jobs_behave_as_if_run_one_by_one() {
        let Some(store) = store("batch").await else {
            return;
        };
        let (a, b, c) = (device(1), device(2), device(3));
        for d in [a, b, c] {
            let r = store
                .register(
                    d,
                    vec![d.fingerprint[0]; 32],
                    None,
                    RegistrationPolicy::Open,
                    1,
                )
                .await
                .unwrap();
            assert_eq!(r, Registration::Registered);
        }
        let five = MailboxLimits {
            envelopes: 5,
            sender_envelopes: 4,
            ..MailboxLimits::UNLIMITED
        };
        let unknown = device(9);

        // Eight single sends to `a` (four from b, four from c) with room for five, plus one to
        // an unknown device, all queued at once.
        let mut sends: Vec<_> = (0..8u8)
            .map(|i| store.enqueue(if i < 4 { b } else { c }, vec![to(a, i)], 10, five))
            .collect();
        sends.push(store.enqueue(b, vec![to(unknown, 0)], 10, five));
        let outcomes: Vec<Enqueued> = join_all(sends)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let stored: Vec<[u8; 16]> = outcomes
            .iter()
            .filter_map(|o| match o {
                Enqueued::Stored(r) => Some(r[0].server_id),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 5, "{outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Enqueued::MailboxFull(a))
                .count(),
            3,
            "{outcomes:?}"
        );
        assert_eq!(outcomes[8], Enqueued::UnknownRecipient(unknown));
        assert_eq!(store.pending(a, 0, 10).await.unwrap().len(), 5);

        // One frame of three envelopes keeps its order.
        let Enqueued::Stored(frame) = store
            .enqueue(b, vec![to(c, 1), to(c, 2), to(c, 3)], 10, five)
            .await
            .unwrap()
        else {
            panic!("frame refused");
        };
        let waiting = store.pending(c, 0, 10).await.unwrap();
        let order: Vec<[u8; 16]> = waiting.iter().map(|(_, d)| d.server_id).collect();
        let sent: Vec<[u8; 16]> = frame.iter().map(|r| r.server_id).collect();
        assert_eq!(order, sent);
        assert!(
            waiting.windows(2).all(|w| w[0].0 < w[1].0),
            "positions grow"
        );

        // Acks at once: `c` naming `a`'s envelopes deletes nothing; `a` naming one twice in a
        // frame and again in another frame deletes it once; `a` naming `c`'s deletes nothing.
        let (x, y) = (stored[0], stored[1]);
        let acks: Vec<Vec<[u8; 16]>> = join_all([
            store.ack(c, vec![x, y]),
            store.ack(a, vec![x, x, y]),
            store.ack(a, vec![x]),
            store.ack(a, vec![sent[0]]),
        ])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert!(acks[0].is_empty());
        assert!(acks[3].is_empty());
        let mut deleted: Vec<[u8; 16]> = acks[1].iter().chain(&acks[2]).copied().collect();
        deleted.sort_unstable();
        let mut expected = vec![x, y];
        expected.sort_unstable();
        assert_eq!(deleted, expected);
        assert_eq!(store.pending(a, 0, 10).await.unwrap().len(), 3);
        assert_eq!(store.pending(c, 0, 10).await.unwrap().len(), 3);

        // The two released places are usable again, and no more.
        let again: Vec<Enqueued> =
            join_all((0..3u8).map(|i| store.enqueue(b, vec![to(a, i)], 10, five)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(
            again
                .iter()
                .filter(|o| matches!(o, Enqueued::Stored(_)))
                .count(),
            2,
            "{again:?}"
        );
        // Queue order decides: b's four were stored first, then one of c's; x and y were b's.
        // The sender's share counts what is released: b holds four in a again, its share.
        let waiting_from_b = store
            .pending(a, 0, 10)
            .await
            .unwrap()
            .iter()
            .filter(|(_, d)| d.sender == b)
            .count();
        assert_eq!(waiting_from_b, 4);
        assert_eq!(
            store.enqueue(b, vec![to(a, 9)], 10, five).await.unwrap(),
            Enqueued::SenderQuota(a)
        );
        // Expiry releases too: everything expires, then five fit again.
        let expired: u64 = store.expire(11).await.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(expired, 8);
        let refill: Vec<Enqueued> = join_all(
            (0..6u8).map(|i| store.enqueue(if i < 3 { b } else { c }, vec![to(a, i)], 20, five)),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(
            refill
                .iter()
                .filter(|o| matches!(o, Enqueued::Stored(_)))
                .count(),
            5,
            "{refill:?}"
        );
    }
}
