//! SQLite storage: WAL mode, `synchronous = FULL`, and group commit.
//!
//! Every write goes through one writer task that owns the only writing connection. It takes
//! whatever jobs are queued (up to [`MAX_BATCH`]), runs them in one transaction, commits once,
//! and only then answers each job. One fsync thus covers many sends, and an envelope is acked
//! only once it is on disk. Reads use a separate pool and never block the writer (WAL).
//!
//! Each statement is a round trip to sqlx's SQLite worker thread, so the hot path is batched:
//! all of a batch's stored envelopes go into multi-row `INSERT`s and all of its acknowledged
//! envelopes into one `DELETE ... RETURNING`, whatever the number of jobs. Other writes run one
//! job at a time, each with several statements in its own savepoint (all or nothing). A batched
//! statement that fails rolls the whole batch back: nothing of it is committed and every job in
//! it is answered with an error (so no job is ever half applied).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hushwire_proto::relay::{Delivery, DeviceAddress, OutgoingEnvelope, Receipt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row as _, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{
    Answer, ArchiveFiling, ClaimedBundle, CommitListener, Committed, ConversationUpdate, Enqueued,
    MailboxLimits, PreKeyUpload, Provisioned, Provisioning, Registration, RegistrationPolicy,
    Standing, Store, StoreError, StoredArchiveEnvelope, StoredConversation, Usage,
    archive_filing_digest, frame_usage, sequence_key, sql, to_i64, to_u64,
};

