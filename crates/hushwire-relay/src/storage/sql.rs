//! Statements both engines run with the same text: written once with SQLite's `?`
//! placeholders, and numbered (`$1`, `$2`, ...) once for PostgreSQL, so that a fix to one lands
//! in both. Statements whose SQL differs between the engines (upserts, locking, batching) stay
//! in their engine's module.

use std::sync::LazyLock;

/// One statement in both placeholder styles.
pub(crate) struct Shared {
    /// With `?` placeholders (SQLite).
    pub(crate) sqlite: &'static str,
    /// With `$n` placeholders (PostgreSQL).
    pub(crate) postgres: LazyLock<String>,
}

macro_rules! shared {
    ($(#[$doc:meta])* $name:ident = $sql:expr) => {
        $(#[$doc])*
        pub(crate) static $name: Shared = Shared {
            sqlite: $sql,
            postgres: LazyLock::new(|| numbered($sql)),
        };
    };
}

/// `?` placeholders numbered `$1`, `$2`, ... in order (no statement here has a `?` elsewhere).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

shared!(
    /// The identity registered at `(fingerprint, device_id)`.
    IDENTITY = "SELECT identity FROM devices WHERE fingerprint = ? AND device_id = ?"
);
shared!(
    /// An invite `(token_hash, expires_at)`.
    INSERT_INVITE = "INSERT INTO invites (token_hash, expires_at) VALUES (?, ?)"
);
shared!(
    /// One-time prekeys of one kind held by `(fingerprint, device_id, kem)`.
    ONE_TIME_HELD = "SELECT COUNT(*) FROM one_time_prekeys WHERE fingerprint = ? AND device_id = ? AND kem = ?"
);
shared!(
    /// `(kem, count)` of one-time prekeys held by `(fingerprint, device_id)`.
    PREKEY_COUNTS = "SELECT kem, COUNT(*) FROM one_time_prekeys WHERE fingerprint = ? AND device_id = ? GROUP BY kem"
);
shared!(
    /// The signed prekey of `(fingerprint, device_id)`.
    SIGNED_PREKEY = "SELECT prekey FROM signed_prekeys WHERE fingerprint = ? AND device_id = ?"
);
shared!(
    /// The last-resort ML-KEM prekey of `(fingerprint, device_id)`.
    LAST_RESORT_PREKEY = "SELECT prekey FROM last_resort_kem_prekeys WHERE fingerprint = ? AND device_id = ?"
);
shared!(
    /// The last record of chain `chain_id`.
    AUDIT_LAST = "SELECT record FROM audit_records WHERE chain_id = ? ORDER BY sequence DESC LIMIT 1"
);
shared!(
    /// Records of `chain_id` from `sequence`, at most `limit`.
    AUDIT_RECORDS = "SELECT record FROM audit_records WHERE chain_id = ? AND sequence >= ? ORDER BY sequence LIMIT ?"
);
shared!(
    /// Every checkpoint of `chain_id`, by count.
    AUDIT_CHECKPOINTS = "SELECT checkpoint FROM audit_checkpoints WHERE chain_id = ? ORDER BY count"
);
shared!(
    /// Envelopes waiting in all mailboxes.
    QUEUE_DEPTH = "SELECT COUNT(*) FROM envelopes"
);

shared!(
    /// The agent certificate of identity `fingerprint`.
    CERTIFICATE = "SELECT certificate FROM certificates WHERE fingerprint = ?"
);
shared!(
    /// Replaces the certificate of identity `fingerprint`, if it holds one: `(certificate,
    /// fingerprint)`.
    REPLACE_CERTIFICATE = "UPDATE certificates SET certificate = ? WHERE fingerprint = ?"
);
shared!(
    /// Stores (or replaces) the certificate of identity `(fingerprint, certificate)`.
    UPSERT_CERTIFICATE = "INSERT INTO certificates (fingerprint, certificate) VALUES (?, ?) \
        ON CONFLICT (fingerprint) DO UPDATE SET certificate = excluded.certificate"
);
shared!(
    /// Whether identity `fingerprint` holds a certificate (a count, 0 or 1).
    HAS_CERTIFICATE = "SELECT COUNT(*) FROM certificates WHERE fingerprint = ?"
);
shared!(
    /// How many devices identity `fingerprint` has registered.
    IDENTITY_DEVICES = "SELECT COUNT(*) FROM devices WHERE fingerprint = ?"
);
shared!(
    /// The revocation list of the clinic whose organization key is `org_key`.
    REVOCATION_LIST = "SELECT list FROM revocation_lists WHERE org_key = ?"
);
shared!(
    /// Stores `(org_key, sequence, list)` only if no list of that clinic is stored or the
    /// stored one has a lower sequence (an 8-byte big-endian blob, so byte order is number
    /// order): atomic on both engines, across instances on PostgreSQL (the conflicting row is
    /// locked and the condition judged on its latest version). One row changed: stored.
    PUBLISH_REVOCATION_LIST = "INSERT INTO revocation_lists (org_key, sequence, list) VALUES (?, ?, ?) \
        ON CONFLICT (org_key) DO UPDATE SET sequence = excluded.sequence, list = excluded.list \
        WHERE revocation_lists.sequence < excluded.sequence"
);
shared!(
    /// The device list of identity `fingerprint`.
    DEVICE_LIST = "SELECT list FROM device_lists WHERE fingerprint = ?"
);
shared!(
    /// Stores `(fingerprint, sequence, list)` only if newer, as [`PUBLISH_REVOCATION_LIST`].
    PUBLISH_DEVICE_LIST = "INSERT INTO device_lists (fingerprint, sequence, list) VALUES (?, ?, ?) \
        ON CONFLICT (fingerprint) DO UPDATE SET sequence = excluded.sequence, list = excluded.list \
        WHERE device_lists.sequence < excluded.sequence"
);
shared!(
    /// Suspends `(fingerprint, device_id, suspended_at)` (again: nothing changes).
    SUSPEND = "INSERT INTO suspended_devices (fingerprint, device_id, suspended_at) VALUES (?, ?, ?) \
        ON CONFLICT (fingerprint, device_id) DO NOTHING"
);
shared!(
    /// Keeps the wipe order `(fingerprint, device_id, command, ordered_at)`; a later order
    /// replaces an earlier one.
    ORDER_WIPE = "INSERT INTO pending_wipes (fingerprint, device_id, command, ordered_at) VALUES (?, ?, ?, ?) \
        ON CONFLICT (fingerprint, device_id) DO UPDATE SET command = excluded.command, \
        ordered_at = excluded.ordered_at"
);
shared!(
    /// A device's standing in one query, `(fingerprint, device_id)` twice then `fingerprint`
    /// twice: whether it is suspended (a count), its pending wipe order, its identity's
    /// certificate and its identity's device list.
    STANDING = "SELECT (SELECT COUNT(*) FROM suspended_devices WHERE fingerprint = ? AND device_id = ?), \
        (SELECT command FROM pending_wipes WHERE fingerprint = ? AND device_id = ?), \
        (SELECT certificate FROM certificates WHERE fingerprint = ?), \
        (SELECT list FROM device_lists WHERE fingerprint = ?)"
);
shared!(
    /// Deletes provisioning messages that expired by `now` (lazily, at each put).
    DELETE_EXPIRED_PROVISIONING = "DELETE FROM provisioning WHERE expires_at <= ?"
);
shared!(
    /// How many live provisioning messages `(owner_fingerprint, owner_device)` has filed at
    /// `now`.
    LIVE_PROVISIONING = "SELECT COUNT(*) FROM provisioning WHERE owner_fingerprint = ? \
        AND owner_device = ? AND expires_at > ?"
);
shared!(
    /// Files `(slot, sealed, owner_fingerprint, owner_device, expires_at)` unless the slot is
    /// filed already: no row changed means refused.
    INSERT_PROVISIONING = "INSERT INTO provisioning (slot, sealed, owner_fingerprint, owner_device, \
        expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (slot) DO NOTHING"
);
shared!(
    /// Takes the provisioning message filed under `slot`: deletes it and returns `(sealed,
    /// expires_at)`, in one statement. Of two concurrent takes (on any instances) only one
    /// deletes the row and gets it back; the caller hands it out only if it had not expired.
    TAKE_PROVISIONING = "DELETE FROM provisioning WHERE slot = ? RETURNING sealed, expires_at"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            AUDIT_RECORDS.postgres.as_str(),
            "SELECT record FROM audit_records WHERE chain_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT $3"
        );
        assert_eq!(QUEUE_DEPTH.postgres.as_str(), QUEUE_DEPTH.sqlite);
    }
}

