//! The relay identity key (`docs/relay-protocol.md` §3): one long-term Ed25519 key per
//! deployment. The relay signs every challenge with it and devices bind their login answers to
//! its public half, which clients pin at registration; so an answer made for one deployment is
//! refused by every other, whatever they are called.
//!
//! It lives in a key file, by default `<data-dir>/relay-key` (`--relay-key-file`): the 32-byte
//! Ed25519 secret, nothing else, created with mode 0600 on first start. It is **not** the audit
//! key (`<data-dir>/audit-key`): that one is per instance (each instance of a PostgreSQL
//! deployment keeps its own audit chain under its own key and chain id), while every instance of
//! one deployment must present the same relay key, or clients would see the key change from one
//! connection to the next. Keeping them apart also keeps their roles apart: the relay key is
//! pinned by clients for years, the audit key only signs checkpoints.
//!
//! With PostgreSQL (several instances) the relay never creates the key file by itself: each
//! instance would make its own. `hushwire-relay relay-key` creates it once; every instance is
//! then given that same file.

use std::path::Path;

use ed25519_dalek::SigningKey;
use hushwire_proto::relay::RelayKey;
use zeroize::Zeroizing;

/// Loads the relay key from `path`; an error naming what to do if it is missing or damaged.
pub fn load(path: &Path) -> Result<SigningKey, String> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the relay key {}: {e} (create it once with `hushwire-relay \
             --relay-key-file {} relay-key` and give every instance of this deployment that same \
             file)",
            path.display(),
            path.display()
        )
    })?);
    let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("the relay key {} is damaged (not 32 bytes)", path.display()))?,
    );
    warn_if_readable_by_others(path);
    Ok(SigningKey::from_bytes(&secret))
}

/// Loads the relay key from `path`, creating it (mode 0600) if it does not exist yet.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), String> {
    if path.exists() {
        return load(path).map(|k| (k, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    crate::fill_random(secret.as_mut_slice());
    crate::audit_log::write_private(path, secret.as_slice())
        .map_err(|e| format!("cannot write the relay key {}: {e}", path.display()))?;
    load(path).map(|k| (k, true))
}

/// The public half, as clients see it in every challenge.
pub fn public(key: &SigningKey) -> RelayKey {
    RelayKey(key.verifying_key().to_bytes())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the relay key file can be read by other users: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}
