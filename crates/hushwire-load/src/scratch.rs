//! What a run leaves outside its process, removed when it ends however it ends (an error, a
//! relay that died, Ctrl-C or SIGTERM): its data directories under the system's temporary
//! directory and, with `--database-url`, its PostgreSQL schemas.
//!
//! Every mode keeps its relays' files in `hushwire-<mode>-<pid>` ([`scratch_dir`]). With
//! `--database-url`, every mode gives its relay instances a schema of their own,
//! `hushwire_<mode>_<pid>` (`hushwire_load_`, `hushwire_claims_`, `hushwire_conv_`), so
//! runs never see each other's mailboxes. Each run holds about as much as it sent (30,000
//! envelopes are tens of MB): left behind, they filled the shared database run after run.

use std::path::PathBuf;

use sqlx::Connection;

/// The modes' directory names: `hushwire-<mode>-<pid>` under the temporary directory.
const MODES: [&str; 4] = ["load", "claims", "conv", "attack"];

/// The data directory of `mode` (one of [`MODES`]) in this run.
pub(crate) fn scratch_dir(mode: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hushwire-{mode}-{}", std::process::id()))
}

/// Removes every mode's data directory of this run (those that exist).
pub(crate) fn remove_run_dirs() {
    for mode in MODES {
        let _ = std::fs::remove_dir_all(scratch_dir(mode));
    }
}

/// Drops every schema named `hushwire_<mode>_<pid>` of this process. Returns how many it
/// dropped. Runs after the relay instances were killed; a schema still locked by a dying
/// instance's session is dropped once that session ends (PostgreSQL waits for the lock).
///
/// # Errors
/// A connection or query failure, as text (the run's own outcome is reported regardless).
pub(crate) async fn drop_run_schemas(url: &str) -> Result<usize, String> {
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("connecting to drop this run's schemas: {e}"))?;
    let suffix = format!("_{}", std::process::id());
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name::text FROM information_schema.schemata \
         WHERE schema_name LIKE 'hushwire\\_%' AND right(schema_name, length($1)) = $1",
    )
    .bind(&suffix)
    .fetch_all(&mut db)
    .await
    .map_err(|e| format!("listing this run's schemas: {e}"))?;
    let mut dropped = 0;
    for name in names {
        // Only names this tool makes: letters, digits and underscores, so quoting is exact.
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        // Checked just above: the name is only `[a-z0-9_]`.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(&mut db)
        .await
        .map_err(|e| format!("dropping schema {name}: {e}"))?;
        dropped += 1;
    }
    Ok(dropped)
}
