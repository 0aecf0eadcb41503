//! The local SQLite store: schema, versioned migrations and every query (`docs/client.md` §3).
//!
//! What is in the clear: row ids, which rows belong to one contact, counts, times, relay
//! envelope ids, message ids (random) and session base keys (public). Contacts are found by a
//! blind index (a keyed hash of the address). Everything else — keys, sessions, contact names
//! and addresses, queued messages, transcript contents — is sealed (see [`crate::vault`])
//! before it reaches this module.

use std::path::Path;
use std::str::FromStr as _;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqliteConnection, SqlitePool};

use crate::error::{ClientError, Result};

/// The schema version this library writes.
pub const SCHEMA_VERSION: i64 = 10;

/// Migrations in order; migration `i` brings the schema from version `i` to `i + 1`. A released
/// migration is never edited: changes come as a new entry. (Nothing is released yet: until the
/// first release, migration 0 is still the place for schema changes.)
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first schema.
    r"
    CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE contacts (
        id INTEGER PRIMARY KEY,
        address_index BLOB NOT NULL UNIQUE,
        sealed BLOB NOT NULL
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        contact_id INTEGER NOT NULL REFERENCES contacts(id),
        base_key BLOB NOT NULL,
        active INTEGER NOT NULL,
        last_used_ms INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        UNIQUE (contact_id, base_key)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        contact_id INTEGER NOT NULL REFERENCES contacts(id),
        sealed BLOB NOT NULL,
        ciphertext BLOB
    );
    CREATE TABLE transcripts (
        contact_id INTEGER PRIMARY KEY REFERENCES contacts(id),
        writer BLOB NOT NULL
    );
    CREATE TABLE transcript_records (
        contact_id INTEGER NOT NULL,
        sequence INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (contact_id, sequence)
    );
    CREATE TABLE transcript_checkpoints (
        contact_id INTEGER NOT NULL,
        count INTEGER NOT NULL,
        checkpoint BLOB NOT NULL
    );
    CREATE TABLE seen_envelopes (server_id BLOB PRIMARY KEY, seen_ms INTEGER NOT NULL);
    CREATE TABLE seen_messages (
        contact_id INTEGER NOT NULL,
        message_id BLOB NOT NULL,
        PRIMARY KEY (contact_id, message_id)
    );
    CREATE TABLE failures (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, sealed BLOB NOT NULL);
    CREATE TABLE session_base_keys (
        contact_id INTEGER NOT NULL,
        base_key BLOB NOT NULL,
        PRIMARY KEY (contact_id, base_key)
    );
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        contact_id INTEGER NOT NULL,
        sequence INTEGER NOT NULL,
        message_id BLOB NOT NULL
    );
    CREATE TABLE audit_records (sequence INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
    CREATE TABLE audit_checkpoints (id INTEGER PRIMARY KEY, checkpoint BLOB NOT NULL);
    ",
    // 1 → 2: healing (`docs/client.md` §5.13). Each message sent keeps its state and, until a
    // receipt confirms it, its sealed payload, so a reset can send it again; resets are bounded
    // per contact; received message headers are remembered by a keyed digest so a different
    // message under a key already used is told apart from a duplicate.
    r"
    CREATE TABLE sent_messages (
        message_id BLOB PRIMARY KEY,
        contact_id INTEGER NOT NULL REFERENCES contacts(id),
        state INTEGER NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        resends INTEGER NOT NULL DEFAULT 0,
        sealed BLOB
    );
    CREATE INDEX sent_messages_by_contact ON sent_messages (contact_id, state);
    CREATE TABLE session_resets (
        contact_id INTEGER PRIMARY KEY REFERENCES contacts(id),
        last_ms INTEGER NOT NULL,
        pending INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE received_headers (
        header_index BLOB PRIMARY KEY,
        message_digest BLOB NOT NULL,
        seen_ms INTEGER NOT NULL
    );
    ",
    // 2 → 3: the relay key this device pinned (`docs/client.md` §5.16), one sealed row. A
    // store migrated here has no pin yet: it pins at its first successful login.
    r"
    CREATE TABLE relay_pin (id INTEGER PRIMARY KEY CHECK (id = 1), sealed BLOB NOT NULL);
    ",
    // 3 → 4: clinics (`docs/client.md` §8). The pinned clinic (its signed link, this device's
    // own agent certificate, the newest revocation list) in one sealed row, and per contact the
    // agent certificate the relay served for it (or the fact that it served none), sealed.
    r"
    CREATE TABLE clinic (id INTEGER PRIMARY KEY CHECK (id = 1), sealed BLOB NOT NULL);
    CREATE TABLE contact_certificates (
        contact_id INTEGER PRIMARY KEY REFERENCES contacts(id),
        sealed BLOB NOT NULL
    );
    ",
    // 4 → 5: several devices per person (`docs/client.md` §8.6). A contact row that is a
    // further device of a person (`person_id`) or of this device's own person (`person_id`
    // NULL), with its device id. And the newest verified device list of each identity, found
    // by a blind index of the fingerprint, sealed.
    r"
    CREATE TABLE contact_devices (
        contact_id INTEGER PRIMARY KEY REFERENCES contacts(id),
        person_id INTEGER REFERENCES contacts(id),
        device_id INTEGER NOT NULL
    );
    CREATE TABLE device_lists (identity_index BLOB PRIMARY KEY, sealed BLOB NOT NULL);
    ",
    // v6: clinic conversations (`conversations.md`): each conversation's verified membership
    // history (the changes' encodings, in epoch order), found by a blind index of its id, sealed.
    r"
    CREATE TABLE conversations (id_index BLOB PRIMARY KEY, sealed BLOB NOT NULL);
    ",
    // v7: conversation messages (`conversations.md` §8, `client.md` §3.3): each message sent or
    // received, found by a blind index of its conversation and of (conversation, message id),
    // sealed with its receipts and recall; conversation payloads received but not yet checked
    // against the membership (stored with the delivery, acted on after it); archive copies
    // waiting to be sealed to the clinic's archive key and filed.
    r"
    CREATE TABLE conversation_messages (
        id INTEGER PRIMARY KEY,
        conversation_index BLOB NOT NULL,
        message_index BLOB NOT NULL UNIQUE,
        sealed BLOB NOT NULL
    );
    CREATE INDEX conversation_messages_by_conversation
        ON conversation_messages (conversation_index, id);
    CREATE TABLE conversation_inbound (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
    CREATE TABLE archive_outbox (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
    ",
    // v8: one entry per conversation held (`conversations.md` §7.4, `client.md` §3.3), by the
    // blind index of its id: the id itself, its last activity and legal hold, sealed. The
    // history is sealed under the conversation id, so without this nothing could list them.
    // And the messages received and not yet shown (`recv` shows each once, §5.6).
    "
    CREATE TABLE conversation_entries (id_index BLOB PRIMARY KEY, sealed BLOB NOT NULL);
    CREATE TABLE conversation_unread (
        message_row INTEGER PRIMARY KEY REFERENCES conversation_messages(id) ON DELETE CASCADE
    );
    ",
    // v9: the conversation notices not yet shown (`client.md` §5.6), so `recv` shows each
    // membership change and recall once whichever command learned it: per conversation (by
    // its blind index) the epoch up to which its membership changes were shown and the head
    // epoch (plus one) at which "no verified agent" was last shown, and the recalled messages
    // whose recall was not shown.
    "
    CREATE TABLE conversation_notices_shown (
        id_index BLOB PRIMARY KEY,
        shown_epoch INTEGER NOT NULL,
        unanswered_shown INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE conversation_recalls_unshown (
        message_row INTEGER PRIMARY KEY REFERENCES conversation_messages(id) ON DELETE CASCADE
    );
    ",
    // v10: an archive copy is sealed to the archive key once (`conversations.md` §7.3): the
    // envelope, sealed under the store's key, is kept with the copy before it is first filed
    // and sent again, byte for byte, on every retry, so a repeat is one the relay recognises.
    // A copy queued by an earlier version has none (`NULL`) and gets it at its first filing.
    "
    ALTER TABLE archive_outbox ADD COLUMN envelope BLOB;
    ",
];

/// Opens (creating if asked) the database and brings its schema up to date.
pub(crate) async fn open(path: &Path, create: bool) -> Result<SqlitePool> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        // Durability first: a message acknowledged to the relay must survive a power cut.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    // Several connections, so a long read (an export, a verification) never starves message
    // handling; WAL lets readers run beside the writer. Every write transaction starts with
    // BEGIN IMMEDIATE (see `begin`), so writers queue on SQLite's lock (busy timeout) instead
    // of failing when a reader's snapshot goes stale.
    let options = options.busy_timeout(std::time::Duration::from_secs(30));
    #[cfg(unix)]
    if create && !path.exists() {
        // Owner-only from the start: the key-check value and sealed blobs are nobody else's
        // to copy for an offline passphrase search.
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(std::time::Duration::from_secs(60))
        .connect_with(options)
        .await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// A write transaction: `BEGIN IMMEDIATE` takes SQLite's write lock at once, so two writers
/// never both read and then collide on the upgrade.
pub(crate) async fn begin(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut tx = begin(pool).await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await?;
    if version > SCHEMA_VERSION {
        return Err(ClientError::StoreTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        // The version is a number we computed, not input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            from + 1
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn get_meta(c: &mut SqliteConnection, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
        .bind(name)
        .fetch_optional(c)
        .await?)
}

pub(crate) async fn put_meta(c: &mut SqliteConnection, name: &str, value: &[u8]) -> Result<()> {
    sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
        .bind(name)
        .bind(value)
        .execute(c)
        .await?;
    Ok(())
}

/// The sealed pinned relay key, if any (`docs/client.md` §5.16).
pub(crate) async fn get_relay_pin(c: &mut SqliteConnection) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT sealed FROM relay_pin WHERE id = 1")
            .fetch_optional(c)
            .await?,
    )
}

/// Replaces the sealed pinned relay key.
pub(crate) async fn put_relay_pin(c: &mut SqliteConnection, sealed: &[u8]) -> Result<()> {
    sqlx::query("INSERT INTO relay_pin (id, sealed) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed")
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// The sealed clinic row, if a clinic is pinned.
pub(crate) async fn get_clinic(c: &mut SqliteConnection) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar("SELECT sealed FROM clinic WHERE id = 1")
        .fetch_optional(c)
        .await?)
}

/// Replaces the sealed clinic row.
pub(crate) async fn put_clinic(c: &mut SqliteConnection, sealed: &[u8]) -> Result<()> {
    sqlx::query("INSERT INTO clinic (id, sealed) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed")
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// The sealed certificate record of a contact, if one was fetched.
pub(crate) async fn get_contact_certificate(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT sealed FROM contact_certificates WHERE contact_id = ?")
            .bind(contact_id)
            .fetch_optional(c)
            .await?,
    )
}

/// Replaces the sealed certificate record of a contact.
pub(crate) async fn put_contact_certificate(
    c: &mut SqliteConnection,
    contact_id: i64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO contact_certificates (contact_id, sealed) VALUES (?, ?) ON CONFLICT (contact_id) DO UPDATE SET sealed = excluded.sealed")
        .bind(contact_id)
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// A stored contact row: id and sealed record.
pub(crate) struct ContactRow {
    pub id: i64,
    pub sealed: Vec<u8>,
}

pub(crate) async fn contacts(c: &mut SqliteConnection) -> Result<Vec<ContactRow>> {
    let rows = sqlx::query("SELECT id, sealed FROM contacts ORDER BY id")
        .fetch_all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ContactRow {
            id: r.get(0),
            sealed: r.get(1),
        })
        .collect())
}

pub(crate) async fn contact_by_id(c: &mut SqliteConnection, id: i64) -> Result<Option<ContactRow>> {
    let row = sqlx::query("SELECT id, sealed FROM contacts WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?;
    Ok(row.map(|r| ContactRow {
        id: r.get(0),
        sealed: r.get(1),
    }))
}

pub(crate) async fn contact_by_address(
    c: &mut SqliteConnection,
    address: &[u8],
) -> Result<Option<ContactRow>> {
    let row = sqlx::query("SELECT id, sealed FROM contacts WHERE address_index = ?")
        .bind(address)
        .fetch_optional(c)
        .await?;
    Ok(row.map(|r| ContactRow {
        id: r.get(0),
        sealed: r.get(1),
    }))
}

/// Reserves a contact row (its id is part of the sealed value's context) and returns its id.
pub(crate) async fn insert_contact(c: &mut SqliteConnection, address: &[u8]) -> Result<i64> {
    Ok(
        sqlx::query("INSERT INTO contacts (address_index, sealed) VALUES (?, x'') RETURNING id")
            .bind(address)
            .fetch_one(c)
            .await?
            .get(0),
    )
}

pub(crate) async fn update_contact(
    c: &mut SqliteConnection,
    id: i64,
    address: &[u8],
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE contacts SET address_index = ?, sealed = ? WHERE id = ?")
        .bind(address)
        .bind(sealed)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// A stored session row.
pub(crate) struct SessionRow {
    pub active: bool,
    pub last_used_ms: u64,
    pub sealed: Vec<u8>,
}

/// A contact's sessions, the active one first, then most recently used.
pub(crate) async fn sessions(c: &mut SqliteConnection, contact_id: i64) -> Result<Vec<SessionRow>> {
    let rows = sqlx::query(
        "SELECT active, sealed, last_used_ms FROM sessions WHERE contact_id = ? ORDER BY active DESC, last_used_ms DESC, id DESC",
    )
    .bind(contact_id)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SessionRow {
            active: r.get::<i64, _>(0) != 0,
            sealed: r.get(1),
            last_used_ms: u64::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        })
        .collect())
}

/// Inserts or replaces the session with this base key.
pub(crate) async fn put_session(
    c: &mut SqliteConnection,
    contact_id: i64,
    base_key: &[u8],
    now_ms: u64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (contact_id, base_key, active, last_used_ms, sealed) VALUES (?, ?, 0, ?, ?)
         ON CONFLICT (contact_id, base_key) DO UPDATE SET sealed = excluded.sealed, last_used_ms = excluded.last_used_ms",
    )
    .bind(contact_id)
    .bind(base_key)
    .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
    .bind(sealed)
    .execute(c)
    .await?;
    Ok(())
}

/// Makes the session with `base_key` the contact's active one and keeps at most `keep` sessions
/// (the least recently used inactive ones go).
pub(crate) async fn activate_session(
    c: &mut SqliteConnection,
    contact_id: i64,
    base_key: &[u8],
    keep: i64,
) -> Result<()> {
    sqlx::query("UPDATE sessions SET active = (base_key = ?) WHERE contact_id = ?")
        .bind(base_key)
        .bind(contact_id)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "DELETE FROM sessions WHERE contact_id = ? AND id NOT IN (
            SELECT id FROM sessions WHERE contact_id = ? ORDER BY active DESC, last_used_ms DESC, id DESC LIMIT ?)",
    )
    .bind(contact_id)
    .bind(contact_id)
    .bind(keep)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn delete_sessions(c: &mut SqliteConnection, contact_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE contact_id = ?")
        .bind(contact_id)
        .execute(c)
        .await?;
    Ok(())
}

/// A queued outgoing payload.
pub(crate) struct OutboxRow {
    pub id: i64,
    pub contact_id: i64,
    pub sealed: Vec<u8>,
    pub ciphertext: Option<Vec<u8>>,
}

pub(crate) async fn push_outbox(c: &mut SqliteConnection, contact_id: i64) -> Result<i64> {
    Ok(
        sqlx::query("INSERT INTO outbox (contact_id, sealed) VALUES (?, x'') RETURNING id")
            .bind(contact_id)
            .fetch_one(c)
            .await?
            .get(0),
    )
}

pub(crate) async fn set_outbox_sealed(
    c: &mut SqliteConnection,
    id: i64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE outbox SET sealed = ? WHERE id = ?")
        .bind(sealed)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn outbox(c: &mut SqliteConnection) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query("SELECT id, contact_id, sealed, ciphertext FROM outbox ORDER BY id")
        .fetch_all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            contact_id: r.get(1),
            sealed: r.get(2),
            ciphertext: r.get(3),
        })
        .collect())
}

