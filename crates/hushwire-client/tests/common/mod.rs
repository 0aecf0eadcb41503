//! What the client's integration tests share: a relay in this process, the client options and
//! secret every test store uses, and a clinic's organization key (`clinic`).
//!
//! Each file in `tests/` is its own crate and compiles this module into itself with
//! `mod common;`. No file uses every helper, and the compiler would call whatever one file leaves
//! unused dead code, hence `allow(dead_code)` for the whole module.
//! `crates/hushwire-e2e/tests/clinic.rs` includes this module too (by path), for the same
//! clinic helpers.
#![allow(dead_code)]

pub mod clinic;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hushwire_client::{Client, ClientOptions, KdfParams, Secret};
use hushwire_relay::config::Settings;
use hushwire_relay::server::Running;
use hushwire_relay::storage::SqliteStore;

use clinic::Org;

/// How long a test waits for the relay, a connection or a message.
pub const WAIT: Duration = Duration::from_secs(20);

/// A relay on any loopback port, keeping its data (and its relay key) in `dir`.
pub async fn relay(dir: &Path) -> Running {
    start(dir, 0, None).await
}

/// A relay keeping its data (and its relay key) in `dir`, on `port` (0: any).
pub async fn relay_on(dir: &Path, port: u16) -> Running {
    start(dir, port, None).await
}

/// A relay on any loopback port that serves `org`'s clinic, keeping its data in `dir`.
pub async fn clinic_relay(dir: &Path, org: &Org) -> Running {
    start(dir, 0, Some(org.link.to_string())).await
}

async fn start(dir: &Path, port: u16, clinic_link: Option<String>) -> Running {
    let config = Settings {
        listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        data_dir: Some(dir.to_owned()),
        clinic_link,
        ..Settings::default()
    }
    .resolve(Settings::default());
    std::fs::create_dir_all(dir).unwrap();
    let store = SqliteStore::open(&dir.join("relay.db")).await.unwrap();
    hushwire_relay::server::start(store, config, None)
        .await
        .unwrap()
}

/// Client options with a key derivation cheap enough for tests.
pub fn options() -> ClientOptions {
    ClientOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..ClientOptions::default()
    }
}

pub fn secret() -> Secret {
    Secret::passphrase("correct horse battery staple")
}

/// A new store `<name>.db` in `dir`, not registered anywhere yet, and its path.
pub async fn device(dir: &Path, name: &str) -> (Client, PathBuf) {
    let path = dir.join(format!("{name}.db"));
    (
        Client::create(&path, &secret(), options()).await.unwrap(),
        path,
    )
}