// ---- Clinic conversations (docs/conversations.md §5.4, §6) ----

shared!(
    /// Inserts a conversation `(id, clinic, head_epoch, head_hash, state, opened_at,
    /// waiting_since, claimed, last_activity)` unless its id is taken.
    INSERT_CONVERSATION = "INSERT INTO conversations (id, clinic, head_epoch, head_hash, state, opened_at, \
        waiting_since, claimed, last_activity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
);
shared!(
    /// The conversation `id`.
    CONVERSATION = "SELECT id, clinic, head_epoch, head_hash, state, opened_at, waiting_since, claimed, \
        last_activity FROM conversations WHERE id = ?"
);
shared!(
    /// The compare-and-set of a membership update: sets `(head_epoch, head_hash, state,
    /// waiting_since, claimed, last_activity)` where `id` and the expected head epoch match, and,
    /// when the next parameter is 1, the conversation is not claimed. One row or none.
    UPDATE_CONVERSATION_HEAD = "UPDATE conversations SET head_epoch = ?, head_hash = ?, state = ?, \
        waiting_since = ?, claimed = ?, last_activity = ? \
        WHERE id = ? AND head_epoch = ? AND (? = 0 OR claimed = 0)"
);
shared!(
    /// Stores change `(conversation, epoch, change)`.
    INSERT_CHANGE = "INSERT INTO conversation_changes (conversation, epoch, change) VALUES (?, ?, ?)"
);
shared!(
    /// Up to `limit` changes of `conversation` from `epoch`.
    CHANGES = "SELECT change FROM conversation_changes WHERE conversation = ? AND epoch >= ? \
        ORDER BY epoch LIMIT ?"
);
shared!(
    /// Forgets the member devices of `conversation` (before storing the new head's).
    DELETE_MEMBERS = "DELETE FROM conversation_members WHERE conversation = ?"
);
shared!(
    /// A member device `(conversation, fingerprint, device_id)` at the head.
    INSERT_MEMBER = "INSERT INTO conversation_members (conversation, fingerprint, device_id) VALUES (?, ?, ?)"
);
shared!(
    /// The member devices of `conversation` at the head.
    MEMBERS = "SELECT fingerprint, device_id FROM conversation_members WHERE conversation = ? \
        ORDER BY fingerprint, device_id"
);
shared!(
    /// How many conversations waiting in the queue (new or handed back) have a member device of
    /// identity `fingerprint`.
    OPEN_CONVERSATIONS_OF = "SELECT COUNT(DISTINCT m.conversation) FROM conversation_members m \
        JOIN conversations c ON c.id = m.conversation WHERE m.fingerprint = ? AND c.state IN (1, 2)"
);
shared!(
    /// Up to `limit` conversations in the queue (new or handed back), longest waiting first.
    WAITING = "SELECT id, clinic, head_epoch, head_hash, state, opened_at, waiting_since, claimed, \
        last_activity FROM conversations WHERE state IN (1, 2) ORDER BY waiting_since, id LIMIT ?"
);
shared!(
    /// Up to `limit` claimed conversations whose id is after `id`, by id: the ones a new
    /// revocation list may put back in the queue (`conversations.md` §5.4).
    CLAIMED_AFTER = "SELECT id, clinic, head_epoch, head_hash, state, opened_at, waiting_since, claimed, \
        last_activity FROM conversations WHERE state = 3 AND id > ? ORDER BY id LIMIT ?"
);
shared!(
    /// Puts `(fingerprint, device_id)` on duty (again: nothing changes).
    SET_ON_DUTY = "INSERT INTO on_duty (fingerprint, device_id) VALUES (?, ?) \
        ON CONFLICT (fingerprint, device_id) DO NOTHING"
);
shared!(
    /// Takes `(fingerprint, device_id)` off duty.
    SET_OFF_DUTY = "DELETE FROM on_duty WHERE fingerprint = ? AND device_id = ?"
);
shared!(
    /// Up to `limit` devices on duty.
    ON_DUTY = "SELECT fingerprint, device_id FROM on_duty ORDER BY fingerprint, device_id LIMIT ?"
);
shared!(
    /// A push `(fingerprint, device_id, frame)`.
    INSERT_PUSH = "INSERT INTO conversation_pushes (fingerprint, device_id, frame) VALUES (?, ?, ?)"
);
shared!(
    /// Takes up to `limit` pushes of `(fingerprint, device_id)`, oldest first (the caller sorts
    /// by the returned position).
    TAKE_PUSHES = "DELETE FROM conversation_pushes WHERE position IN (SELECT position FROM \
        conversation_pushes WHERE fingerprint = ? AND device_id = ? ORDER BY position LIMIT ?) \
        RETURNING position, frame"
);
shared!(
    /// Touches a conversation's last activity `(last_activity, id)`.
    TOUCH_CONVERSATION = "UPDATE conversations SET last_activity = ? WHERE id = ?"
);
shared!(
    /// Up to `limit` archive envelopes of `conversation` from `position`.
    ARCHIVE = "SELECT position, envelope, filed_by_fingerprint, filed_by_device, filed_at \
        FROM archive_envelopes WHERE conversation = ? AND position >= ? ORDER BY position LIMIT ?"
);
shared!(
    /// The archive policy of `org`.
    ARCHIVE_POLICY = "SELECT policy FROM archive_policies WHERE org_key = ?"
);
shared!(
    /// Stores `(org, sequence, policy)` if newer than the stored one.
    PUBLISH_ARCHIVE_POLICY = "INSERT INTO archive_policies (org_key, sequence, policy) VALUES (?, ?, ?) \
        ON CONFLICT (org_key) DO UPDATE SET sequence = excluded.sequence, policy = excluded.policy \
        WHERE archive_policies.sequence < excluded.sequence"
);
shared!(
    /// Deletes the archive envelopes of conversations whose last activity is before `time`.
    EXPIRE_ARCHIVE = "DELETE FROM archive_envelopes WHERE conversation IN \
        (SELECT id FROM conversations WHERE last_activity < ?)"
);
shared!(
    /// Deletes the filings remembered for the same conversations as `EXPIRE_ARCHIVE` (`time`),
    /// in its transaction: nothing of an expired conversation's archive is kept.
    EXPIRE_ARCHIVE_FILINGS = "DELETE FROM archive_filings WHERE conversation IN \
        (SELECT id FROM conversations WHERE last_activity < ?)"
);
shared!(
    /// Claims the filing `(conversation, digest)` at the conversation's next archive position
    /// (the third parameter is the conversation again); returns that position, or no row when
    /// the filing is already known (a repeat: the unique key, whatever transaction stored it
    /// first, committed or racing, `ON CONFLICT DO NOTHING`). The `SELECT`'s `WHERE` also keeps
    /// SQLite from reading `ON CONFLICT` as a join constraint.
    CLAIM_ARCHIVE_FILING = "INSERT INTO archive_filings (conversation, digest, position) \
        SELECT ?, ?, COALESCE(MAX(position) + 1, 0) FROM archive_envelopes WHERE conversation = ? \
        ON CONFLICT (conversation, digest) DO NOTHING RETURNING position"
);
shared!(
    /// The position of the known filing `(conversation, digest)`.
    ARCHIVE_FILING = "SELECT position FROM archive_filings WHERE conversation = ? AND digest = ?"
);
shared!(
    /// An archive envelope `(conversation, position, envelope, filed_by_fingerprint,
    /// filed_by_device, filed_at)`.
    INSERT_ARCHIVE = "INSERT INTO archive_envelopes (conversation, position, envelope, \
        filed_by_fingerprint, filed_by_device, filed_at) VALUES (?, ?, ?, ?, ?, ?)"
);
shared!(
    /// Up to `limit` stored envelopes `(conversation, position, envelope, filed_by_fingerprint,
    /// filed_by_device)` after `(conversation, position)` in key order: the upgrade's backfill
    /// of `archive_filings` walks them page by page.
    ARCHIVE_PAGE = "SELECT conversation, position, envelope, filed_by_fingerprint, filed_by_device \
        FROM archive_envelopes WHERE (conversation > ? OR (conversation = ? AND position > ?)) \
        ORDER BY conversation, position LIMIT ?"
);
shared!(
    /// Remembers a filing `(conversation, digest, position)` found by the backfill; an earlier
    /// position with the same key (true duplicates stored by an older relay) stays.
    BACKFILL_ARCHIVE_FILING = "INSERT INTO archive_filings (conversation, digest, position) \
        VALUES (?, ?, ?) ON CONFLICT (conversation, digest) DO NOTHING"
);