pub(crate) async fn set_outbox_ciphertext(
    c: &mut SqliteConnection,
    id: i64,
    ciphertext: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE outbox SET ciphertext = ? WHERE id = ?")
        .bind(ciphertext)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn delete_outbox(c: &mut SqliteConnection, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ?")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Forgets the ciphertexts queued for a contact (their session is gone): they are encrypted
/// again under the next session.
pub(crate) async fn reset_outbox_ciphertexts(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<()> {
    sqlx::query("UPDATE outbox SET ciphertext = NULL WHERE contact_id = ?")
        .bind(contact_id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn transcript_writer(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT writer FROM transcripts WHERE contact_id = ?")
            .bind(contact_id)
            .fetch_optional(c)
            .await?,
    )
}

pub(crate) async fn transcript_contacts(c: &mut SqliteConnection) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT contact_id FROM transcripts ORDER BY contact_id")
            .fetch_all(c)
            .await?,
    )
}

pub(crate) async fn put_transcript_writer(
    c: &mut SqliteConnection,
    contact_id: i64,
    writer: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO transcripts (contact_id, writer) VALUES (?, ?) ON CONFLICT (contact_id) DO UPDATE SET writer = excluded.writer")
        .bind(contact_id)
        .bind(writer)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn put_transcript_record(
    c: &mut SqliteConnection,
    contact_id: i64,
    sequence: u64,
    record: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO transcript_records (contact_id, sequence, record) VALUES (?, ?, ?)")
        .bind(contact_id)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(record)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn put_transcript_checkpoint(
    c: &mut SqliteConnection,
    contact_id: i64,
    count: u64,
    checkpoint: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO transcript_checkpoints (contact_id, count, checkpoint) VALUES (?, ?, ?)",
    )
    .bind(contact_id)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .bind(checkpoint)
    .execute(c)
    .await?;
    Ok(())
}

/// The greatest record count a stored checkpoint of this transcript covers (0 if none).
pub(crate) async fn transcript_signed_count(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<u64> {
    let count: Option<i64> =
        sqlx::query_scalar("SELECT MAX(count) FROM transcript_checkpoints WHERE contact_id = ?")
            .bind(contact_id)
            .fetch_one(c)
            .await?;
    Ok(count.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

pub(crate) async fn transcript_checkpoints(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<Vec<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT checkpoint FROM transcript_checkpoints WHERE contact_id = ? ORDER BY rowid",
    )
    .bind(contact_id)
    .fetch_all(c)
    .await?)
}

pub(crate) async fn transcript_record_count(
    c: &mut SqliteConnection,
    contact_id: i64,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transcript_records WHERE contact_id = ?")
        .bind(contact_id)
        .fetch_one(c)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Up to `limit` records stored after position `after` (exclusive; `-1` for the start), in
/// stored order: `(rowid, bytes)`. Stored order is what the verifier must see, so this pages
/// by rowid, not by the sequence number a tamperer could edit.
pub(crate) async fn transcript_records_page(
    c: &mut SqliteConnection,
    contact_id: i64,
    after_rowid: i64,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query(
        "SELECT rowid, record FROM transcript_records WHERE contact_id = ? AND rowid > ? ORDER BY rowid LIMIT ?",
    )
    .bind(contact_id)
    .bind(after_rowid)
    .bind(limit)
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn envelope_seen(c: &mut SqliteConnection, server_id: &[u8]) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT 1 FROM seen_envelopes WHERE server_id = ?")
            .bind(server_id)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

pub(crate) async fn mark_envelope_seen(
    c: &mut SqliteConnection,
    server_id: &[u8],
    now_ms: u64,
) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO seen_envelopes (server_id, seen_ms) VALUES (?, ?)")
        .bind(server_id)
        .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .execute(c)
        .await?;
    Ok(())
}

/// Forgets envelope ids older than `before_ms`: the relay has expired those envelopes, so they
/// cannot come again.
pub(crate) async fn prune_seen_envelopes(c: &mut SqliteConnection, before_ms: u64) -> Result<()> {
    sqlx::query("DELETE FROM seen_envelopes WHERE seen_ms < ?")
        .bind(i64::try_from(before_ms).unwrap_or(i64::MAX))
        .execute(c)
        .await?;
    Ok(())
}

/// Marks a message id as received from a contact; false if it already was.
pub(crate) async fn mark_message_seen(
    c: &mut SqliteConnection,
    contact_id: i64,
    message_id: &[u8],
) -> Result<bool> {
    let done =
        sqlx::query("INSERT OR IGNORE INTO seen_messages (contact_id, message_id) VALUES (?, ?)")
            .bind(contact_id)
            .bind(message_id)
            .execute(c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Remembers that a session with `base_key` existed with a contact; false if it already did.
/// Never pruned: a prekey message naming a known base key is a replay, whatever became of its
/// session.
pub(crate) async fn remember_base_key(
    c: &mut SqliteConnection,
    contact_id: i64,
    base_key: &[u8],
) -> Result<bool> {
    let done =
        sqlx::query("INSERT OR IGNORE INTO session_base_keys (contact_id, base_key) VALUES (?, ?)")
            .bind(contact_id)
            .bind(base_key)
            .execute(c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether any session, with any contact past or present, ever had this base key: replay
/// detection is account-wide, so a replaced or removed contact cannot make an old prekey message
/// new again.
/// Whether a message with this digest (the blind index of its bytes) was decrypted here within
/// the received-header window: a replay of the very same bytes. A scan, on the rare path of a
/// prekey message for a session no longer held.
pub(crate) async fn message_digest_seen(c: &mut SqliteConnection, digest: &[u8]) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT 1 FROM received_headers WHERE message_digest = ? LIMIT 1",
    )
    .bind(digest)
    .fetch_optional(c)
    .await?
    .is_some())
}

pub(crate) async fn base_key_known(c: &mut SqliteConnection, base_key: &[u8]) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT 1 FROM session_base_keys WHERE base_key = ? LIMIT 1")
            .bind(base_key)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

pub(crate) async fn outbox_row(c: &mut SqliteConnection, id: i64) -> Result<Option<OutboxRow>> {
    let row = sqlx::query("SELECT id, contact_id, sealed, ciphertext FROM outbox WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?;
    Ok(row.map(|r| OutboxRow {
        id: r.get(0),
        contact_id: r.get(1),
        sealed: r.get(2),
        ciphertext: r.get(3),
    }))
}

pub(crate) async fn record_failure(
    c: &mut SqliteConnection,
    now_ms: u64,
    sealed: &[u8],
) -> Result<()> {
    // Failures are kept 90 days: anyone can mail garbage, and the table must not grow for ever.
    sqlx::query("DELETE FROM failures WHERE at_ms < ?")
        .bind(i64::try_from(now_ms.saturating_sub(90 * 24 * 3600 * 1000)).unwrap_or(0))
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO failures (at_ms, sealed) VALUES (?, ?)")
        .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn last_audit_record(c: &mut SqliteConnection) -> Result<Option<(i64, Vec<u8>)>> {
    let row =
        sqlx::query("SELECT sequence, sealed FROM audit_records ORDER BY sequence DESC LIMIT 1")
            .fetch_optional(c)
            .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

pub(crate) async fn put_audit_record(
    c: &mut SqliteConnection,
    sequence: i64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO audit_records (sequence, sealed) VALUES (?, ?)")
        .bind(sequence)
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// Every audit record in stored order (by rowid, which a tamperer editing sequence numbers
/// cannot reorder without rewriting the rows).
pub(crate) async fn audit_records(c: &mut SqliteConnection) -> Result<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query("SELECT sequence, sealed FROM audit_records ORDER BY rowid")
        .fetch_all(c)
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn put_audit_checkpoint(
    c: &mut SqliteConnection,
    checkpoint: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO audit_checkpoints (checkpoint) VALUES (?)")
        .bind(checkpoint)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn audit_checkpoints(c: &mut SqliteConnection) -> Result<Vec<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT checkpoint FROM audit_checkpoints ORDER BY id")
            .fetch_all(c)
            .await?,
    )
}

pub(crate) async fn push_inbox(
    c: &mut SqliteConnection,
    contact_id: i64,
    sequence: u64,
    message_id: &[u8],
) -> Result<()> {
    sqlx::query("INSERT INTO inbox (contact_id, sequence, message_id) VALUES (?, ?, ?)")
        .bind(contact_id)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(message_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Unread messages in arrival order: `(contact_id, transcript sequence)`.
pub(crate) async fn inbox(c: &mut SqliteConnection) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query("SELECT contact_id, sequence FROM inbox ORDER BY id")
        .fetch_all(c)
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn transcript_record_at(
    c: &mut SqliteConnection,
    contact_id: i64,
    sequence: i64,
) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT record FROM transcript_records WHERE contact_id = ? AND sequence = ?",
    )
    .bind(contact_id)
    .bind(sequence)
    .fetch_optional(c)
    .await?)
}

pub(crate) async fn remove_from_inbox(c: &mut SqliteConnection, message_id: &[u8]) -> Result<()> {
    sqlx::query("DELETE FROM inbox WHERE message_id = ?")
        .bind(message_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Marks every session with a contact inactive: they still decrypt what is in flight, but the
/// next send starts a new session (`docs/client.md` §5.13).
pub(crate) async fn deactivate_sessions(c: &mut SqliteConnection, contact_id: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET active = 0 WHERE contact_id = ?")
        .bind(contact_id)
        .execute(c)
        .await?;
    Ok(())
}

/// A message this device sent, as `sent_messages` keeps it.
pub(crate) struct SentRow {
    pub message_id: [u8; 16],
    pub contact_id: i64,
    pub state: i64,
    pub updated_ms: u64,
    pub resends: i64,
    pub sealed: Option<Vec<u8>>,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) async fn insert_sent(
    c: &mut SqliteConnection,
    message_id: &[u8; 16],
    contact_id: i64,
    state: i64,
    now_ms: u64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sent_messages (message_id, contact_id, state, sent_at_ms, updated_ms, sealed)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&message_id[..])
    .bind(contact_id)
    .bind(state)
    .bind(ms(now_ms))
    .bind(ms(now_ms))
    .bind(sealed)
    .execute(c)
    .await?;
    Ok(())
}

/// Moves a sent message to `state` if it is in one of `from`; true if it moved. A delivered
/// message drops its payload: nothing will ever resend it.
pub(crate) async fn set_sent_state(
    c: &mut SqliteConnection,
    message_id: &[u8; 16],
    from: &[i64],
    state: i64,
    drop_payload: bool,
    now_ms: u64,
) -> Result<bool> {
    if from.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "UPDATE sent_messages SET state = ?, updated_ms = ?,
             sealed = CASE WHEN ? THEN NULL ELSE sealed END
         WHERE message_id = ? AND state IN ({})",
        placeholders(from.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state)
        .bind(ms(now_ms))
        .bind(drop_payload)
        .bind(&message_id[..]);
    for f in from {
        query = query.bind(f);
    }
    Ok(query.execute(c).await?.rows_affected() > 0)
}

/// `?, ?, …` for an `IN` list of `n` (at least 1) bound values. Only the count enters the SQL,
/// never a value.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn sent_row(r: &sqlx::sqlite::SqliteRow) -> SentRow {
    let id: Vec<u8> = r.get(0);
    let mut message_id = [0u8; 16];
    if id.len() == 16 {
        message_id.copy_from_slice(&id);
    }
    SentRow {
        message_id,
        contact_id: r.get(1),
        state: r.get(2),
        resends: r.get(4),
        sealed: r.get(5),
        updated_ms: u64::try_from(r.get::<i64, _>(6)).unwrap_or(0),
    }
}

const SENT_COLUMNS: &str = "message_id, contact_id, state, sent_at_ms, resends, sealed, updated_ms";

pub(crate) async fn sent_message(
    c: &mut SqliteConnection,
    message_id: &[u8; 16],
) -> Result<Option<SentRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SENT_COLUMNS} FROM sent_messages WHERE message_id = ?"
    )))
    .bind(&message_id[..])
    .fetch_optional(c)
    .await?;
    Ok(row.as_ref().map(sent_row))
}

/// A contact's sent messages in `states`, oldest first (all contacts when `contact_id` is
/// `None`).
pub(crate) async fn sent_messages(
    c: &mut SqliteConnection,
    contact_id: Option<i64>,
    states: &[i64],
) -> Result<Vec<SentRow>> {
    if states.is_empty() {
        return Ok(Vec::new());
    }
    // Filtered in SQL: the periodic receipt check must not read every message ever sent.
    let sql = format!(
        "SELECT {SENT_COLUMNS} FROM sent_messages
         WHERE (? IS NULL OR contact_id = ?) AND state IN ({})
         ORDER BY sent_at_ms, rowid",
        placeholders(states.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(contact_id)
        .bind(contact_id);
    for state in states {
        query = query.bind(state);
    }
    Ok(query.fetch_all(c).await?.iter().map(sent_row).collect())
}

/// Forgets settled messages (delivered or failed) whose state last changed before `before_ms`:
/// their outcome was reported long ago, and the table must not grow for ever.
pub(crate) async fn prune_settled_sent(
    c: &mut SqliteConnection,
    settled: &[i64],
    before_ms: u64,
) -> Result<()> {
    for state in settled {
        sqlx::query("DELETE FROM sent_messages WHERE state = ? AND updated_ms < ?")
            .bind(state)
            .bind(ms(before_ms))
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub(crate) async fn count_resend(c: &mut SqliteConnection, message_id: &[u8; 16]) -> Result<()> {
    sqlx::query("UPDATE sent_messages SET resends = resends + 1 WHERE message_id = ?")
        .bind(&message_id[..])
        .execute(c)
        .await?;
    Ok(())
}

/// When this device last asked a contact for a new session, if ever.
pub(crate) async fn last_reset(c: &mut SqliteConnection, contact_id: i64) -> Result<Option<u64>> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT last_ms FROM session_resets WHERE contact_id = ?")
            .bind(contact_id)
            .fetch_optional(c)
            .await?
            .map(|v| u64::try_from(v).unwrap_or(0)),
    )
}

pub(crate) async fn set_last_reset(
    c: &mut SqliteConnection,
    contact_id: i64,
    now_ms: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_resets (contact_id, last_ms, pending) VALUES (?, ?, 0)
         ON CONFLICT (contact_id) DO UPDATE SET last_ms = excluded.last_ms, pending = 0",
    )
    .bind(contact_id)
    .bind(ms(now_ms))
    .execute(c)
    .await?;
    Ok(())
}

/// Notes that a contact's message could not be read while a reset was held back by the interval:
/// the reset goes out once the interval has passed (§5.13).
pub(crate) async fn mark_reset_pending(c: &mut SqliteConnection, contact_id: i64) -> Result<()> {
    sqlx::query("UPDATE session_resets SET pending = 1 WHERE contact_id = ?")
        .bind(contact_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Contacts with a held-back reset whose interval ended before `before_ms`.
pub(crate) async fn due_resets(c: &mut SqliteConnection, before_ms: u64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT contact_id FROM session_resets WHERE pending = 1 AND last_ms <= ?",
    )
    .bind(ms(before_ms))
    .fetch_all(c)
    .await?)
}

/// The digest of the message received under a header (keyed index of chain and position), if
/// one was.
pub(crate) async fn received_header(
    c: &mut SqliteConnection,
    header_index: &[u8],
) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar::<_, Vec<u8>>(
        "SELECT message_digest FROM received_headers WHERE header_index = ?",
    )
    .bind(header_index)
    .fetch_optional(c)
    .await?)
}

pub(crate) async fn remember_received_header(
    c: &mut SqliteConnection,
    header_index: &[u8],
    digest: &[u8],
    now_ms: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO received_headers (header_index, message_digest, seen_ms) VALUES (?, ?, ?)",
    )
    .bind(header_index)
    .bind(digest)
    .bind(ms(now_ms))
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn prune_received_headers(c: &mut SqliteConnection, before_ms: u64) -> Result<()> {
    sqlx::query("DELETE FROM received_headers WHERE seen_ms < ?")
        .bind(ms(before_ms))
        .execute(c)
        .await?;
    Ok(())
}

/// A contact row that is a further device of a person (`docs/client.md` §8.6).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceRow {
    /// The row of the person it belongs to; `None` for this device's own other devices.
    pub person_id: Option<i64>,
    /// Its device id.
    pub device_id: u32,
}

/// Every device row, by contact row id.
pub(crate) async fn device_rows(
    c: &mut SqliteConnection,
) -> Result<std::collections::HashMap<i64, DeviceRow>> {
    let rows = sqlx::query("SELECT contact_id, person_id, device_id FROM contact_devices")
        .fetch_all(c)
        .await?;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let device_id: i64 = row.try_get("device_id")?;
        out.insert(
            row.try_get("contact_id")?,
            DeviceRow {
                person_id: row.try_get("person_id")?,
                device_id: u32::try_from(device_id)
                    .map_err(|_| ClientError::CorruptStore("device row"))?,
            },
        );
    }
    Ok(out)
}