/// Most jobs committed together.
const MAX_BATCH: usize = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, identity BLOB NOT NULL,
    registered_at INTEGER NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS invites (
    token_hash BLOB PRIMARY KEY, expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS signed_prekeys (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, prekey BLOB NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS last_resort_kem_prekeys (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, prekey BLOB NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, kem INTEGER NOT NULL,
    key_id INTEGER NOT NULL, prekey BLOB NOT NULL, PRIMARY KEY (fingerprint, device_id, kem, key_id));
CREATE TABLE IF NOT EXISTS envelopes (
    position INTEGER PRIMARY KEY AUTOINCREMENT, server_id BLOB NOT NULL UNIQUE,
    recipient_fingerprint BLOB NOT NULL, recipient_device INTEGER NOT NULL,
    sender_fingerprint BLOB NOT NULL, sender_device INTEGER NOT NULL,
    server_time INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_by_recipient
    ON envelopes (recipient_fingerprint, recipient_device, position);
CREATE INDEX IF NOT EXISTS envelopes_by_time ON envelopes (server_time);
CREATE TABLE IF NOT EXISTS audit_records (
    chain_id BLOB NOT NULL, sequence INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (chain_id, sequence));
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain_id BLOB NOT NULL, count INTEGER NOT NULL, checkpoint BLOB NOT NULL,
    PRIMARY KEY (chain_id, count));
CREATE TABLE IF NOT EXISTS store_epochs (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, epoch INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint BLOB PRIMARY KEY, certificate BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revocation_lists (
    org_key BLOB PRIMARY KEY, sequence BLOB NOT NULL, list BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS device_lists (
    fingerprint BLOB PRIMARY KEY, sequence BLOB NOT NULL, list BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS suspended_devices (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, suspended_at INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS pending_wipes (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, command BLOB NOT NULL,
    ordered_at INTEGER NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS provisioning (
    slot BLOB PRIMARY KEY, sealed BLOB NOT NULL, owner_fingerprint BLOB NOT NULL,
    owner_device INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS provisioning_by_owner
    ON provisioning (owner_fingerprint, owner_device);
CREATE INDEX IF NOT EXISTS provisioning_by_expiry ON provisioning (expires_at);
CREATE TABLE IF NOT EXISTS conversations (
    id BLOB PRIMARY KEY, clinic BLOB NOT NULL, head_epoch INTEGER NOT NULL, head_hash BLOB NOT NULL,
    state INTEGER NOT NULL, opened_at INTEGER NOT NULL, waiting_since INTEGER NOT NULL,
    claimed INTEGER NOT NULL, last_activity INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_waiting ON conversations (state, waiting_since);
CREATE TABLE IF NOT EXISTS conversation_changes (
    conversation BLOB NOT NULL, epoch INTEGER NOT NULL, change BLOB NOT NULL,
    PRIMARY KEY (conversation, epoch));
CREATE TABLE IF NOT EXISTS conversation_members (
    conversation BLOB NOT NULL, fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL,
    PRIMARY KEY (conversation, fingerprint, device_id));
CREATE TABLE IF NOT EXISTS on_duty (
    fingerprint BLOB NOT NULL, device_id INTEGER NOT NULL, PRIMARY KEY (fingerprint, device_id));
CREATE TABLE IF NOT EXISTS conversation_pushes (
    position INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint BLOB NOT NULL,
    device_id INTEGER NOT NULL, frame BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS conversation_pushes_by_device
    ON conversation_pushes (fingerprint, device_id, position);
CREATE TABLE IF NOT EXISTS archive_envelopes (
    conversation BLOB NOT NULL, position INTEGER NOT NULL, envelope BLOB NOT NULL,
    filed_by_fingerprint BLOB NOT NULL, filed_by_device INTEGER NOT NULL, filed_at INTEGER NOT NULL,
    PRIMARY KEY (conversation, position));
CREATE TABLE IF NOT EXISTS archive_policies (
    org_key BLOB PRIMARY KEY, sequence BLOB NOT NULL, policy BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS archive_filings (
    conversation BLOB NOT NULL, digest BLOB NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (conversation, digest));
";

/// What a job gives back to the writer: how to answer its caller once the transaction's fate
/// (committed or not) is known. A failed job has already undone its own writes.
type Reply = Box<dyn FnOnce(bool) + Send>;
/// A write run on its own (everything but storing and acknowledging envelopes).
type Work = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Reply> + Send>;

/// One queued write.
enum Job {
    /// Envelopes to store: a batch's all go into multi-row `INSERT`s.
    Enqueue(EnqueueJob),
    /// Acknowledged envelopes to delete: a batch's all go into one `DELETE`.
    Ack(AckJob),
    /// Anything else, run alone.
    Work(Work),
}

/// [`Store::enqueue`] as data, so that the writer can batch it.
struct EnqueueJob {
    sender: DeviceAddress,
    envelopes: Vec<OutgoingEnvelope>,
    ids: Vec<[u8; 16]>,
    now_ms: u64,
    limits: MailboxLimits,
    reply: EnqueueReply,
}

/// Where an enqueue job's outcome goes.
type EnqueueReply = oneshot::Sender<Result<Enqueued, StoreError>>;

/// [`Store::ack`] as data, so that the writer can batch it.
struct AckJob {
    recipient: DeviceAddress,
    server_ids: Vec<[u8; 16]>,
    reply: oneshot::Sender<Result<Vec<[u8; 16]>, StoreError>>,
}

/// Most rows in one envelope `INSERT` (7 parameters each; SQLite allows 32,766 per statement).
/// A batch holds at most [`MAX_BATCH`] × 16 envelopes, so one statement takes them all.
const MAX_INSERT_ROWS: usize = 4096;
/// Most `(server_id, recipient)` tuples in one acknowledgement `DELETE` (3 parameters each).
const MAX_DELETE_ROWS: usize = 10_000;
/// Most rows in one audit record `INSERT` (3 parameters each).
const MAX_AUDIT_ROWS: usize = 1024;

/// `INSERT` of `rows` envelopes, returning each one's `(server_id, position)` (two columns,
/// where the acknowledgements' `DELETE` in the same query returns six).
fn insert_envelopes_sql(rows: usize) -> String {
    format!(
        "INSERT INTO envelopes (server_id, recipient_fingerprint, recipient_device, \
         sender_fingerprint, sender_device, server_time, payload) VALUES {} \
         RETURNING server_id, position;\n",
        placeholders(rows, 7)
    )
}

/// `DELETE` of up to `rows` acknowledged envelopes, each named by `(server_id,
/// recipient_fingerprint, recipient_device)`: an id only deletes its own recipient's envelope.
/// Each is found through the unique index on `server_id` (a row-value `IN` would scan). The
/// sender and size come back so that the mailbox's per-sender usage can be taken down.
fn delete_acked_sql(rows: usize) -> String {
    format!(
        "DELETE FROM envelopes WHERE position IN (SELECT e.position FROM (VALUES {}) AS v \
         JOIN envelopes AS e ON e.server_id = v.column1 AND e.recipient_fingerprint = v.column2 \
         AND e.recipient_device = v.column3) \
         RETURNING server_id, recipient_fingerprint, recipient_device, sender_fingerprint, \
         sender_device, length(payload);\n",
        placeholders(rows, 3)
    )
}

/// `INSERT`s of 1, 2, 4, ... [`MAX_AUDIT_ROWS`] audit records.
static INSERT_AUDIT: LazyLock<Vec<String>> = LazyLock::new(|| {
    powers_of_two(MAX_AUDIT_ROWS)
        .map(|n| {
            format!(
                "INSERT INTO audit_records (chain_id, sequence, record) VALUES {}",
                placeholders(n, 3)
            )
        })
        .collect()
});

/// 1, 2, 4, ... up to `max` (a power of two).
fn powers_of_two(max: usize) -> impl Iterator<Item = usize> {
    (0..=max.trailing_zeros()).map(|k| 1 << k)
}

/// `(?, ?), (?, ?)` for `rows` rows of `columns` columns.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// The statement of `sizes` (1, 2, 4, ... rows) for `rows` rows: the largest that fits, so
/// `n` rows take one statement per bit set in `n` (and sqlx's statement cache, 100 per
/// connection, holds every size).
fn chunk(sizes: &'static [String], rows: usize) -> (usize, &'static str) {
    let k = (usize::BITS - 1 - rows.max(1).leading_zeros()) as usize;
    let k = k.min(sizes.len().saturating_sub(1));
    (1 << k, sizes.get(k).map_or("", String::as_str))
}

/// What the writer knows without asking the database, so that storing or deleting an envelope
/// needs no query before it and the quota check is O(1) in mailbox size. Only the writer task touches
/// it; a failed commit clears it (it is reloaded lazily, one query per device).
#[derive(Default)]
struct MailboxCache {
    /// Devices known to be registered (registrations are never undone).
    registered: HashSet<DeviceAddress>,
    /// What waits per device, for devices whose mailbox was loaded.
    mailboxes: HashMap<DeviceAddress, Mailbox>,
}

/// What one device's mailbox holds, in total and per sender (for the sender's share).
#[derive(Clone, Debug, Default)]
struct Mailbox {
    total: Usage,
    senders: HashMap<DeviceAddress, Usage>,
}

impl Mailbox {
    fn held_from(&self, sender: &DeviceAddress) -> Usage {
        self.senders.get(sender).copied().unwrap_or_default()
    }

    fn add(&mut self, sender: DeviceAddress, u: Usage) {
        self.total.add(u);
        self.senders.entry(sender).or_default().add(u);
    }

    fn remove(&mut self, sender: DeviceAddress, u: Usage) {
        self.total.remove(u);
        if let Some(s) = self.senders.get_mut(&sender) {
            s.remove(u);
            if s.envelopes == 0 {
                self.senders.remove(&sender);
            }
        }
    }
}

/// SQLite-backed [`Store`]. One relay process per database file.
#[derive(Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
    cache: Arc<Mutex<MailboxCache>>,
    /// Told of each batch's envelopes after its commit (`Store::listen_for_commits`).
    listener: Arc<OnceLock<Arc<dyn CommitListener>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer task.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create {} with mode 0600: {e}",
                path.display()
            ))
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // The writer never checkpoints the WAL itself: SQLite's automatic checkpoint runs inside
        // the commit that crosses its threshold, so every few seconds one batch (and every send
        // in it) waited for pages to be copied into the database file and that file's fsync.
        // A separate connection checkpoints instead, beside the writer (see `run_checkpoints`).
        let mut writer =
            SqliteConnection::connect_with(&options.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
        // One transaction: a data directory of an earlier version gets `archive_filings` and
        // its backfill together, or neither (and tries again at the next start).
        let mut tx = writer.begin().await?;
        let filings_fresh: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) = 0 FROM sqlite_master WHERE type = 'table' AND name = 'archive_filings'",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        if filings_fresh != 0 {
            backfill_archive_filings(&mut tx).await?;
        }
        tx.commit().await?;
        let checkpointer = SqliteConnection::connect_with(&options).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (writes, jobs) = mpsc::channel(4096);
        let cache = Arc::new(Mutex::new(MailboxCache::default()));
        let listener = Arc::new(OnceLock::new());
        tokio::spawn(run_writer(writer, jobs, cache.clone(), listener.clone()));
        tokio::spawn(run_checkpoints(checkpointer, writes.downgrade()));
        Ok(Self {
            reads,
            writes,
            cache,
            listener,
        })
    }

    /// Runs a multi-statement `work` atomically (in its own savepoint) in the writer's next
    /// batch; answers after the batch commits.
    async fn write<T: Send + 'static>(
        &self,
        work: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        self.submit(true, work).await
    }

    /// Queues `work` for the writer, in its own savepoint when `savepoint` is set (work of more
    /// than one write statement must ask for one: a single statement is atomic by itself).
    async fn submit<T: Send + 'static>(
        &self,
        savepoint: bool,
        work: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Work = Box::new(move |conn| {
            Box::pin(async move {
                if savepoint {
                    let _ = sqlx::query("SAVEPOINT job").execute(&mut *conn).await;
                }
                let result = work(&mut *conn).await;
                if savepoint {
                    if result.is_err() {
                        let _ = sqlx::query("ROLLBACK TO job").execute(&mut *conn).await;
                    }
                    let _ = sqlx::query("RELEASE job").execute(&mut *conn).await;
                }
                answer(tx, result.map_err(StoreError::Database))
            })
        });
        self.queue(Job::Work(job), rx).await
    }

    /// Stores a signed list under `key` if its `sequence` is higher than the stored one's (one
    /// upsert, atomic by itself). Whether it was stored.
    async fn publish_if_newer(
        &self,
        statement: &'static sql::Shared,
        key: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.submit(false, move |c| {
            Box::pin(async move {
                let stored = sqlx::query(statement.sqlite)
                    .bind(key.to_vec())
                    .bind(sequence_key(sequence))
                    .bind(list)
                    .execute(&mut *c)
                    .await?;
                Ok(stored.rows_affected() == 1)
            })
        })
        .await
    }

    /// Hands `job` to the writer and waits for its answer (given after the batch's commit).
    async fn queue<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.submit_job(job, rx).await?.wait().await
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
}

/// How often the WAL is checkpointed into the database file. About as often as SQLite's own
/// 1,000-page threshold is crossed at a few hundred messages per second, so not more fsyncs
/// than before at low rates (each checkpoint syncs the WAL and the database file), and at
/// high rates far fewer pages copied twice.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on its own connection (`PASSIVE`: it copies
/// what no reader still needs and never blocks the writer, which keeps appending meanwhile).
/// The WAL is then reset by the writer's next transaction, as with automatic checkpoints. Ends
/// with the writer (when every handle of the store is dropped), or at a database error, which
/// is logged: the WAL then only grows until the relay restarts.
async fn run_checkpoints(mut conn: SqliteConnection, writer: mpsc::WeakSender<Job>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if writer.upgrade().is_none() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::error!("sqlite WAL checkpoint failed: {e}");
            return;
        }
    }
}

/// Creates the database file readable by its owner only (mode 0600), if it does not exist:
/// it holds who talks to whom. SQLite gives its `-wal` and `-shm` files the same mode.
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The answer to send on `tx` once the batch's fate is known: `result` if it committed (an
/// error stands either way: its job wrote nothing).
fn answer<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Reply {
    Box::new(move |committed| {
        let _ = tx.send(match result {
            Ok(v) if committed => Ok(v),
            Ok(_) => Err(StoreError::Closed),
            Err(e) => Err(e),
        });
    })
}

/// Time the writer spent per phase, logged (at debug level) every [`STATS_EVERY`].
#[derive(Default)]
struct WriterStats {
    batches: u64,
    jobs: u64,
    envelopes: u64,
    acks: u64,
    /// Round trips to the SQLite worker thread (statements sent; a batch's hot path is one).
    round_trips: u64,
    /// `BEGIN` and the other jobs, in batches that had some.
    work: Duration,
    /// Quota and registration checks (from the cache, or one query on a miss).
    admit: Duration,
    /// The batched `DELETE`, `INSERT` and the `COMMIT` (with its fsync).
    write: Duration,
}

/// How often the writer logs its [`WriterStats`].
const STATS_EVERY: Duration = Duration::from_secs(5);

impl WriterStats {
    fn log(&self, over: Duration) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            "sqlite writer over {:.1} s: {} batches, {} jobs, {} envelopes stored, {} acked, \
             {} round trips; ms in other jobs {:.0}, checks {:.0}, delete+insert+commit {:.0}",
            over.as_secs_f64(),
            self.batches,
            self.jobs,
            self.envelopes,
            self.acks,
            self.round_trips,
            ms(self.work),
            ms(self.admit),
            ms(self.write),
        );
    }
}