/// A `StoredConversation` from a row of `CONVERSATION` or `WAITING`.
pub(crate) fn conversation_from_row<R: sqlx::Row>(
    row: &R,
) -> Result<super::StoredConversation, super::StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let corrupt = || super::StoreError::Corrupt("conversation row".into());
    let bytes = |i: usize| row.try_get::<Vec<u8>, _>(i).map_err(|_| corrupt());
    let int = |i: usize| {
        row.try_get::<i64, _>(i)
            .map_err(|_| corrupt())
            .map(super::to_u64)
    };
    Ok(super::StoredConversation {
        id: bytes(0)?.try_into().map_err(|_| corrupt())?,
        clinic: bytes(1)?.try_into().map_err(|_| corrupt())?,
        head_epoch: int(2)?,
        head_hash: bytes(3)?.try_into().map_err(|_| corrupt())?,
        state: u8::try_from(int(4)?).map_err(|_| corrupt())?,
        opened_at: int(5)?,
        waiting_since: int(6)?,
        claimed: int(7)? != 0,
        last_activity_ms: int(8)?,
    })
}

/// A `StoredArchiveEnvelope` from a row of `ARCHIVE`.
pub(crate) fn archive_from_row<R: sqlx::Row>(
    row: &R,
) -> Result<super::StoredArchiveEnvelope, super::StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let corrupt = || super::StoreError::Corrupt("archive row".into());
    Ok(super::StoredArchiveEnvelope {
        index: super::to_u64(row.try_get::<i64, _>(0).map_err(|_| corrupt())?),
        envelope: row.try_get(1).map_err(|_| corrupt())?,
        filed_by: super::sqlite::address_at(row, 2).ok_or_else(corrupt)?,
        filed_at_ms: super::to_u64(row.try_get::<i64, _>(4).map_err(|_| corrupt())?),
    })
}
