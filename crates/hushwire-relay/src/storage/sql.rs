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
    /// A device's standing in one query, `(fingerprint, device_id)` twice then `fingerprint`:
    /// whether it is suspended (a count), its pending wipe order, its identity's certificate.
    STANDING = "SELECT (SELECT COUNT(*) FROM suspended_devices WHERE fingerprint = ? AND device_id = ?), \
        (SELECT command FROM pending_wipes WHERE fingerprint = ? AND device_id = ?), \
        (SELECT certificate FROM certificates WHERE fingerprint = ?)"
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