async fn run_writer(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    cache: Arc<Mutex<MailboxCache>>,
    listener: Arc<OnceLock<Arc<dyn CommitListener>>>,
) {
    let mut stats = WriterStats::default();
    let mut stats_since = Instant::now();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.batches += 1;
        stats.jobs += batch.len() as u64;
        let mut works = Vec::new();
        let mut enqueues = Vec::new();
        let mut acks = Vec::new();
        for job in batch {
            match job {
                Job::Work(w) => works.push(w),
                Job::Enqueue(e) => enqueues.push(e),
                Job::Ack(a) => acks.push(a),
            }
        }
        stats.envelopes += enqueues.iter().map(|e| e.ids.len() as u64).sum::<u64>();
        stats.acks += acks.iter().map(|a| a.server_ids.len() as u64).sum::<u64>();
        let mut answers: Vec<Reply> = Vec::with_capacity(works.len() + enqueues.len() + acks.len());
        let mut clock = Instant::now();
        let mut lap = |phase: &mut Duration| {
            let now = Instant::now();
            *phase += now - clock;
            clock = now;
        };
        // Every job of a batch was queued before any was answered, so any order is one their
        // callers could have seen. Other jobs (registrations, prekeys, audit, expiry) run first,
        // one by one; then the enqueue checks; then, in one round trip, the acknowledgements'
        // DELETE, the envelopes' INSERT and the COMMIT (with BEGIN too if no job came before).
        let mut began = false;
        let mut ok = true;
        if !works.is_empty() {
            stats.round_trips += 1;
            began = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .is_ok();
            ok = began;
            if began {
                for work in works {
                    answers.push(work(&mut conn).await);
                }
            }
            // Jobs that did not run are dropped unanswered: their callers see `Closed`.
        }
        lap(&mut stats.work);
        let mut hot = HotPath::default();
        if ok {
            // Outside a transaction when nothing came before: this connection is the only
            // writer, so what it reads cannot change before its own write.
            hot.admit(&mut conn, &cache, enqueues, &mut answers).await;
            hot.wanted(&acks);
        }
        lap(&mut stats.admit);
        let committed = if !ok {
            false
        } else if hot.is_empty() && !began {
            // Nothing to write (every enqueue refused, or only empty acks: a client's "mailbox
            // drained" barrier). The acks are still answered, with nothing deleted.
            hot.answer(&cache, acks, HashMap::new(), &mut answers);
            true
        } else {
            stats.round_trips += 1;
            match hot.write(&mut conn, !began).await {
                Ok((deleted, committed)) => {
                    // Before the senders hear `Sent`: the recipients' connections can write
                    // while the senders' answers are on their way.
                    if let Some(listener) = listener.get()
                        && !committed.is_empty()
                    {
                        listener.committed(committed);
                    }
                    hot.answer(&cache, acks, deleted, &mut answers);
                    true
                }
                Err(e) => {
                    tracing::error!("sqlite batch failed: {e}");
                    false
                }
            }
        };
        lap(&mut stats.write);
        if !committed {
            tracing::error!(
                "sqlite batch not committed; {} writes refused",
                answers.len()
            );
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            if let Ok(mut cache) = cache.lock() {
                // Cache updates made for this batch may describe writes that did not happen.
                *cache = MailboxCache::default();
            }
        }
        for answer in answers {
            answer(committed);
        }
        if stats_since.elapsed() >= STATS_EVERY {
            stats.log(stats_since.elapsed());
            stats = WriterStats::default();
            stats_since = Instant::now();
        }
    }
}

/// One envelope row as stored.
struct EnvelopeRow {
    id: [u8; 16],
    recipient: DeviceAddress,
    sender: DeviceAddress,
    time_ms: u64,
    payload: Vec<u8>,
}

/// Acknowledged envelopes deleted by a batch: `(server_id, recipient)` to its sender and size.
type Deleted = HashMap<([u8; 16], DeviceAddress), (DeviceAddress, Usage)>;

/// A batch's stores and acknowledgements, written in one round trip.
#[derive(Default)]
struct HotPath {
    /// Accepted envelopes, in order (so each frame's keep theirs: positions only grow).
    rows: Vec<EnvelopeRow>,
    /// What accepted envelopes add per recipient, applied to the cache once written.
    added: HashMap<DeviceAddress, Mailbox>,
    /// Accepted enqueue jobs' answers, sent once written.
    stored: Vec<(EnqueueReply, Vec<Receipt>)>,
    /// `(server_id, recipient)` to delete, without repeats.
    wanted: Vec<([u8; 16], DeviceAddress)>,
}

impl HotPath {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.wanted.is_empty()
    }

    /// Checks each enqueue job in turn (registration, then quota counting what the jobs before
    /// it add): refusals and errors are answered now, accepted jobs wait for the write.
    async fn admit(
        &mut self,
        c: &mut SqliteConnection,
        cache: &Mutex<MailboxCache>,
        jobs: Vec<EnqueueJob>,
        answers: &mut Vec<Reply>,
    ) {
        for job in jobs {
            match admit(c, cache, &job, &self.added).await {
                Err(e) => answers.push(answer(job.reply, Err(StoreError::Database(e)))),
                Ok(Some(refused)) => answers.push(answer(job.reply, Ok(refused))),
                Ok(None) => {
                    let mut receipts = Vec::with_capacity(job.envelopes.len());
                    for (e, id) in job.envelopes.into_iter().zip(job.ids) {
                        self.added
                            .entry(e.recipient)
                            .or_default()
                            .add(job.sender, Usage::one(e.payload.len()));
                        receipts.push(Receipt {
                            server_id: id,
                            server_time_ms: job.now_ms,
                        });
                        self.rows.push(EnvelopeRow {
                            id,
                            recipient: e.recipient,
                            sender: job.sender,
                            time_ms: job.now_ms,
                            payload: e.payload,
                        });
                    }
                    self.stored.push((job.reply, receipts));
                }
            }
        }
    }

    /// Collects the acknowledged ids to delete.
    fn wanted(&mut self, jobs: &[AckJob]) {
        let mut seen = HashSet::new();
        for job in jobs {
            for id in &job.server_ids {
                if seen.insert((*id, job.recipient)) {
                    self.wanted.push((*id, job.recipient));
                }
            }
        }
    }

    /// One query: `BEGIN` (if `begin`), the `DELETE`, the `INSERT` and `COMMIT`. sqlx runs a
    /// query of several statements in one call to its worker thread, binding the arguments in
    /// order. Not cached (its text depends on the batch's size); preparing it costs far less
    /// than the round trips it saves. Returns the `(server_id, recipient)` deleted and the
    /// envelopes stored, in position order. On `Err` the statements after the failing one did
    /// not run: the caller rolls back.
    async fn write(
        &mut self,
        c: &mut SqliteConnection,
        begin: bool,
    ) -> Result<(Deleted, Vec<Committed>), sqlx::Error> {
        let mut sql = String::new();
        if begin {
            sql.push_str("BEGIN IMMEDIATE;\n");
        }
        for part in self.wanted.chunks(MAX_DELETE_ROWS) {
            sql.push_str(&delete_acked_sql(part.len()));
        }
        for part in self.rows.chunks(MAX_INSERT_ROWS) {
            sql.push_str(&insert_envelopes_sql(part.len()));
        }
        sql.push_str("COMMIT;");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for (id, recipient) in &self.wanted {
            query = query
                .bind(id.to_vec())
                .bind(fp(recipient))
                .bind(recipient.device_id);
        }
        for row in &self.rows {
            query = query
                .bind(row.id.to_vec())
                .bind(fp(&row.recipient))
                .bind(row.recipient.device_id)
                .bind(fp(&row.sender))
                .bind(row.sender.device_id)
                .bind(to_i64(row.time_ms))
                .bind(row.payload.as_slice());
        }
        let mut deleted = HashMap::new();
        let mut positions = HashMap::with_capacity(self.rows.len());
        for row in query.fetch_all(&mut *c).await? {
            let id: Vec<u8> = row.try_get(0)?;
            if row.columns().len() == 2 {
                positions.insert(id, row.try_get::<i64, _>(1)?);
                continue;
            }
            let (Some(recipient), Some(sender)) = (address_at(&row, 1), address_at(&row, 3)) else {
                continue;
            };
            let len: i64 = row.try_get(5)?;
            if let Ok(id) = <[u8; 16]>::try_from(id) {
                let freed = Usage {
                    envelopes: 1,
                    bytes: len,
                };
                deleted.insert((id, recipient), (sender, freed));
            }
        }
        let mut committed: Vec<Committed> = std::mem::take(&mut self.rows)
            .into_iter()
            .filter_map(|row| {
                Some(Committed {
                    recipient: row.recipient,
                    position: *positions.get(row.id.as_slice())?,
                    delivery: Delivery {
                        server_id: row.id,
                        sender: row.sender,
                        server_time_ms: row.time_ms,
                        payload: row.payload,
                    },
                })
            })
            .collect();
        committed.sort_by_key(|c| c.position);
        Ok((deleted, committed))
    }

    /// After the write: updates the cache and answers. Each ack job gets the ids of its own
    /// recipient that were deleted, each id once over the batch, as if the jobs had run one
    /// after the other.
    fn answer(
        self,
        cache: &Mutex<MailboxCache>,
        acks: Vec<AckJob>,
        mut deleted: Deleted,
        answers: &mut Vec<Reply>,
    ) {
        if let Ok(mut m) = cache.lock() {
            for (recipient, added) in self.added {
                if let Some(mailbox) = m.mailboxes.get_mut(&recipient) {
                    for (sender, u) in added.senders {
                        mailbox.add(sender, u);
                    }
                }
            }
        }
        answers.extend(
            self.stored
                .into_iter()
                .map(|(tx, receipts)| answer(tx, Ok(Enqueued::Stored(receipts)))),
        );
        for job in acks {
            let mut mine = Vec::new();
            for id in job.server_ids {
                if let Some((sender, freed)) = deleted.remove(&(id, job.recipient)) {
                    mine.push(id);
                    if let Ok(mut m) = cache.lock()
                        && let Some(mailbox) = m.mailboxes.get_mut(&job.recipient)
                    {
                        mailbox.remove(sender, freed);
                    }
                }
            }
            answers.push(answer(job.reply, Ok(mine)));
        }
    }
}

