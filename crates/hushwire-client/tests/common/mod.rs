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

/// Two relay instances serving `org`'s clinic that share a fresh schema of the PostgreSQL
/// database at `$HUSHWIRE_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
/// and one relay key, each with its own data dir under `dir`; `None`, with a loud SKIPPED line,
/// when PostgreSQL does not answer (`.ci/run` starts it; `$HUSHWIRE_REQUIRE_POSTGRES=1` makes that
/// a failure).
pub async fn clinic_relays_on_postgres(dir: &Path, org: &Org) -> Option<Vec<Running>> {
    let url = std::env::var("HUSHWIRE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect("127.0.0.1:5432"),
    )
    .await
    .is_ok_and(|c| c.is_ok());
    if !reachable {
        assert!(
            std::env::var("HUSHWIRE_REQUIRE_POSTGRES").is_err(),
            "PostgreSQL is required ($HUSHWIRE_REQUIRE_POSTGRES) but does not answer"
        );
        eprintln!(
            "\n*** SKIPPED: PostgreSQL is not reachable at 127.0.0.1:5432: the two-instance \
             PostgreSQL run of this test did not run ***\n"
        );
        return None;
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let schema = format!("hwc_{}", u64::from_le_bytes(seed) % 1_000_000_000);
    let mut relays = Vec::new();
    for i in 0..2 {
        let data_dir = dir.join(format!("relay-{i}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = Settings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data_dir),
            clinic_link: Some(org.link.to_string()),
            relay_key_file: Some(dir.join("relay-key")),
            ..Settings::default()
        }
        .resolve(Settings::default());
        let store = hushwire_relay::storage::PostgresStore::connect(&url, Some(&schema))
            .await
            .unwrap();
        let pool = store.pool().clone();
        relays.push(
            hushwire_relay::server::start(store, config, Some(pool))
                .await
                .unwrap(),
        );
    }
    Some(relays)
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