/// Records (or updates) a device row.
pub(crate) async fn put_device_row(
    c: &mut SqliteConnection,
    contact_id: i64,
    row: DeviceRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO contact_devices (contact_id, person_id, device_id) VALUES (?, ?, ?) \
         ON CONFLICT (contact_id) DO UPDATE SET person_id = excluded.person_id, \
         device_id = excluded.device_id",
    )
    .bind(contact_id)
    .bind(row.person_id)
    .bind(i64::from(row.device_id))
    .execute(c)
    .await?;
    Ok(())
}

/// The sealed newest device list held for an identity (by its blind index).
pub(crate) async fn device_list(c: &mut SqliteConnection, index: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT sealed FROM device_lists WHERE identity_index = ?")
            .bind(index)
            .fetch_optional(c)
            .await?,
    )
}

/// Stores the newest device list of an identity (sealed), replacing the one held.
pub(crate) async fn put_device_list(
    c: &mut SqliteConnection,
    index: &[u8],
    sealed: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO device_lists (identity_index, sealed) VALUES (?, ?) \
         ON CONFLICT (identity_index) DO UPDATE SET sealed = excluded.sealed",
    )
    .bind(index)
    .bind(sealed)
    .execute(c)
    .await?;
    Ok(())
}

/// Drops every queued outbox entry for one contact row (a device taken off its list).
pub(crate) async fn delete_outbox_for(c: &mut SqliteConnection, contact_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM outbox WHERE contact_id = ?")
        .bind(contact_id)
        .execute(c)
        .await?;
    Ok(())
}