/// Whether `job` may be stored: `Some` refusal if a recipient is unknown or its mailbox would
/// go over its limits, counting the envelopes accepted before it in this batch (`added`) and
/// all of its own frame's envelopes for that recipient.
async fn admit(
    c: &mut SqliteConnection,
    cache: &Mutex<MailboxCache>,
    job: &EnqueueJob,
    added: &HashMap<DeviceAddress, Mailbox>,
) -> Result<Option<Enqueued>, sqlx::Error> {
    for (recipient, adding) in frame_usage(&job.envelopes) {
        if !is_registered(c, cache, recipient).await? {
            return Ok(Some(Enqueued::UnknownRecipient(recipient)));
        }
        let mut held = mailbox(c, cache, recipient).await?;
        if let Some(earlier) = added.get(&recipient) {
            for (sender, u) in &earlier.senders {
                held.add(*sender, *u);
            }
        }
        let refusal =
            job.limits
                .refusal(recipient, held.total, held.held_from(&job.sender), adding);
        if refusal.is_some() {
            return Ok(refusal);
        }
    }
    Ok(None)
}

/// Whether `address` is registered, from the cache or (once) from the database.
async fn is_registered(
    c: &mut SqliteConnection,
    cache: &Mutex<MailboxCache>,
    address: DeviceAddress,
) -> Result<bool, sqlx::Error> {
    if cache.lock().is_ok_and(|m| m.registered.contains(&address)) {
        return Ok(true);
    }
    let known: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM devices WHERE fingerprint = ? AND device_id = ?")
            .bind(fp(&address))
            .bind(address.device_id)
            .fetch_optional(&mut *c)
            .await?;
    if known.is_some()
        && let Ok(mut m) = cache.lock()
    {
        m.registered.insert(address);
    }
    Ok(known.is_some())
}

/// What waits for `address`, from the cache or (once) summed in the database per sender.
async fn mailbox(
    c: &mut SqliteConnection,
    cache: &Mutex<MailboxCache>,
    address: DeviceAddress,
) -> Result<Mailbox, sqlx::Error> {
    if let Some(m) = cache
        .lock()
        .ok()
        .and_then(|m| m.mailboxes.get(&address).cloned())
    {
        return Ok(m);
    }
    let rows = sqlx::query(
        "SELECT sender_fingerprint, sender_device, COUNT(*), SUM(length(payload)) FROM envelopes
         WHERE recipient_fingerprint = ? AND recipient_device = ? GROUP BY sender_fingerprint, sender_device",
    )
    .bind(fp(&address))
    .bind(address.device_id)
    .fetch_all(&mut *c)
    .await?;
    let mut mailbox = Mailbox::default();
    for row in rows {
        let usage = Usage {
            envelopes: row.try_get(2)?,
            bytes: row.try_get(3)?,
        };
        // A sender that does not decode still counts towards the total.
        let sender = address_at(&row, 0).unwrap_or(DeviceAddress {
            fingerprint: [0; 32],
            device_id: 0,
        });
        mailbox.add(sender, usage);
    }
    if let Ok(mut m) = cache.lock() {
        m.mailboxes.insert(address, mailbox.clone());
    }
    Ok(mailbox)
}

/// The device address in columns `at` (fingerprint) and `at + 1` (device id) of `row`.
pub(crate) fn address_at<R: sqlx::Row>(row: &R, at: usize) -> Option<DeviceAddress>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let fingerprint: Vec<u8> = row.try_get(at).ok()?;
    let device_id: i64 = row.try_get(at + 1).ok()?;
    Some(DeviceAddress {
        fingerprint: fingerprint.try_into().ok()?,
        device_id: u32::try_from(device_id).ok()?,
    })
}

/// Marks `device` suspended (again: nothing changes): what `suspend` and `order_wipe` share.
async fn suspend_on(
    c: &mut SqliteConnection,
    device: DeviceAddress,
    now_ms: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::SUSPEND.sqlite)
        .bind(fp(&device))
        .bind(i64::from(device.device_id))
        .bind(to_i64(now_ms))
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn fp(a: &DeviceAddress) -> Vec<u8> {
    a.fingerprint.to_vec()
}

impl Store for SqliteStore {
    /// The writer is the only connection that writes and positions only grow, so commit
    /// order is position order: the listener is told of every envelope after its commit.
    fn listen_for_commits(&self, listener: Arc<dyn CommitListener>) -> bool {
        self.listener.set(listener).is_ok()
    }

