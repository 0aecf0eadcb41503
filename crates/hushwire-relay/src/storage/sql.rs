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