/// The tables that keep one sealed value per blind index: a conversation's verified
/// membership history (`conversations`) and its entry (`conversation_entries`: id, last
/// activity, legal hold).
#[derive(Clone, Copy)]
pub(crate) enum Indexed {
    Conversation,
    ConversationEntry,
}

impl Indexed {
    fn select(self) -> &'static str {
        match self {
            Self::Conversation => "SELECT sealed FROM conversations WHERE id_index = ?",
            Self::ConversationEntry => "SELECT sealed FROM conversation_entries WHERE id_index = ?",
        }
    }

    fn upsert(self) -> &'static str {
        match self {
            Self::Conversation => {
                "INSERT INTO conversations (id_index, sealed) VALUES (?, ?) \
                 ON CONFLICT (id_index) DO UPDATE SET sealed = excluded.sealed"
            }
            Self::ConversationEntry => {
                "INSERT INTO conversation_entries (id_index, sealed) VALUES (?, ?) \
                 ON CONFLICT (id_index) DO UPDATE SET sealed = excluded.sealed"
            }
        }
    }
}

/// The sealed value of `table` under the blind index `index`, if held.
pub(crate) async fn indexed(
    c: &mut SqliteConnection,
    table: Indexed,
    index: &[u8],
) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(table.select())
        .bind(index)
        .fetch_optional(c)
        .await?)
}