    async fn register(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        invite: Option<[u8; 32]>,
        policy: RegistrationPolicy,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let existing: Option<Vec<u8>> =
                    sqlx::query_scalar(sql::IDENTITY.sqlite)
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .fetch_optional(&mut *c)
                        .await?;
                if let Some(existing) = existing {
                    return Ok(if existing == identity { Registration::AlreadyRegistered } else { Registration::Refused });
                }
                if policy == RegistrationPolicy::Invite {
                    let Some(token) = invite else { return Ok(Registration::Refused) };
                    let used = sqlx::query("UPDATE invites SET used = 1 WHERE token_hash = ? AND used = 0 AND expires_at > ?")
                        .bind(token.to_vec())
                        .bind(to_i64(now_ms))
                        .execute(&mut *c)
                        .await?;
                    if used.rows_affected() != 1 {
                        return Ok(Registration::Refused);
                    }
                }
                sqlx::query("INSERT INTO devices (fingerprint, device_id, identity, registered_at) VALUES (?, ?, ?, ?)")
                    .bind(fp(&address))
                    .bind(address.device_id)
                    .bind(identity)
                    .bind(to_i64(now_ms))
                    .execute(&mut *c)
                    .await?;
                Ok(Registration::Registered)
            })
        })
        .await
    }

    async fn create_invite(
        &self,
        token_hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(sql::INSERT_INVITE.sqlite)
                    .bind(token_hash.to_vec())
                    .bind(to_i64(expires_at_ms))
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn identity(&self, address: DeviceAddress) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::IDENTITY.sqlite)
            .bind(fp(&address))
            .bind(address.device_id)
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn upload_prekeys(
        &self,
        address: DeviceAddress,
        upload: PreKeyUpload,
        max_one_time: u32,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                if let Some(spk) = upload.signed_prekey {
                    sqlx::query("INSERT OR REPLACE INTO signed_prekeys (fingerprint, device_id, prekey) VALUES (?, ?, ?)")
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .bind(spk)
                        .execute(&mut *c)
                        .await?;
                }
                if let Some(kem) = upload.last_resort_kem_prekey {
                    sqlx::query("INSERT OR REPLACE INTO last_resort_kem_prekeys (fingerprint, device_id, prekey) VALUES (?, ?, ?)")
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .bind(kem)
                        .execute(&mut *c)
                        .await?;
                }
                for (kem, keys) in [(0i64, upload.one_time), (1, upload.kem_one_time)] {
                    let held: i64 = sqlx::query_scalar(
                        sql::ONE_TIME_HELD.sqlite,
                    )
                    .bind(fp(&address))
                    .bind(address.device_id)
                    .bind(kem)
                    .fetch_one(&mut *c)
                    .await?;
                    let room = usize::try_from(i64::from(max_one_time) - held).unwrap_or(0);
                    for (id, key) in keys.into_iter().take(room) {
                        sqlx::query(
                            "INSERT OR REPLACE INTO one_time_prekeys (fingerprint, device_id, kem, key_id, prekey) VALUES (?, ?, ?, ?, ?)",
                        )
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .bind(kem)
                        .bind(id)
                        .bind(key)
                        .execute(&mut *c)
                        .await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn prekey_counts(&self, address: DeviceAddress) -> Result<(u32, u32), StoreError> {
        let rows = sqlx::query(sql::PREKEY_COUNTS.sqlite)
            .bind(fp(&address))
            .bind(address.device_id)
            .fetch_all(&self.reads)
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
        // Runs in the single writer: the select and the delete cannot interleave with another
        // claim, so a one-time key is handed out at most once.
        self.write(move |c| {
            Box::pin(async move {
                let identity: Option<Vec<u8>> =
                    sqlx::query_scalar(sql::IDENTITY.sqlite)
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .fetch_optional(&mut *c)
                        .await?;
                let signed: Option<Vec<u8>> =
                    sqlx::query_scalar(sql::SIGNED_PREKEY.sqlite)
                        .bind(fp(&address))
                        .bind(address.device_id)
                        .fetch_optional(&mut *c)
                        .await?;
                let (Some(identity), Some(signed_prekey)) = (identity, signed) else { return Ok(None) };
                let last_resort: Option<Vec<u8>> = sqlx::query_scalar(
                    sql::LAST_RESORT_PREKEY.sqlite,
                )
                .bind(fp(&address))
                .bind(address.device_id)
                .fetch_optional(&mut *c)
                .await?;
                let mut take = async |kem: i64| -> Result<Option<Vec<u8>>, sqlx::Error> {
                    if !one_time {
                        return Ok(None);
                    }
                    sqlx::query_scalar(
                        "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys
                         WHERE fingerprint = ? AND device_id = ? AND kem = ? ORDER BY key_id LIMIT 1) RETURNING prekey",
                    )
                    .bind(fp(&address))
                    .bind(address.device_id)
                    .bind(kem)
                    .fetch_optional(&mut *c)
                    .await
                };
                // The ML-KEM key first: a device without any leaves its one-time X25519 keys
                // untouched (returning Ok(None) commits whatever was deleted before it).
                let kem = match take(1).await? {
                    Some(k) => k,
                    None => match last_resort {
                        Some(k) => k,
                        None => return Ok(None),
                    },
                };
                let one_time = take(0).await?;
                Ok(Some(ClaimedBundle { identity, signed_prekey, one_time, kem }))
            })
        })
        .await
    }

    async fn submit_enqueue(
        &self,
        sender: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Result<Answer<Enqueued>, StoreError> {
        let ids: Vec<[u8; 16]> = envelopes.iter().map(|_| crate::random_id()).collect();
        let (reply, rx) = oneshot::channel();
        let job = EnqueueJob {
            sender,
            envelopes,
            ids,
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
            "SELECT position, server_id, sender_fingerprint, sender_device, server_time, payload FROM envelopes
             WHERE recipient_fingerprint = ? AND recipient_device = ? AND position > ? ORDER BY position LIMIT ?",
        )
        .bind(fp(&recipient))
        .bind(recipient.device_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(|row| row_to_delivery(&row)).collect()
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
        let cache = self.cache.clone();
        self.write(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "DELETE FROM envelopes WHERE server_time < ? RETURNING recipient_fingerprint, recipient_device",
                )
                .bind(to_i64(before_ms))
                .fetch_all(&mut *c)
                .await?;
                let expired = expired_by_recipient(&rows);
                // Their per-sender usage changed: recounted when next needed.
                if let Ok(mut m) = cache.lock() {
                    for (recipient, _) in &expired {
                        m.mailboxes.remove(recipient);
                    }
                }
                Ok(expired)
            })
        })
        .await
    }

    async fn audit_last(&self, chain_id: [u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::AUDIT_LAST.sqlite)
            .bind(chain_id.to_vec())
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn append_audit(
        &self,
        chain_id: [u8; 16],
        records: Vec<(u64, Vec<u8>)>,
        checkpoint: Option<(u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                // A flush holds half a second of events (thousands of records under load): a few
                // multi-row statements, not one statement (one worker round trip) per record.
                let mut records = records.into_iter().peekable();
                while records.peek().is_some() {
                    let (n, sql) = chunk(&INSERT_AUDIT, records.len());
                    let mut query = sqlx::query(sql);
                    for (sequence, record) in records.by_ref().take(n) {
                        query = query.bind(chain_id.to_vec()).bind(to_i64(sequence)).bind(record);
                    }
                    query.execute(&mut *c).await?;
                }
                if let Some((count, bytes)) = checkpoint {
                    sqlx::query("INSERT OR REPLACE INTO audit_checkpoints (chain_id, count, checkpoint) VALUES (?, ?, ?)")
                        .bind(chain_id.to_vec())
                        .bind(to_i64(count))
                        .bind(bytes)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn audit_records(
        &self,
        chain_id: [u8; 16],
        from: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::AUDIT_RECORDS.sqlite)
            .bind(chain_id.to_vec())
            .bind(to_i64(from))
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?)
    }

    async fn audit_checkpoints(&self, chain_id: [u8; 16]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::AUDIT_CHECKPOINTS.sqlite)
            .bind(chain_id.to_vec())
            .fetch_all(&self.reads)
            .await?)
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::QUEUE_DEPTH.sqlite)
            .fetch_one(&self.reads)
            .await?;
        Ok(to_u64(n))
    }

    async fn record_store_epoch(
        &self,
        device: DeviceAddress,
        epoch: u64,
    ) -> Result<u64, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let before: Option<i64> = sqlx::query_scalar(
                    "SELECT epoch FROM store_epochs WHERE fingerprint = ? AND device_id = ?",
                )
                .bind(fp(&device))
                .bind(i64::from(device.device_id))
                .fetch_optional(&mut *c)
                .await?;
                sqlx::query(
                    "INSERT INTO store_epochs (fingerprint, device_id, epoch) VALUES (?, ?, ?)
                     ON CONFLICT (fingerprint, device_id)
                     DO UPDATE SET epoch = MAX(epoch, excluded.epoch)",
                )
                .bind(fp(&device))
                .bind(i64::from(device.device_id))
                .bind(to_i64(epoch))
                .execute(&mut *c)
                .await?;
                Ok(before.map_or(0, to_u64))
            })
        })
        .await
    }
    async fn register_certified(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        certificate: Vec<u8>,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let existing: Option<Vec<u8>> = sqlx::query_scalar(sql::IDENTITY.sqlite)
                    .bind(fp(&address))
                    .bind(address.device_id)
                    .fetch_optional(&mut *c)
                    .await?;
                if existing.as_ref().is_some_and(|e| *e != identity) {
                    return Ok(Registration::Refused);
                }
                let certified: i64 = sqlx::query_scalar(sql::HAS_CERTIFICATE.sqlite)
                    .bind(fp(&address))
                    .fetch_one(&mut *c)
                    .await?;
                let devices: i64 = sqlx::query_scalar(sql::IDENTITY_DEVICES.sqlite)
                    .bind(fp(&address))
                    .fetch_one(&mut *c)
                    .await?;
                if certified == 0 && devices > 0 {
                    return Ok(Registration::PatientIdentity);
                }
                sqlx::query(sql::UPSERT_CERTIFICATE.sqlite)
                    .bind(fp(&address))
                    .bind(certificate)
                    .execute(&mut *c)
                    .await?;
                if existing.is_some() {
                    return Ok(Registration::AlreadyRegistered);
                }
                sqlx::query(
                    "INSERT INTO devices (fingerprint, device_id, identity, registered_at) VALUES (?, ?, ?, ?)",
                )
                .bind(fp(&address))
                .bind(address.device_id)
                .bind(identity)
                .bind(to_i64(now_ms))
                .execute(&mut *c)
                .await?;
                Ok(Registration::Registered)
            })
        })
        .await
    }

    async fn certificate(&self, identity: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::CERTIFICATE.sqlite)
            .bind(identity.to_vec())
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn replace_certificate(
        &self,
        identity: [u8; 32],
        certificate: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.submit(false, move |c| {
            Box::pin(async move {
                let changed = sqlx::query(sql::REPLACE_CERTIFICATE.sqlite)
                    .bind(certificate)
                    .bind(identity.to_vec())
                    .execute(&mut *c)
                    .await?;
                Ok(changed.rows_affected() == 1)
            })
        })
        .await
    }

    async fn standing(&self, device: DeviceAddress) -> Result<Standing, StoreError> {
        let row = sqlx::query(sql::STANDING.sqlite)
            .bind(fp(&device))
            .bind(i64::from(device.device_id))
            .bind(fp(&device))
            .bind(i64::from(device.device_id))
            .bind(fp(&device))
            .bind(fp(&device))
            .fetch_one(&self.reads)
            .await?;
        Ok(Standing {
            suspended: row.try_get::<i64, _>(0)? > 0,
            wipe: row.try_get(1)?,
            certificate: row.try_get(2)?,
            device_list: row.try_get(3)?,
        })
    }

    async fn revocation_list(&self, org: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::REVOCATION_LIST.sqlite)
            .bind(org.to_vec())
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn publish_revocation_list(
        &self,
        org: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.publish_if_newer(&sql::PUBLISH_REVOCATION_LIST, org, sequence, list)
            .await
    }

    async fn suspend(&self, device: DeviceAddress, now_ms: u64) -> Result<(), StoreError> {
        self.submit(false, move |c| {
            Box::pin(async move { suspend_on(c, device, now_ms).await })
        })
        .await
    }

    async fn order_wipe(
        &self,
        device: DeviceAddress,
        command: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(sql::ORDER_WIPE.sqlite)
                    .bind(fp(&device))
                    .bind(i64::from(device.device_id))
                    .bind(command)
                    .bind(to_i64(now_ms))
                    .execute(&mut *c)
                    .await?;
                suspend_on(c, device, now_ms).await
            })
        })
        .await
    }

    async fn device_list(&self, identity: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::DEVICE_LIST.sqlite)
            .bind(identity.to_vec())
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn publish_device_list(
        &self,
        identity: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.publish_if_newer(&sql::PUBLISH_DEVICE_LIST, identity, sequence, list)
            .await
    }

    async fn identity_devices(&self, identity: [u8; 32]) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::IDENTITY_DEVICES.sqlite)
            .bind(identity.to_vec())
            .fetch_one(&self.reads)
            .await?;
        Ok(to_u64(n))
    }

    async fn put_provisioning(
        &self,
        message: Provisioning,
        now_ms: u64,
        max_live: u32,
    ) -> Result<Provisioned, StoreError> {
        // One writer: the count and the insert cannot interleave with another put.
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(sql::DELETE_EXPIRED_PROVISIONING.sqlite)
                    .bind(to_i64(now_ms))
                    .execute(&mut *c)
                    .await?;
                let live: i64 = sqlx::query_scalar(sql::LIVE_PROVISIONING.sqlite)
                    .bind(fp(&message.owner))
                    .bind(i64::from(message.owner.device_id))
                    .bind(to_i64(now_ms))
                    .fetch_one(&mut *c)
                    .await?;
                if live >= i64::from(max_live) {
                    return Ok(Provisioned::TooMany);
                }
                let filed = sqlx::query(sql::INSERT_PROVISIONING.sqlite)
                    .bind(message.slot.to_vec())
                    .bind(message.sealed)
                    .bind(fp(&message.owner))
                    .bind(i64::from(message.owner.device_id))
                    .bind(to_i64(message.expires_at_ms))
                    .execute(&mut *c)
                    .await?;
                Ok(if filed.rows_affected() == 1 {
                    Provisioned::Stored
                } else {
                    Provisioned::SlotTaken
                })
            })
        })
        .await
    }

    async fn take_provisioning(
        &self,
        slot: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.submit(false, move |c| {
            Box::pin(async move {
                let row = sqlx::query(sql::TAKE_PROVISIONING.sqlite)
                    .bind(slot.to_vec())
                    .fetch_optional(&mut *c)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let sealed: Vec<u8> = row.try_get(0)?;
                let expires_at: i64 = row.try_get(1)?;
                Ok((to_u64(expires_at) > now_ms).then_some(sealed))
            })
        })
        .await
    }
    async fn open_conversation(
        &self,
        conversation: StoredConversation,
        change: Vec<u8>,
        members: Vec<DeviceAddress>,
        pushes: Vec<(DeviceAddress, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let inserted = sqlx::query(sql::INSERT_CONVERSATION.sqlite)
                    .bind(conversation.id.to_vec())
                    .bind(conversation.clinic.to_vec())
                    .bind(to_i64(conversation.head_epoch))
                    .bind(conversation.head_hash.to_vec())
                    .bind(i64::from(conversation.state))
                    .bind(to_i64(conversation.opened_at))
                    .bind(to_i64(conversation.waiting_since))
                    .bind(i64::from(conversation.claimed))
                    .bind(to_i64(conversation.last_activity_ms))
                    .execute(&mut *c)
                    .await?;
                if inserted.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(sql::INSERT_CHANGE.sqlite)
                    .bind(conversation.id.to_vec())
                    .bind(0i64)
                    .bind(change)
                    .execute(&mut *c)
                    .await?;
                store_members_and_pushes(c, conversation.id, &members, &pushes).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn open_conversations_of(&self, fingerprint: [u8; 32]) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(sql::OPEN_CONVERSATIONS_OF.sqlite)
            .bind(fingerprint.to_vec())
            .fetch_one(&self.reads)
            .await?;
        Ok(super::to_u64(count))
    }

    async fn conversation(&self, id: [u8; 16]) -> Result<Option<StoredConversation>, StoreError> {
        let row = sqlx::query(sql::CONVERSATION.sqlite)
            .bind(id.to_vec())
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(sql::conversation_from_row).transpose()
    }

    async fn conversation_changes(
        &self,
        id: [u8; 16],
        from_epoch: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::CHANGES.sqlite)
            .bind(id.to_vec())
            .bind(to_i64(from_epoch))
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?)
    }

    async fn conversation_members(&self, id: [u8; 16]) -> Result<Vec<DeviceAddress>, StoreError> {
        let rows = sqlx::query(sql::MEMBERS.sqlite)
            .bind(id.to_vec())
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| address_at(r, 0).ok_or_else(|| StoreError::Corrupt("member row".into())))
            .collect()
    }

    async fn update_conversation(&self, update: ConversationUpdate) -> Result<bool, StoreError> {
        // One writer and one transaction: the compare-and-set comes first, and when it matches
        // no row nothing else is written.
        self.write(move |c| {
            Box::pin(async move {
                let next = update.expected_epoch + update.changes.len() as u64;
                let updated = sqlx::query(sql::UPDATE_CONVERSATION_HEAD.sqlite)
                    .bind(to_i64(next))
                    .bind(update.head_hash.to_vec())
                    .bind(i64::from(update.state))
                    .bind(to_i64(update.waiting_since))
                    .bind(i64::from(update.claimed))
                    .bind(to_i64(update.now_ms))
                    .bind(update.id.to_vec())
                    .bind(to_i64(update.expected_epoch))
                    .bind(i64::from(update.require_unclaimed))
                    .execute(&mut *c)
                    .await?;
                if updated.rows_affected() != 1 {
                    return Ok(false);
                }
                for (i, change) in update.changes.into_iter().enumerate() {
                    sqlx::query(sql::INSERT_CHANGE.sqlite)
                        .bind(update.id.to_vec())
                        .bind(to_i64(update.expected_epoch + i as u64))
                        .bind(change)
                        .execute(&mut *c)
                        .await?;
                }
                store_members_and_pushes(c, update.id, &update.members, &update.pushes).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn waiting_conversations(
        &self,
        limit: u32,
    ) -> Result<Vec<StoredConversation>, StoreError> {
        let rows = sqlx::query(sql::WAITING.sqlite)
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(sql::conversation_from_row).collect()
    }

    async fn claimed_conversations(
        &self,
        after: Option<[u8; 16]>,
        limit: u32,
    ) -> Result<Vec<StoredConversation>, StoreError> {
        let rows = sqlx::query(sql::CLAIMED_AFTER.sqlite)
            // An empty id sorts before every id.
            .bind(after.map_or_else(Vec::new, |a| a.to_vec()))
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(sql::conversation_from_row).collect()
    }

    async fn set_on_duty(&self, device: DeviceAddress, on_duty: bool) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let statement = if on_duty {
                    sql::SET_ON_DUTY.sqlite
                } else {
                    sql::SET_OFF_DUTY.sqlite
                };
                sqlx::query(statement)
                    .bind(fp(&device))
                    .bind(i64::from(device.device_id))
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn on_duty(&self, limit: u32) -> Result<Vec<DeviceAddress>, StoreError> {
        let rows = sqlx::query(sql::ON_DUTY.sqlite)
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| address_at(r, 0).ok_or_else(|| StoreError::Corrupt("on-duty row".into())))
            .collect()
    }

    async fn push(&self, pushes: Vec<(DeviceAddress, Vec<u8>)>) -> Result<(), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                for (device, frame) in pushes {
                    sqlx::query(sql::INSERT_PUSH.sqlite)
                        .bind(fp(&device))
                        .bind(i64::from(device.device_id))
                        .bind(frame)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn take_pushes(
        &self,
        device: DeviceAddress,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        // Every delivery round asks; most devices have no push waiting. A read on the read
        // pool answers that without a job for the single writer (whose batches carry sends).
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversation_pushes WHERE fingerprint = ? AND device_id = ? LIMIT 1",
        )
        .bind(fp(&device))
        .bind(i64::from(device.device_id))
        .fetch_optional(&self.reads)
        .await?;
        if waiting.is_none() {
            return Ok(Vec::new());
        }
        self.write(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(sql::TAKE_PUSHES.sqlite)
                    .bind(fp(&device))
                    .bind(i64::from(device.device_id))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                let mut taken: Vec<(i64, Vec<u8>)> = rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect();
                taken.sort_by_key(|(position, _)| *position);
                Ok(taken.into_iter().map(|(_, frame)| frame).collect())
            })
        })
        .await
    }

    async fn put_archive(
        &self,
        id: [u8; 16],
        envelope: Vec<u8>,
        filed_by: DeviceAddress,
        now_ms: u64,
    ) -> Result<ArchiveFiling, StoreError> {
        let digest = archive_filing_digest(&filed_by, &envelope);
        // The writer is SQLite's only writing connection, so two filings never interleave; the
        // unique `(conversation, digest)` key makes the repeat a no-op all the same.
        self.write(move |c| {
            Box::pin(async move {
                let claimed: Option<i64> = sqlx::query_scalar(sql::CLAIM_ARCHIVE_FILING.sqlite)
                    .bind(id.to_vec())
                    .bind(digest.to_vec())
                    .bind(id.to_vec())
                    .fetch_optional(&mut *c)
                    .await?;
                let Some(index) = claimed else {
                    let index: i64 = sqlx::query_scalar(sql::ARCHIVE_FILING.sqlite)
                        .bind(id.to_vec())
                        .bind(digest.to_vec())
                        .fetch_one(&mut *c)
                        .await?;
                    return Ok(ArchiveFiling {
                        index: to_u64(index),
                        repeat: true,
                    });
                };
                sqlx::query(sql::INSERT_ARCHIVE.sqlite)
                    .bind(id.to_vec())
                    .bind(index)
                    .bind(envelope)
                    .bind(fp(&filed_by))
                    .bind(i64::from(filed_by.device_id))
                    .bind(to_i64(now_ms))
                    .execute(&mut *c)
                    .await?;
                sqlx::query(sql::TOUCH_CONVERSATION.sqlite)
                    .bind(to_i64(now_ms))
                    .bind(id.to_vec())
                    .execute(&mut *c)
                    .await?;
                Ok(ArchiveFiling {
                    index: to_u64(index),
                    repeat: false,
                })
            })
        })
        .await
    }

    async fn archive(
        &self,
        id: [u8; 16],
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<StoredArchiveEnvelope>, StoreError> {
        let rows = sqlx::query(sql::ARCHIVE.sqlite)
            .bind(id.to_vec())
            .bind(to_i64(from_index))
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(sql::archive_from_row).collect()
    }

    async fn archive_policy(&self, org: [u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::ARCHIVE_POLICY.sqlite)
            .bind(org.to_vec())
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn publish_archive_policy(
        &self,
        org: [u8; 32],
        sequence: u64,
        policy: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.publish_if_newer(&sql::PUBLISH_ARCHIVE_POLICY, org, sequence, policy)
            .await
    }

    async fn expire_archive(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(sql::EXPIRE_ARCHIVE_FILINGS.sqlite)
                    .bind(to_i64(before_ms))
                    .execute(&mut *c)
                    .await?;
                let done = sqlx::query(sql::EXPIRE_ARCHIVE.sqlite)
                    .bind(to_i64(before_ms))
                    .execute(&mut *c)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }
}

/// Envelopes read per page by [`backfill_archive_filings`].
const BACKFILL_PAGE: i64 = 256;

/// Remembers the filing of every archive envelope stored by a relay version without
/// `archive_filings` (`relay-protocol.md` §7), so that a copy filed before the upgrade and
/// repeated after it is still a repeat. Runs once, in the transaction that creates the table:
/// it reads every stored envelope once, page by page in key order; filings never do.
async fn backfill_archive_filings(c: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut after: (Vec<u8>, i64) = (Vec::new(), -1);
    loop {
        let rows = sqlx::query(sql::ARCHIVE_PAGE.sqlite)
            .bind(after.0.clone())
            .bind(after.0.clone())
            .bind(after.1)
            .bind(BACKFILL_PAGE)
            .fetch_all(&mut *c)
            .await?;
        for row in &rows {
            let (conversation, position, digest) = filing_of_row(row)?;
            if let Some(digest) = digest {
                sqlx::query(sql::BACKFILL_ARCHIVE_FILING.sqlite)
                    .bind(conversation.clone())
                    .bind(digest.to_vec())
                    .bind(position)
                    .execute(&mut *c)
                    .await?;
            }
            after = (conversation, position);
        }
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) < BACKFILL_PAGE {
            return Ok(());
        }
    }
}

/// A stored envelope's key and filing digest.
pub(super) type FilingOfRow = (Vec<u8>, i64, Option<[u8; 32]>);

/// `(conversation, position, filing digest)` of a row of `ARCHIVE_PAGE`; no digest for a row
/// whose filer does not read back (it is served as before, only never recognised as repeated).
pub(super) fn filing_of_row<R: sqlx::Row>(row: &R) -> Result<FilingOfRow, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let corrupt = || StoreError::Corrupt("archive row".into());
    let conversation: Vec<u8> = row.try_get(0).map_err(|_| corrupt())?;
    let position: i64 = row.try_get(1).map_err(|_| corrupt())?;
    let envelope: Vec<u8> = row.try_get(2).map_err(|_| corrupt())?;
    let digest = address_at(row, 3).map(|filed_by| archive_filing_digest(&filed_by, &envelope));
    Ok((conversation, position, digest))
}