/// Stores the sealed value of `table` under `index`, replacing the one held.
pub(crate) async fn put_indexed(
    c: &mut SqliteConnection,
    table: Indexed,
    index: &[u8],
    sealed: &[u8],
) -> Result<()> {
    sqlx::query(table.upsert())
        .bind(index)
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// Every conversation entry: `(blind index, sealed entry)`.
pub(crate) async fn conversation_entries(
    c: &mut SqliteConnection,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(
        sqlx::query("SELECT id_index, sealed FROM conversation_entries ORDER BY id_index")
            .fetch_all(c)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

/// Deletes conversations (retention, `conversations.md` §7.4): their entries, histories and
/// messages, in one transaction with `secure_delete` on (SQLite overwrites the freed content),
/// then empties the write-ahead log, so the file keeps no copy of what was deleted.
pub(crate) async fn delete_conversations(pool: &SqlitePool, indexes: &[[u8; 32]]) -> Result<()> {
    let mut c = pool.acquire().await?;
    sqlx::query("PRAGMA secure_delete = ON")
        .execute(&mut *c)
        .await?;
    let deleted = async {
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        for index in indexes {
            for sql in [
                "DELETE FROM conversation_unread WHERE message_row IN \
                 (SELECT id FROM conversation_messages WHERE conversation_index = ?)",
                "DELETE FROM conversation_recalls_unshown WHERE message_row IN \
                 (SELECT id FROM conversation_messages WHERE conversation_index = ?)",
                "DELETE FROM conversation_notices_shown WHERE id_index = ?",
                "DELETE FROM conversation_messages WHERE conversation_index = ?",
                "DELETE FROM conversations WHERE id_index = ?",
                "DELETE FROM conversation_entries WHERE id_index = ?",
            ] {
                sqlx::query(sql).bind(&index[..]).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *c)
            .await?;
        Ok::<(), ClientError>(())
    }
    .await;
    // The pool's connection goes back as it was: secure_delete costs writes on every delete.
    sqlx::query("PRAGMA secure_delete = OFF")
        .execute(&mut *c)
        .await?;
    deleted
}

/// Starts counting a conversation's shown membership changes at `epoch`; no change if it is
/// counted already.
pub(crate) async fn init_notices_shown(
    c: &mut SqliteConnection,
    id_index: &[u8],
    epoch: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO conversation_notices_shown (id_index, shown_epoch) VALUES (?, ?)",
    )
    .bind(id_index)
    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
    .execute(c)
    .await?;
    Ok(())
}

/// What of a conversation's notices was shown, if counted: `(the epoch up to which its
/// membership changes were shown, the head epoch plus one at which "no verified agent" was
/// last shown or 0)`.
pub(crate) async fn notices_shown(
    c: &mut SqliteConnection,
    id_index: &[u8],
) -> Result<Option<(u64, u64)>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT shown_epoch, unanswered_shown FROM conversation_notices_shown WHERE id_index = ?",
    )
    .bind(id_index)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(e, u)| (u64::try_from(e).unwrap_or(0), u64::try_from(u).unwrap_or(0))))
}

/// Records what of a conversation's notices was shown (the pair [`notices_shown`] returns).
pub(crate) async fn set_notices_shown(
    c: &mut SqliteConnection,
    id_index: &[u8],
    (epoch, unanswered): (u64, u64),
) -> Result<()> {
    sqlx::query(
        "UPDATE conversation_notices_shown SET shown_epoch = ?, unanswered_shown = ? \
         WHERE id_index = ?",
    )
    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
    .bind(i64::try_from(unanswered).unwrap_or(i64::MAX))
    .bind(id_index)
    .execute(c)
    .await?;
    Ok(())
}

/// Marks a stored conversation message's recall as not yet shown.
pub(crate) async fn add_unshown_recall(c: &mut SqliteConnection, message_row: i64) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO conversation_recalls_unshown (message_row) VALUES (?)")
        .bind(message_row)
        .execute(c)
        .await?;
    Ok(())
}

/// The recalled messages whose recall was not shown, oldest first: `(row, conversation index,
/// sealed)`.
pub(crate) async fn unshown_recalls(
    c: &mut SqliteConnection,
) -> Result<Vec<(i64, Vec<u8>, Vec<u8>)>> {
    Ok(sqlx::query(
        "SELECT m.id, m.conversation_index, m.sealed FROM conversation_recalls_unshown u \
         JOIN conversation_messages m ON m.id = u.message_row ORDER BY m.id",
    )
    .fetch_all(c)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

/// Marks a recall as shown.
pub(crate) async fn remove_unshown_recall(
    c: &mut SqliteConnection,
    message_row: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM conversation_recalls_unshown WHERE message_row = ?")
        .bind(message_row)
        .execute(c)
        .await?;
    Ok(())
}

/// Marks a stored conversation message as received and not yet shown.
pub(crate) async fn add_unread_conversation_message(
    c: &mut SqliteConnection,
    message_row: i64,
) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO conversation_unread (message_row) VALUES (?)")
        .bind(message_row)
        .execute(c)
        .await?;
    Ok(())
}

/// The conversation messages not yet shown, oldest first: `(row, conversation index, sealed)`.
pub(crate) async fn unread_conversation_messages(
    c: &mut SqliteConnection,
) -> Result<Vec<(i64, Vec<u8>, Vec<u8>)>> {
    Ok(sqlx::query(
        "SELECT m.id, m.conversation_index, m.sealed FROM conversation_unread u \
         JOIN conversation_messages m ON m.id = u.message_row ORDER BY m.id",
    )
    .fetch_all(c)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

/// Marks the conversation message with `message_index` as shown.
pub(crate) async fn remove_unread_conversation_message(
    c: &mut SqliteConnection,
    message_index: &[u8],
) -> Result<()> {
    sqlx::query(
        "DELETE FROM conversation_unread WHERE message_row = \
         (SELECT id FROM conversation_messages WHERE message_index = ?)",
    )
    .bind(message_index)
    .execute(c)
    .await?;
    Ok(())
}

/// A stored conversation message: its row id and sealed record.
pub(crate) struct ConversationMessageRow {
    pub id: i64,
    pub sealed: Vec<u8>,
}

/// Records a conversation message; `false` (nothing written) if one with the same
/// `message_index` is held already (a duplicate).
pub(crate) async fn insert_conversation_message(
    c: &mut SqliteConnection,
    conversation_index: &[u8],
    message_index: &[u8],
    sealed: &[u8],
) -> Result<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO conversation_messages (conversation_index, message_index, sealed) \
         VALUES (?, ?, ?) ON CONFLICT (message_index) DO NOTHING RETURNING id",
    )
    .bind(conversation_index)
    .bind(message_index)
    .bind(sealed)
    .fetch_optional(c)
    .await?;
    Ok(id)
}

/// The conversation message with `message_index`, if held.
pub(crate) async fn conversation_message(
    c: &mut SqliteConnection,
    message_index: &[u8],
) -> Result<Option<ConversationMessageRow>> {
    Ok(
        sqlx::query("SELECT id, sealed FROM conversation_messages WHERE message_index = ?")
            .bind(message_index)
            .fetch_optional(c)
            .await?
            .map(|r| ConversationMessageRow {
                id: r.get(0),
                sealed: r.get(1),
            }),
    )
}

/// Replaces a conversation message's sealed record (a receipt or a recall arrived).
pub(crate) async fn update_conversation_message(
    c: &mut SqliteConnection,
    id: i64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE conversation_messages SET sealed = ? WHERE id = ?")
        .bind(sealed)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// A conversation's messages in the order recorded here.
pub(crate) async fn conversation_messages(
    c: &mut SqliteConnection,
    conversation_index: &[u8],
) -> Result<Vec<ConversationMessageRow>> {
    Ok(sqlx::query(
        "SELECT id, sealed FROM conversation_messages WHERE conversation_index = ? ORDER BY id",
    )
    .bind(conversation_index)
    .fetch_all(c)
    .await?
    .into_iter()
    .map(|r| ConversationMessageRow {
        id: r.get(0),
        sealed: r.get(1),
    })
    .collect())
}

/// Adds a row to one of the two sealed work queues, `conversation_inbound` or
/// `archive_outbox`; returns its id.
pub(crate) async fn push_work(c: &mut SqliteConnection, queue: WorkQueue) -> Result<i64> {
    let sql = match queue {
        WorkQueue::Inbound => "INSERT INTO conversation_inbound (sealed) VALUES (x'') RETURNING id",
        WorkQueue::Archive => "INSERT INTO archive_outbox (sealed) VALUES (x'') RETURNING id",
    };
    Ok(sqlx::query_scalar(sql).fetch_one(c).await?)
}

/// Sets a work row's sealed value (sealed under its id, so it is written after the insert).
pub(crate) async fn set_work(
    c: &mut SqliteConnection,
    queue: WorkQueue,
    id: i64,
    sealed: &[u8],
) -> Result<()> {
    let sql = match queue {
        WorkQueue::Inbound => "UPDATE conversation_inbound SET sealed = ? WHERE id = ?",
        WorkQueue::Archive => "UPDATE archive_outbox SET sealed = ? WHERE id = ?",
    };
    sqlx::query(sql).bind(sealed).bind(id).execute(c).await?;
    Ok(())
}

/// Every row of a work queue, oldest first: `(id, sealed)`.
pub(crate) async fn work(
    c: &mut SqliteConnection,
    queue: WorkQueue,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let sql = match queue {
        WorkQueue::Inbound => "SELECT id, sealed FROM conversation_inbound ORDER BY id",
        WorkQueue::Archive => "SELECT id, sealed FROM archive_outbox ORDER BY id",
    };
    Ok(sqlx::query(sql)
        .fetch_all(c)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Removes a work row once it was acted on.
pub(crate) async fn delete_work(c: &mut SqliteConnection, queue: WorkQueue, id: i64) -> Result<()> {
    let sql = match queue {
        WorkQueue::Inbound => "DELETE FROM conversation_inbound WHERE id = ?",
        WorkQueue::Archive => "DELETE FROM archive_outbox WHERE id = ?",
    };
    sqlx::query(sql).bind(id).execute(c).await?;
    Ok(())
}

/// An archive copy waiting to be filed (`archive_outbox`): its row id, the sealed copy and,
/// once sealed for filing, the sealed archive envelope (schema v10).
pub(crate) struct ArchiveOutboxRow {
    /// The row id (the context of both sealed values).
    pub(crate) id: i64,
    /// `ArchiveCopy`, sealed.
    pub(crate) sealed: Vec<u8>,
    /// The archive envelope's bytes, sealed; `None` until the copy is first filed.
    pub(crate) envelope: Option<Vec<u8>>,
}

/// Every archive copy waiting to be filed, oldest first.
pub(crate) async fn archive_outbox(c: &mut SqliteConnection) -> Result<Vec<ArchiveOutboxRow>> {
    Ok(
        sqlx::query("SELECT id, sealed, envelope FROM archive_outbox ORDER BY id")
            .fetch_all(c)
            .await?
            .into_iter()
            .map(|r| ArchiveOutboxRow {
                id: r.get(0),
                sealed: r.get(1),
                envelope: r.get(2),
            })
            .collect(),
    )
}

/// Keeps an archive copy's envelope, sealed (before it is first sent: every retry sends it).
pub(crate) async fn set_archive_envelope(
    c: &mut SqliteConnection,
    id: i64,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE archive_outbox SET envelope = ? WHERE id = ?")
        .bind(sealed)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// The two sealed work queues of clinic conversations (schema v7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkQueue {
    /// Conversation payloads received, to be checked against the membership and acted on.
    Inbound,
    /// Archive copies of sent messages, to be sealed to the archive key and filed.
    Archive,
}