/// Replaces a conversation's member devices and stores pushes, inside the caller's transaction.
async fn store_members_and_pushes(
    c: &mut SqliteConnection,
    id: [u8; 16],
    members: &[DeviceAddress],
    pushes: &[(DeviceAddress, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::DELETE_MEMBERS.sqlite)
        .bind(id.to_vec())
        .execute(&mut *c)
        .await?;
    for m in members {
        sqlx::query(sql::INSERT_MEMBER.sqlite)
            .bind(id.to_vec())
            .bind(fp(m))
            .bind(i64::from(m.device_id))
            .execute(&mut *c)
            .await?;
    }
    for (device, frame) in pushes {
        sqlx::query(sql::INSERT_PUSH.sqlite)
            .bind(fp(device))
            .bind(i64::from(device.device_id))
            .bind(frame.clone())
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Tallies deleted `(recipient_fingerprint, recipient_device)` rows per recipient (shared by
/// both engines' `expire`). A row that does not decode was still deleted; it is left out of the
/// tally rather than failing the sweep.
pub(crate) fn expired_by_recipient<R: sqlx::Row>(rows: &[R]) -> Vec<(DeviceAddress, u64)>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let mut counts = std::collections::BTreeMap::new();
    for row in rows {
        let fingerprint: Option<[u8; 32]> = row
            .try_get::<Vec<u8>, _>(0)
            .ok()
            .and_then(|f| f.try_into().ok());
        let device = row
            .try_get::<i64, _>(1)
            .ok()
            .and_then(|d| u32::try_from(d).ok());
        if let (Some(fingerprint), Some(device_id)) = (fingerprint, device) {
            *counts
                .entry(DeviceAddress {
                    fingerprint,
                    device_id,
                })
                .or_insert(0u64) += 1;
        }
    }
    counts.into_iter().collect()
}

/// Decodes one `envelopes` row (shared by both engines' column order).
pub(crate) fn row_to_delivery<R: sqlx::Row>(row: &R) -> Result<(i64, Delivery), StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let position: i64 = row.try_get(0)?;
    let server_id: Vec<u8> = row.try_get(1)?;
    let sender_fp: Vec<u8> = row.try_get(2)?;
    let sender_device: i64 = row.try_get(3)?;
    let time: i64 = row.try_get(4)?;
    let payload: Vec<u8> = row.try_get(5)?;
    let corrupt = || {
        StoreError::Database(sqlx::Error::Protocol(
            "stored envelope has a malformed column".into(),
        ))
    };
    Ok((
        position,
        Delivery {
            server_id: server_id.try_into().map_err(|_| corrupt())?,
            sender: DeviceAddress {
                fingerprint: sender_fp.try_into().map_err(|_| corrupt())?,
                device_id: u32::try_from(sender_device).map_err(|_| corrupt())?,
            },
            server_time_ms: to_u64(time),
            payload,
        },
    ))
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
    use crate::storage::{Registration, RegistrationPolicy};

    fn device(n: u8) -> DeviceAddress {
        DeviceAddress {
            fingerprint: [n; 32],
            device_id: 1,
        }
    }

    /// Room for five envelopes in each mailbox, from any senders.
    fn five() -> MailboxLimits {
        MailboxLimits {
            envelopes: 5,
            ..MailboxLimits::UNLIMITED
        }
    }

    fn to(recipient: DeviceAddress, payload: u8) -> OutgoingEnvelope {
        OutgoingEnvelope {
            recipient,
            payload: vec![payload; 8],
        }
    }

    /// A store in a fresh temporary directory (returned, for the caller to remove).
    async fn temp_store(name: &str) -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hushwire-sqlite-{name}-{}-{}",
            std::process::id(),
            hex::encode(crate::random_id())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("relay.db")).await.unwrap();
        (store, dir)
    }

    /// An ack of nothing, alone in its batch, is answered (clients use it as a "mailbox
    /// drained" barrier: `docs/relay-protocol.md` §2). A batch with nothing to write once left
    /// it unanswered.
    #[tokio::test]
    async fn an_empty_ack_alone_is_answered() {
        let (store, dir) = temp_store("empty-ack").await;
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.ack(device(1), Vec::new()),
        )
        .await
        .expect("answered");
        assert_eq!(answered.unwrap(), Vec::<[u8; 16]>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Many jobs queued at once share batches: quota, ownership of acks, each id deleted once,
    /// and the order of a frame's envelopes hold as if the jobs had run one by one.
    #[tokio::test]
    async fn batched_jobs_behave_as_if_run_one_by_one() {
        let (store, dir) = temp_store("batch").await;
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
        let unknown = device(9);

        // Eight single sends to `a` with room for five, plus one to an unknown device.
        let mut sends: Vec<_> = (0..8u8)
            .map(|i| store.enqueue(b, vec![to(a, i)], 10, five()))
            .collect();
        sends.push(store.enqueue(b, vec![to(unknown, 0)], 10, five()));
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
            3
        );
        assert_eq!(outcomes[8], Enqueued::UnknownRecipient(unknown));

        // One frame of three envelopes keeps its order.
        let Enqueued::Stored(frame) = store
            .enqueue(b, vec![to(c, 1), to(c, 2), to(c, 3)], 10, five())
            .await
            .unwrap()
        else {
            panic!("frame refused");
        };
        let waiting = store.pending(c, 0, 10).await.unwrap();
        let order: Vec<[u8; 16]> = waiting.iter().map(|(_, d)| d.server_id).collect();
        let sent: Vec<[u8; 16]> = frame.iter().map(|r| r.server_id).collect();
        assert_eq!(order, sent);
        assert_eq!(
            waiting
                .iter()
                .map(|(_, d)| d.payload[0])
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );

        // Acks at once: `c` naming `a`'s envelopes deletes nothing; `a` naming one twice in a
        // frame and again in another frame deletes it once; `a` naming `c`'s deletes nothing.
        let (x, y) = (stored[0], stored[1]);
        let acks = join_all([
            store.ack(c, vec![x, y]),
            store.ack(a, vec![x, x, y]),
            store.ack(a, vec![x]),
            store.ack(a, vec![sent[0]]),
        ])
        .await;
        let acks: Vec<Vec<[u8; 16]>> = acks.into_iter().map(Result::unwrap).collect();
        assert!(acks[0].is_empty());
        assert!(acks[3].is_empty());
        let mut deleted: Vec<[u8; 16]> = acks[1].iter().chain(&acks[2]).copied().collect();
        deleted.sort_unstable();
        let mut expected = vec![x, y];
        expected.sort_unstable();
        assert_eq!(deleted, expected);
        assert_eq!(store.pending(a, 0, 10).await.unwrap().len(), 3);
        assert_eq!(store.pending(c, 0, 10).await.unwrap().len(), 3);

        // The two freed places are usable again, and no more.
        let again: Vec<Enqueued> =
            join_all((0..3u8).map(|i| store.enqueue(b, vec![to(a, i)], 10, five())))
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sender's share and the mailbox's total are counted in envelopes and in bytes, per
    /// sender; acknowledging frees the sender's share; a cold cache (a restart) recounts them.
    #[tokio::test]
    async fn sender_share_and_bytes_are_counted_per_sender() {
        let (store, dir) = temp_store("share").await;
        let (a, b, c) = (device(1), device(2), device(3));
        for d in [a, b, c] {
            store
                .register(
                    d,
                    vec![d.fingerprint[0]; 32],
                    None,
                    RegistrationPolicy::Open,
                    1,
                )
                .await
                .unwrap();
        }
        let limits = MailboxLimits {
            envelopes: 4,
            bytes: 100,
            sender_envelopes: 2,
            sender_bytes: 40,
        };
        let send = |from, len: usize| {
            store.enqueue(
                from,
                vec![OutgoingEnvelope {
                    recipient: a,
                    payload: vec![0; len],
                }],
                10,
                limits,
            )
        };
        let first = send(b, 10).await.unwrap();
        let Enqueued::Stored(first) = first else {
            panic!("{first:?}")
        };
        assert!(matches!(send(b, 10).await.unwrap(), Enqueued::Stored(_)));
        assert_eq!(
            send(b, 1).await.unwrap(),
            Enqueued::SenderQuota(a),
            "2 envelopes"
        );
        // Another sender still gets in: b's flood does not deny c.
        assert!(matches!(send(c, 40).await.unwrap(), Enqueued::Stored(_)));
        assert_eq!(
            send(c, 1).await.unwrap(),
            Enqueued::SenderQuota(a),
            "40 bytes"
        );
        // b acks-free one place; now the mailbox total (100 bytes) is what refuses.
        assert_eq!(
            store.ack(a, vec![first[0].server_id]).await.unwrap().len(),
            1
        );
        let d = device(4);
        store
            .register(d, vec![4; 32], None, RegistrationPolicy::Open, 1)
            .await
            .unwrap();
        assert!(matches!(send(d, 40).await.unwrap(), Enqueued::Stored(_)));
        assert_eq!(
            send(b, 20).await.unwrap(),
            Enqueued::MailboxFull(a),
            "90 + 20 bytes"
        );
        assert!(matches!(send(b, 10).await.unwrap(), Enqueued::Stored(_)));
        assert_eq!(send(b, 1).await.unwrap(), Enqueued::SenderQuota(a));
        // A fresh store on the same file (an empty cache) counts the same.
        drop(store);
        let store = SqliteStore::open(&dir.join("relay.db")).await.unwrap();
        let again = store
            .enqueue(
                c,
                vec![OutgoingEnvelope {
                    recipient: a,
                    payload: vec![0; 1],
                }],
                10,
                limits,
            )
            .await
            .unwrap();
        assert_eq!(again, Enqueued::SenderQuota(a));
        let e = device(5);
        store
            .register(e, vec![5; 32], None, RegistrationPolicy::Open, 1)
            .await
            .unwrap();
        let again = store
            .enqueue(
                e,
                vec![OutgoingEnvelope {
                    recipient: a,
                    payload: vec![],
                }],
                10,
                limits,
            )
            .await
            .unwrap();
        assert_eq!(again, Enqueued::MailboxFull(a), "4 envelopes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
